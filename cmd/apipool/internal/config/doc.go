// Package config reads and validates the apipool command's configuration
// file (YAML), for serve, check and report.
//
// Secrets are never written in the file. Upstream keys come from
// environment variables or key files (one key a line, refused when others
// may read them); proxy client tokens are given as SHA-256 hashes or taken
// from the environment; passwords must be a "${VAR}" reference. Every
// string value may use "${VAR}" (and "$$" for a dollar sign); a variable
// that is not set is an error.
//
// Errors are *Error values, gathered in an Errors list, each naming the
// file, the line and the field: "apipool.yaml:12: upstreams[0].target:
// want an http or https URL". The file format is documented in
// cmd/apipool/README.md.
package config
