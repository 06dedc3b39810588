// Package supervisor is the daemon core of scoped, a few types with one job
// each that Supervisor wires: the registry of live scopes, a pool of
// sandboxed workers per scope and extension version (over a WorkerStarter),
// the admission gate (tiers' rates, concurrency and spend caps), the
// extension store and the parts that run from Recover to Stop (loops.go).
// An invocation goes validate → gate → scope → pool → worker (invoke.go).
// Its errors are sentinels (errors.go); package api serves the gRPC API and
// maps them to codes.
package supervisor
