package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ErrUnhealthy is wrapped by every error of Health.
var ErrUnhealthy = errors.New("supervisor unhealthy")

// heartbeatEvery is how often a background loop that is not busy says it
// is alive.
const heartbeatEvery = 5 * time.Second

// healthState is what Health reads: the loops' heartbeats and the locks
// being probed.
type healthState struct {
	reaper, meter atomic.Int64 // unix nanos of the loop's last beat; 0: not running
	probing       sync.Map     // lock name → struct{}: a probe still waits for it
}

func beat(at *atomic.Int64) { at.Store(time.Now().UnixNano()) }

// loopStall is how long a loop may go without a beat before Health calls
// the daemon hung: one pass of the reaper may start workers (start_timeout
// each) and remove scopes, a metering flush commits to SQLite.
func loopStall(c *Config) time.Duration {
	return max(2*time.Minute, 4*c.Pool.StartTimeout.Duration)
}

// Health reports whether the supervisor's core answers: the scope registry
// lock and the tenants' admission lock can be taken before ctx ends, and
// the reaper and metering loops beat within loopStall. systemd's watchdog
// is pinged only while it is nil, so that a hung daemon is restarted.
// Health never waits past ctx; a lock that does not answer is probed again
// only once the earlier probe got it.
func (s *Supervisor) Health(ctx context.Context) error {
	locks := []namedLock{{"scope registry", &s.scopes.mu}}
	if s.tenants != nil {
		locks = append(locks, namedLock{"tenant admission", &s.tenants.mu})
	}
	return s.health.check(ctx, loopStall(s.conf()), locks)
}

// namedLock is a lock Health probes, by the name its errors give.
type namedLock struct {
	name string
	l    sync.Locker
}

// check errs when a loop's last beat is older than stall, or when one of
// locks cannot be taken before ctx ends.
func (h *healthState) check(ctx context.Context, stall time.Duration, locks []namedLock) error {
	now := time.Now()
	for _, l := range []struct {
		name string
		at   *atomic.Int64
	}{{"reaper", &h.reaper}, {"metering", &h.meter}} {
		if b := l.at.Load(); b != 0 {
			if age := now.Sub(time.Unix(0, b)); age > stall {
				return fmt.Errorf("%w: the %s loop has not run for %s (more than %s)", ErrUnhealthy, l.name, age.Round(time.Second), stall)
			}
		}
	}
	for _, l := range locks {
		if err := h.probe(ctx, l.name, l.l); err != nil {
			return err
		}
	}
	return nil
}

// probe takes and releases l in a goroutine and waits for it until ctx
// ends. A probe that times out stays waiting (it cannot be cancelled);
// until it gets the lock, probes of l fail at once rather than pile up.
func (h *healthState) probe(ctx context.Context, name string, l sync.Locker) error {
	if _, waiting := h.probing.LoadOrStore(name, struct{}{}); waiting {
		return fmt.Errorf("%w: the %s lock is still held since an earlier probe", ErrUnhealthy, name)
	}
	got := make(chan struct{})
	go func() {
		l.Lock()
		l.Unlock() // taking it was the probe
		h.probing.Delete(name)
		close(got)
	}()
	select {
	case <-got:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: the %s lock did not answer in time (%v)", ErrUnhealthy, name, ctx.Err())
	}
}
