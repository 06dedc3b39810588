package main

import (
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
)

// The phases of a scoped cold start, between the client's call, three
// lines of the daemon's debug log and the reply. The log's timestamps have
// millisecond resolution.
const (
	phScope     = "scope"     // call → "scope created": gRPC, API edge, checks, store lookup, the scope's cgroup nodes
	phSandbox   = "sandbox"   // → go-plugin's "waiting for RPC address": worker cgroup, rootfs, libcontainer create + run
	phHandshake = "handshake" // → go-plugin's "using plugin": the worker's start up to its handshake line
	phReply     = "reply"     // → the reply at the client: gRPC connection, Dispense, the first call, the reply
)

// coldPhases reads the daemon's log at path and returns the phases of the
// given cold starts, which ran one at a time.
func coldPhases(path string, calls []coldCall) (map[string][]time.Duration, error) {
	ev, err := benchmd.ReadColdLog(path)
	if err != nil {
		return nil, err
	}
	out := map[string][]time.Duration{}
	for _, c := range calls {
		e, err := ev.Tenant(c.tenant)
		if err != nil {
			return nil, err
		}
		out[phScope] = append(out[phScope], e.Scope.Sub(c.start))
		out[phSandbox] = append(out[phSandbox], e.Sandbox.Sub(e.Scope))
		out[phHandshake] = append(out[phHandshake], e.Handshake.Sub(e.Sandbox))
		out[phReply] = append(out[phReply], c.end.Sub(e.Handshake))
	}
	return out, nil
}
