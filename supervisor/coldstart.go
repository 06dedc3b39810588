package supervisor

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// ColdStart is where a cold invocation's start went, phase by phase (see
// scopedv1.ColdStart): the daemon measures it, so that no one reads it
// from the log.
type ColdStart struct {
	Scope     time.Duration // the invocation's receipt → the worker's start: checks, admission, the scope
	Network   time.Duration // the worker's network (0 without egress)
	Sandbox   time.Duration // worker cgroup leaf, the sandbox's start (sandbox.Start)
	Handshake time.Duration // the worker's start up to its handshake and the connection to it
}

// workerStart is when a worker's start passed each phase; zero times are
// phases it has not passed.
type workerStart struct {
	network, sandbox, ready time.Time
}

// coldStart is the phases of w's start for the invocation received at
// invoked, which waited for it.
func (w *worker) coldStart(invoked time.Time) *ColdStart {
	st := w.start
	if st.ready.IsZero() || st.network.IsZero() || st.sandbox.IsZero() {
		return nil
	}
	return &ColdStart{
		Scope: w.started.Sub(invoked), Network: st.network.Sub(w.started),
		Sandbox: st.sandbox.Sub(st.network), Handshake: st.ready.Sub(st.sandbox),
	}
}

// Proto is c in the API's terms (nil for nil), for the API edge's
// Figures.
func (c *ColdStart) Proto() *scopedv1.ColdStart {
	if c == nil {
		return nil
	}
	return &scopedv1.ColdStart{Scope: durationpb.New(c.Scope), Network: durationpb.New(c.Network),
		Sandbox: durationpb.New(c.Sandbox), Handshake: durationpb.New(c.Handshake)}
}
