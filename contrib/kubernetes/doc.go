// Package kubernetes holds an example of running scoped under Kubernetes:
// a DaemonSet of fleet nodes with its ConfigMap and Secrets (README.md).
// Its tests check that the manifests are well-formed and agree with each
// other, and that the configuration they render for a node loads with the
// daemon's own loader.
package kubernetes
