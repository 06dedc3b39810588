package supervisor

import (
	"sync"
	"time"
)

// A fleet node's load, in its record: live scopes and busy CPUs (the
// router skips a node above the fleet's average; operators read it with
// the nodes' records). Its capacity is the record's slots ([scope]
// id_slots) and CPUs.

// minBusyPeriod is the shortest period busy CPUs are measured over: two
// readings closer than that keep the last figure (a record written twice
// in a row at a re-registration).
const minBusyPeriod = 100 * time.Millisecond

// busyCPUs measures how many CPUs the scopes kept busy: the growth of the
// CPU time of scoped's cgroup root (every scope's, and nothing else's)
// over the wall time between two readings, the fleet's refresh period.
type busyCPUs struct {
	read func() (time.Duration, error) // the root's CPU time (nil: not measured)
	now  func() time.Time

	mu      sync.Mutex
	lastCPU time.Duration
	lastAt  time.Time // zero: no reading yet
	busy    float64
}

func newBusyCPUs(read func() (time.Duration, error)) *busyCPUs {
	return &busyCPUs{read: read, now: time.Now}
}

// sample reads the CPU time now and returns the CPUs busy since the last
// reading: 0 at the first, or when the counter cannot be read or went
// back (the root made again); the last figure when read too soon.
func (b *busyCPUs) sample() float64 {
	if b == nil || b.read == nil {
		return 0
	}
	cpu, err := b.read()
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case err != nil:
		b.lastAt, b.busy = time.Time{}, 0
		return 0
	case b.lastAt.IsZero() || cpu < b.lastCPU || now.Before(b.lastAt):
		b.busy = 0
	case now.Sub(b.lastAt) < minBusyPeriod:
		return b.busy
	default:
		b.busy = float64(cpu-b.lastCPU) / float64(now.Sub(b.lastAt))
	}
	b.lastCPU, b.lastAt = cpu, now
	return b.busy
}
