package supervisor

import (
	"testing"
	"time"
)

func TestColdStartPhases(t *testing.T) {
	t0 := time.Now()
	w := &worker{started: t0.Add(2 * time.Millisecond)}
	if w.coldStart(t0) != nil {
		t.Error("phases of a worker whose start did not finish")
	}
	w.start = workerStart{network: t0.Add(3 * time.Millisecond), sandbox: t0.Add(10 * time.Millisecond), ready: t0.Add(15 * time.Millisecond)}
	want := ColdStart{Scope: 2 * time.Millisecond, Network: time.Millisecond, Sandbox: 7 * time.Millisecond, Handshake: 5 * time.Millisecond}
	if got := w.coldStart(t0); got == nil || *got != want {
		t.Errorf("coldStart = %+v, want %+v", got, want)
	}
	if pb := want.Proto(); pb.GetSandbox().AsDuration() != want.Sandbox || pb.GetScope().AsDuration() != want.Scope {
		t.Errorf("Proto = %v", pb)
	}
	if (*ColdStart)(nil).Proto() != nil {
		t.Error("Proto of nil is not nil")
	}
}
