// Package supervisor is the daemon core of scoped: it maps each invocation
// to a scope through the isolation policy, keeps the extension store, runs a
// pool of sandboxed go-plugin workers per scope, routes invocations with
// deadlines, keeps per-scope log rings, and serves the scoped.v1 gRPC API
// with client authorisation. It talks to the kernel only through the
// cgroups and sandbox packages; gRPC status codes appear only in api.go.
package supervisor
