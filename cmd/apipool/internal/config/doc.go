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
// want an http or https URL ...: it has no host". Every problem of the
// file is reported at once, in the order of the file. The file format is
// documented in cmd/apipool/README.md.
//
// No error shows a value that could be a secret, as errors reach
// terminals, CI logs and the proxy's log on reload. An error never quotes
// a variable's value (it names the variable), a secret setting, a URL
// (it says which part is wrong), the YAML decoder's view of a scalar, a
// name where a variable's name belongs (it says what shape is wrong), or
// a setting's name that is not shaped like one (a key written as
// {sk-...}). It quotes other values of the file only when they do not
// look like a key (see looksLikeKey). The file's line and the field path
// say where the value is.
package config
