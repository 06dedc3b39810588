package supervisor

import (
	"errors"
	"math"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestUnitBusyCPUs: busy CPUs are the root's CPU time growth over the
// wall time between readings; the first reading, a failed one and a
// counter gone back read 0; a reading too soon keeps the last figure.
func TestUnitBusyCPUs(t *testing.T) {
	var cpu time.Duration
	var fail error
	at := time.Unix(1000, 0)
	b := newBusyCPUs(func() (time.Duration, error) { return cpu, fail })
	b.now = func() time.Time { return at }
	step := func(wall, used time.Duration) float64 {
		at, cpu = at.Add(wall), cpu+used
		return b.sample()
	}
	for i, c := range []struct {
		wall, used time.Duration
		fail       error
		reset      bool
		want       float64
	}{
		{0, 5 * time.Second, nil, false, 0}, // first reading
		{2 * time.Second, 3 * time.Second, nil, false, 1.5},
		{2 * time.Second, 0, nil, false, 0}, // idle
		{2 * time.Second, 4 * time.Second, nil, false, 2},
		{10 * time.Millisecond, time.Second, nil, false, 2}, // too soon: the last figure
		{time.Second, time.Second, nil, false, 2 / 1.01},    // from the reading before: 2 s over 1.01 s
		{time.Second, time.Second, errors.New("gone"), false, 0},
		{time.Second, time.Second, nil, false, 0}, // first reading after a failure
		{time.Second, 0, nil, true, 0},            // the counter went back
		{time.Second, time.Second / 2, nil, false, 0.5},
	} {
		fail = c.fail
		if c.reset {
			cpu = 0
		}
		got := step(c.wall, c.used)
		if math.Abs(got-c.want) > 1e-9 {
			t.Errorf("step %d: %g busy, want %g", i, got, c.want)
		}
	}
	var none *busyCPUs
	if none.sample() != 0 || newBusyCPUs(nil).sample() != 0 {
		t.Error("no reader: not 0")
	}
}

// TestUnitFleetLinkLoad: the node's record carries its capacity (scope
// slots, CPUs) and its load: live scopes and the busy CPUs measured from
// the root's CPU time over the refresh.
func TestUnitFleetLinkLoad(t *testing.T) {
	x := newLinkFixture(t)
	c := x.config("node-a")
	c.Scope.IDSlots = 96
	var live atomic.Int64
	live.Store(5)
	t0 := time.Now()
	_, _ = x.link(c, func(d *fleetDeps) {
		d.liveScopes = func() int { return int(live.Load()) }
		d.cpuUsage = func() (time.Duration, error) { return time.Since(t0) * 3 / 4, nil } // 0.75 CPUs busy
	})
	watcher, _ := x.link(x.config("node-b"), nil)
	eventually(t, "node-a's load in its record", func() bool {
		n := watcher.state.Nodes()["node-a"]
		return n.Scopes == 5 && n.Busy > 0
	})
	n := watcher.state.Nodes()["node-a"]
	if n.Slots != 96 || n.CPUs != runtime.NumCPU() || math.Abs(n.Busy-0.75) > 0.05 {
		t.Errorf("node-a's record %+v: want 96 slots, %d CPUs, 0.75 busy", n, runtime.NumCPU())
	}
	live.Store(7)
	eventually(t, "node-a's live scopes refreshed", func() bool { return watcher.state.Nodes()["node-a"].Scopes == 7 })
}
