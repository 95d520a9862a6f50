// Package test checks the container image's Dockerfile (../../Dockerfile),
// the image that ../image builds without a container engine, and the Helm
// chart (../helm/apipool): the image's build line makes a static binary;
// the built image holds that binary and nothing but its files, runs as a
// user that is not root, agrees with the Dockerfile, and its binary
// serves; the chart renders (with Helm's Go SDK), its values are checked
// by values.schema.json, its manifests decode strictly as Kubernetes
// objects and are valid against the Kubernetes OpenAPI schemas (and the
// ServiceMonitor against its CRD's), and the apipool.yaml it writes is
// accepted by that binary (apipool validate) and served with the probes
// the chart sets.
//
// It is a module of its own so that Helm and the Kubernetes API types stay
// out of the library's dependencies: make test-deploy.
package test
