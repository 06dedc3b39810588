package supervisor

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func healthWithin(s *Supervisor, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return s.Health(ctx)
}

// TestUnitHealth: Health errs while the scope registry or the tenants'
// admission lock is held past the probe's deadline (and at once while an
// earlier probe still waits), and while a loop's heartbeat is stale; it
// answers nil again once they are free.
func TestUnitHealth(t *testing.T) {
	s := unitSupervisor(t)
	if err := healthWithin(s, 10*time.Second); err != nil {
		t.Fatalf("idle supervisor: %v", err)
	}
	for _, l := range []struct {
		name string
		lock func()
		free func()
	}{
		{"scope registry", s.scopes.mu.Lock, s.scopes.mu.Unlock},
		{"tenant admission", s.tenants.mu.Lock, s.tenants.mu.Unlock},
	} {
		l.lock()
		err := healthWithin(s, 20*time.Millisecond)
		if !errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), l.name) {
			t.Errorf("%s lock held: %v", l.name, err)
		}
		// The first probe still waits: the next fails without another.
		err = healthWithin(s, 10*time.Second)
		if !errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), "since an earlier probe") {
			t.Errorf("%s lock still held: %v", l.name, err)
		}
		l.free()
		deadline := time.Now().Add(30 * time.Second)
		for healthWithin(s, 10*time.Second) != nil {
			if time.Now().After(deadline) {
				t.Fatalf("%s lock freed, Health still errs: %v", l.name, healthWithin(s, 10*time.Second))
			}
			time.Sleep(time.Millisecond)
		}
	}

	stall := loopStall(s.conf())
	for _, l := range []struct {
		name string
		at   *atomic.Int64
	}{{"reaper", &s.health.reaper}, {"metering", &s.health.meter}} {
		beatAt := l.at
		beatAt.Store(time.Now().Add(-stall - time.Minute).UnixNano())
		err := healthWithin(s, 10*time.Second)
		if !errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), "the "+l.name+" loop has not run") {
			t.Errorf("stale %s heartbeat: %v", l.name, err)
		}
		beat(beatAt)
		if err := healthWithin(s, 10*time.Second); err != nil {
			t.Errorf("fresh %s heartbeat: %v", l.name, err)
		}
		beatAt.Store(0) // a loop that does not run is not checked
		if err := healthWithin(s, 10*time.Second); err != nil {
			t.Errorf("%s not running: %v", l.name, err)
		}
	}
}
