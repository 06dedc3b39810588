package supervisor

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"
)

// gate admits invocations by their tenant's tier: not while the tier is
// suspended, not past its spend caps, at most its rate (a token bucket of
// its burst) and at most its max_concurrent in flight per tenant.
type gate struct {
	// caps refuses a tenant past one of its tier's spend caps (nil: no
	// caps are checked).
	caps func(tenant, tierName string, t Tier, now time.Time) error

	mu  sync.Mutex
	adm map[string]*admission // tenants with recent invocations
}

func newGate(caps func(tenant, tierName string, t Tier, now time.Time) error) *gate {
	return &gate{caps: caps, adm: map[string]*admission{}}
}

// admission is one tenant's token bucket and invocations in flight.
type admission struct {
	tokens   float64
	last     time.Time
	inFlight int
}

// RetryAfterError is a refusal that may succeed later; the API edge passes
// After on as a retry hint.
type RetryAfterError struct {
	Err   error
	After time.Duration
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("%v (retry after %s)", e.Err, e.After.Round(time.Millisecond))
}

func (e *RetryAfterError) Unwrap() error { return e.Err }

// Admit lets one invocation of tenant, in tier t (named tierName), in at
// now, or says why not: the spend caps first, then the tier's state, rate
// and concurrency. done gives the invocation's slot back (once, however
// often it is called).
func (g *gate) Admit(tenant, tierName string, t Tier, now time.Time) (done func(), err error) {
	if g.caps != nil {
		if err := g.caps(tenant, tierName, t, now); err != nil {
			return nil, err
		}
	}
	return g.admit(tenant, t, now)
}

// admit takes a slot and a token of tenant's tier t at now, or says why
// not. The returned function gives the slot back.
func (g *gate) admit(tenant string, t Tier, now time.Time) (func(), error) {
	if t.Suspended {
		return nil, fmt.Errorf("%w: tenant %s is in a suspended tier", ErrSuspended, tenant)
	}
	if t.Rate == 0 && t.MaxConcurrent == 0 {
		return func() {}, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.adm == nil {
		g.adm = map[string]*admission{}
	}
	a := g.adm[tenant]
	if a == nil {
		a = &admission{tokens: burstOf(t), last: now}
		g.adm[tenant] = a
	}
	if t.MaxConcurrent > 0 && a.inFlight >= t.MaxConcurrent {
		// No better hint than "soon": a slot frees when any of the
		// tenant's invocations ends.
		return nil, &RetryAfterError{
			Err:   fmt.Errorf("%w: tenant %s has %d invocations in flight, its tier allows %d", ErrConcurrency, tenant, a.inFlight, t.MaxConcurrent),
			After: 50 * time.Millisecond,
		}
	}
	if t.Rate > 0 {
		burst := burstOf(t)
		if el := now.Sub(a.last); el > 0 {
			a.tokens = math.Min(burst, a.tokens+el.Seconds()*t.Rate)
		}
		a.last = now
		if a.tokens > burst { // the tier's burst was lowered
			a.tokens = burst
		}
		if a.tokens < 1 {
			wait := time.Duration((1 - a.tokens) / t.Rate * float64(time.Second))
			return nil, &RetryAfterError{
				Err:   fmt.Errorf("%w: tenant %s is over its tier's %g invocations/s (burst %g)", ErrRateLimited, tenant, t.Rate, burst),
				After: max(wait, time.Millisecond),
			}
		}
		a.tokens--
	}
	a.inFlight++
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			a.inFlight--
			g.mu.Unlock()
		})
	}, nil
}

// inFlight is tenant's invocations in flight, as counted where its tier
// limits them (0 otherwise).
func (g *gate) inFlight(tenant string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if a := g.adm[tenant]; a != nil {
		return a.inFlight
	}
	return 0
}

func burstOf(t Tier) float64 {
	if t.Burst > 0 {
		return float64(t.Burst)
	}
	return math.Max(1, math.Ceil(t.Rate))
}

// prune forgets the admission state of tenants with nothing in flight and
// a full bucket (it is the same as none); the reaper calls it. tierOf may
// take any lock but the gate's (it is called without g.mu held).
func (g *gate) prune(tierOf func(string) Tier, now time.Time) {
	g.mu.Lock()
	names := slices.Collect(maps.Keys(g.adm))
	g.mu.Unlock()
	tiers := make(map[string]Tier, len(names))
	for _, n := range names {
		tiers[n] = tierOf(n)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for tenant, a := range g.adm {
		t, ok := tiers[tenant]
		if !ok {
			continue
		}
		full := t.Rate == 0 || a.tokens+now.Sub(a.last).Seconds()*t.Rate >= burstOf(t)
		if a.inFlight == 0 && full {
			delete(g.adm, tenant)
		}
	}
}
