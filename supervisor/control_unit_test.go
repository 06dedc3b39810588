package supervisor

import (
	"context"
	"testing"
	"time"

	"github.com/scoped-io/scoped/control"
)

// TestUnitThrottlerOff: a throttler not started, or started with [control]
// off, reports no events and no levels, and throttles nothing; it stops
// whether it ran or not, and starts again.
func TestUnitThrottlerOff(t *testing.T) {
	s := unitSupervisor(t)
	cfg := *s.conf()
	cfg.Control.Enabled = false
	s.cfg.Store(&cfg)
	th := &throttler{conf: s.conf, log: s.log, source: func() control.CounterReader { return nil },
		scopes: &s.scopes, metrics: s.metrics}
	all := func(string) bool { return true }
	if err := th.Stop(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if ev, on := th.events(all, time.Time{}); on || ev != nil {
			t.Fatalf("events of a controller that is off: %v, %v", ev, on)
		}
		if err := th.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if ev, on := th.events(all, time.Time{}); on || ev != nil {
			t.Fatalf("events with [control] off: %v, %v", ev, on)
		}
		if l := th.level("acme.u0"); l != 0 {
			t.Fatalf("level %d with [control] off", l)
		}
		if err := th.throttle("acme.u0", 10, 0.5); err != nil { // no such scope: nothing to do
			t.Fatal(err)
		}
		th.publish()
		if err := th.Stop(); err != nil {
			t.Fatal(err)
		}
	}
}
