package supervisor

import (
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scoped-io/scoped/fleet/record"
	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/metering"
)

// gate admits invocations by their tenant's tier: not while the tier is
// suspended, not past its spend caps (see spendCaps), at most its rate (a token bucket of
// its burst) and at most its max_concurrent in flight per tenant. In a
// fleet those are the fleet's figures: each node admits its share (see
// Tier.perNode).
type gate struct {
	// caps refuses a tenant past one of its tier's spend caps (nil: no
	// caps are checked).
	caps func(tenant ident.Tenant, tierName string, t Tier, now time.Time) error
	// nodes is the fleet's live nodes the limits are split between (nil:
	// a single host); setFleetNodes sets it.
	nodes atomic.Pointer[fleetSplit]

	mu  sync.Mutex
	adm map[string]*admission // tenants with recent invocations
}

func newGate(caps func(tenant ident.Tenant, tierName string, t Tier, now time.Time) error) *gate {
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
func (g *gate) Admit(tenant ident.Tenant, tierName string, t Tier, now time.Time) (done func(), err error) {
	if g.caps != nil {
		if err := g.caps(tenant, tierName, t, now); err != nil {
			return nil, err
		}
	}
	return g.admit(string(tenant), g.split(tierName, t), now)
}

// fleetSplit is the live nodes a fleet's tiers' limits are split between:
// nodes, or for a tier placed on labelled nodes, its entry in tiers.
type fleetSplit struct {
	nodes int64
	tiers map[string]int64
}

// split is t's limits on this node: the tier's share (Tier.perNode) in a
// fleet, t on a single host. One atomic load, no lock, no allocation.
func (g *gate) split(tierName string, t Tier) Tier {
	s := g.nodes.Load()
	if s == nil {
		return t
	}
	n := s.nodes
	if m, ok := s.tiers[tierName]; ok {
		n = m
	}
	return t.perNode(n)
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

// perNode is t's rate, burst and max_concurrent on one of n live nodes:
// the fleet's figures divided by n, burst and max_concurrent rounded down
// but at least 1 (a limited tier never becomes unlimited, nor refuses
// everything, on a node), so that with more nodes than either the fleet
// admits up to n at once.
func (t Tier) perNode(n int64) Tier {
	if n < 2 {
		return t
	}
	if t.Rate > 0 {
		t.Burst = int(max(1, math.Floor(burstOf(t)/float64(n))))
		t.Rate /= float64(n)
	}
	if t.MaxConcurrent > 0 {
		t.MaxConcurrent = max(1, t.MaxConcurrent/int(n))
	}
	return t
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
	var nodes int64 // the fleet's nodes: a placed tier's share may be more (pruned as full a little early)
	if s := g.nodes.Load(); s != nil {
		nodes = s.nodes
	}
	for _, n := range names {
		tiers[n] = tierOf(n).perNode(nodes)
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

// spendCaps checks tenants against their tiers' daily and monthly spend
// caps. The figures are the ledger's sums as of the last flush, kept per
// tenant for at most a flush period: a cap can be overrun by what a tenant
// uses within one flush. In a fleet (fleet set) they are this node's
// ledger plus the other nodes' published totals, which lag by up to a
// flush and the fleet's refresh: a cap can be overrun by what the tenant
// uses on all nodes within that time.
type spendCaps struct {
	// sum is what tenant used of meter in [from, to) (the ledger's Sum).
	sum     func(tenant ident.Tenant, meter string, from, to time.Time) (float64, error)
	conf    func() MeteringConfig
	log     *slog.Logger
	countFn func(kind string) // counts an error kind (scoped_errors_total)

	// fleet is where the totals are published and the other nodes'
	// come from (nil: a single host).
	fleet atomic.Pointer[fleetLimits]

	mu    sync.Mutex
	spent map[ident.Tenant]spent // by tenant: what its caps are checked against
	// fresh is the tenants summed for the first time in this daemon's
	// life since the last publish: published then even without new usage
	// (a restarted node's earlier usage of the day is in its ledger, its
	// previous record went with its lease). Kept only in a fleet.
	fresh map[ident.Tenant]bool
	// failLog keeps a broken ledger from writing a line per invocation.
	failLog logEvery
}

// spent is a tenant's usage of its capped meters this UTC day and month,
// as of the last flush.
type spent struct {
	at           time.Time
	day, month   map[string]float64
	dayEnd, mEnd time.Time
}

// capLogEvery bounds the log lines of a failing ledger's cap checks.
const capLogEvery = 10 * time.Second

// newSpendCaps checks caps on l's sums, by the [metering] conf gives.
func newSpendCaps(l *metering.Ledger, conf func() MeteringConfig, log *slog.Logger, countFn func(kind string)) *spendCaps {
	return &spendCaps{sum: l.Sum, conf: conf, log: log, countFn: countFn, spent: map[ident.Tenant]spent{}}
}

// check refuses tenant, of tier t (named tierName), at now when it used
// all of one of its caps this UTC day or month (ErrQuota, retry when the
// period ends), or when the ledger cannot say ([metering] on_error).
func (c *spendCaps) check(tenant ident.Tenant, tierName string, t Tier, now time.Time) error {
	if len(t.DailyCaps)+len(t.MonthlyCaps) == 0 {
		return nil
	}
	c.mu.Lock()
	sp, ok := c.spent[tenant]
	c.mu.Unlock()
	flush := c.conf().Flush.Duration
	if !ok || now.Sub(sp.at) >= flush || !now.Before(sp.dayEnd) {
		var err error
		if sp, err = c.spentNow(tenant, t, now); err != nil {
			return c.failed(tenant, tierName, now, err)
		}
		c.mu.Lock()
		c.spent[tenant] = sp
		if !ok && c.fleet.Load() != nil {
			if c.fresh == nil {
				c.fresh = map[ident.Tenant]bool{}
			}
			c.fresh[tenant] = true
		}
		c.mu.Unlock()
	}
	for _, p := range []struct {
		period string
		caps   map[string]float64
		used   map[string]float64
		until  time.Time
	}{{"daily", t.DailyCaps, sp.day, sp.dayEnd}, {"monthly", t.MonthlyCaps, sp.month, sp.mEnd}} {
		for _, meter := range slices.Sorted(maps.Keys(p.caps)) {
			if used := p.used[meter]; used >= p.caps[meter] {
				c.log.Warn("spend cap reached", "tenant", tenant, "tier", tierName, "meter", meter,
					"period", p.period, "used", used, "cap", p.caps[meter], "until", p.until)
				return &RetryAfterError{
					Err: fmt.Errorf("%w: tenant %s used %g %s this %s period, its tier %s allows %g (until %s)",
						ErrQuota, tenant, used, meter, p.period, tierName, p.caps[meter], p.until.Format(time.RFC3339)),
					After: p.until.Sub(now),
				}
			}
		}
	}
	return nil
}

// failed decides, by [metering] on_error, what an invocation whose spend
// caps the ledger could not check gets: refused with ErrLedger (counted as
// scoped_admission_refused_total{reason="ledger"} by the caller) or let
// through unchecked (scoped_errors_total{kind="caps_unchecked"}). Every
// failure counts as scoped_errors_total{kind="metering_caps"}; the log has
// at most one line per capLogEvery.
func (c *spendCaps) failed(tenant ident.Tenant, tierName string, now time.Time, err error) error {
	c.countFn("metering_caps")
	conf := c.conf()
	allow := conf.OnError == CapsAllow
	if ok, skipped := c.failLog.allow(now, capLogEvery); ok {
		action := "invocation refused"
		if allow {
			action = "invocation allowed unchecked"
		}
		c.log.Error("spend caps cannot be checked: the metering ledger failed; "+action+" ([metering] on_error)",
			"tenant", tenant, "tier", tierName, "err", err, "on_error", conf.OnError, "unlogged_before", skipped)
	}
	if allow {
		c.countFn("caps_unchecked")
		return nil
	}
	return &RetryAfterError{
		Err: fmt.Errorf("%w: the spend caps of tenant %s cannot be checked now (the metering ledger failed)",
			ErrLedger, tenant),
		After: conf.Flush.Duration,
	}
}

// spentNow sums a tenant's usage of its capped meters: this node's
// ledger's, plus the other nodes' in a fleet.
func (c *spendCaps) spentNow(tenant ident.Tenant, t Tier, now time.Time) (spent, error) {
	sp, err := c.spentHere(tenant, slices.Collect(maps.Keys(t.DailyCaps)), slices.Collect(maps.Keys(t.MonthlyCaps)), now)
	if err != nil {
		return spent{}, err
	}
	if f := c.fleet.Load(); f != nil && f.others != nil {
		for meter := range sp.day {
			d, _ := f.others.SpendTotals(string(tenant), meter, now)
			sp.day[meter] += d
		}
		for meter := range sp.month {
			_, m := f.others.SpendTotals(string(tenant), meter, now)
			sp.month[meter] += m
		}
	}
	return sp, nil
}

// spentHere sums this node's ledger's usage of tenant's daily and monthly
// meters in the UTC day and month of now.
func (c *spendCaps) spentHere(tenant ident.Tenant, daily, monthly []string, now time.Time) (spent, error) {
	now = now.UTC()
	day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	sp := spent{at: now, day: map[string]float64{}, month: map[string]float64{},
		dayEnd: day.AddDate(0, 0, 1), mEnd: month.AddDate(0, 1, 0)}
	for _, meter := range daily {
		v, err := c.sum(tenant, meter, day, sp.dayEnd)
		if err != nil {
			return spent{}, err
		}
		sp.day[meter] = v
	}
	for _, meter := range monthly {
		v, err := c.sum(tenant, meter, month, sp.mEnd)
		if err != nil {
			return spent{}, err
		}
		sp.month[meter] = v
	}
	return sp, nil
}

// publish hands the fleet this node's day and month totals of the capped
// meters of tenants (those a flush added usage to) that have caps, and of
// the tenants first checked since the last publish: the meters their
// last check summed. Nothing without a publisher. A failure
// is logged and counted (scoped_errors_total{kind="fleet_spend"}); the
// next flush with usage of the tenant publishes again.
func (c *spendCaps) publish(tenants map[ident.Tenant]bool, now time.Time) {
	f := c.fleet.Load()
	if f == nil || f.pub == nil {
		return
	}
	type capped struct {
		tenant         ident.Tenant
		daily, monthly []string
	}
	var todo []capped
	c.mu.Lock()
	fresh := c.fresh
	c.fresh = nil
	for tenant := range fresh {
		if !tenants[tenant] {
			if sp, ok := c.spent[tenant]; ok {
				todo = append(todo, capped{tenant, slices.Collect(maps.Keys(sp.day)), slices.Collect(maps.Keys(sp.month))})
			}
		}
	}
	for tenant := range tenants {
		if sp, ok := c.spent[tenant]; ok {
			todo = append(todo, capped{tenant, slices.Collect(maps.Keys(sp.day)), slices.Collect(maps.Keys(sp.month))})
		}
	}
	c.mu.Unlock()
	slices.SortFunc(todo, func(a, b capped) int { return strings.Compare(string(a.tenant), string(b.tenant)) })
	for _, x := range todo {
		if len(x.daily)+len(x.monthly) == 0 {
			continue
		}
		sp, err := c.spentHere(x.tenant, x.daily, x.monthly, now)
		if err == nil {
			err = f.pub.PublishSpend(string(x.tenant), record.Spend{
				Day: sp.dayEnd.AddDate(0, 0, -1), Month: sp.mEnd.AddDate(0, -1, 0),
				Daily: sp.day, Monthly: sp.month, Updated: now.UTC(),
			})
		}
		if err != nil {
			c.countFn("fleet_spend")
			c.log.Error("fleet: cannot publish a tenant's spend totals", "tenant", x.tenant, "err", err)
		}
	}
}
