// Package supervisor is the daemon core of scoped: it maps each invocation
// to a scope through the isolation policy, keeps the extension store, runs a
// pool of sandboxed go-plugin workers per scope, routes invocations with
// deadlines and keeps per-scope log rings. It talks to the kernel only
// through the cgroups and sandbox packages. Its errors are sentinels
// (errors.go); package api serves the gRPC API and maps them to codes.
package supervisor
