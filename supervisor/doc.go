// Package supervisor is the daemon core of scoped, a few types with one job
// each that Supervisor wires: the registry of live scopes, the keeper that
// makes and removes them, a pool of sandboxed workers per scope and
// extension version (over a WorkerStarter), the admission gate, the
// extension store, and the components that run from Recover to Stop, each
// owning its lock and loop (accountant, meter, exporters, networks,
// throttler, reaper, sampler; loops.go). The invoker takes an invocation
// validate → gate → scope → pool → worker (invoke.go). Its errors are
// sentinels; package api maps them to gRPC codes.
package supervisor
