// Package test checks the container image's Dockerfile (../../Dockerfile)
// and the Helm chart (../helm/apipool): the image's build line makes a
// static binary; the chart renders (with Helm's Go SDK), its values are
// checked by values.schema.json, its manifests decode strictly as
// Kubernetes objects, and the apipool.yaml it writes is accepted by that
// binary (apipool validate) and served with the probes the chart sets.
//
// It is a module of its own so that Helm and the Kubernetes API types stay
// out of the library's dependencies: make test-deploy.
package test
