package main

import (
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
)

// phases are one cold start cut by lines of the daemon's debug log (1 ms
// resolution) between the client's call and its reply.
type phases struct {
	scope     time.Duration // call → "scope created": gRPC, API edge, checks, the scope's cgroups
	network   time.Duration // → "scope network": netns.Manager.Egress (0 in mode none)
	sandbox   time.Duration // → go-plugin's "waiting for RPC address": worker cgroup, rootfs, libcontainer create + run
	handshake time.Duration // → go-plugin's "using plugin": the worker's start up to its handshake
	reply     time.Duration // → the reply at the client: gRPC connection, Dispense, the call
}

// attachPhases reads the daemon's log at path and sets the phases of the
// given cold starts, which ran one at a time.
func attachPhases(path string, calls []coldCall) error {
	ev, err := benchmd.ReadColdLog(path)
	if err != nil {
		return err
	}
	for i := range calls {
		c := &calls[i]
		e, err := ev.Tenant(c.tenant)
		if err != nil {
			return err
		}
		p := &phases{scope: e.Scope.Sub(c.start)}
		netDone := e.Scope
		if !e.Network.IsZero() {
			p.network = e.Network.Sub(e.Scope)
			netDone = e.Network
		}
		p.sandbox = e.Sandbox.Sub(netDone)
		p.handshake = e.Handshake.Sub(e.Sandbox)
		p.reply = c.end.Sub(e.Handshake)
		c.phases = p
	}
	return nil
}
