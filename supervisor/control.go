package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/control"
	"github.com/scoped-io/scoped/metrics"
)

// ControlEvent is one action of the noisy-neighbour controller.
type ControlEvent = control.Event

// scopeBaseWeight is every scope's CPU weight within its tenant (see
// Tier.scopeLimits); the controller steps down from it.
const scopeBaseWeight = 100

// throttler runs the noisy-neighbour controller (package control) over the
// live scopes: it lists them for the controller, reading their usage from
// accounting, and applies the controller's settings to their cgroups and
// the registry's weights. It is a component (see loops), started with the
// configuration in force; Reload stops and starts it again.
type throttler struct {
	conf    func() *Config
	log     *slog.Logger
	source  func() control.CounterReader // accounting, open by Start
	scopes  *registry
	tree    *cgroups.Tree
	metrics *metrics.Registry

	mu   sync.Mutex
	ctl  *control.Controller // nil: not running
	stop func()

	// noIdle: the kernel has no cpu.idle (before 5.15); the fair-share
	// rule's caps go without it.
	noIdle atomic.Bool
}

// Start starts the controller with the configuration in force (it does
// nothing when [control] is off).
func (t *throttler) Start(context.Context) error {
	ctl, err := control.New(t.conf().Control,
		control.AccountingSource(t.source(), t.list), control.Actuators{Scope: t.throttle, Tenant: t.capTenant}, t.log)
	if err != nil {
		return fmt.Errorf("%w: control: %w", ErrConfig, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := ctl.Run(ctx); err != nil {
			t.log.Warn("noisy-neighbour controller: restoring throttled scopes", "err", err)
		}
	}()
	t.mu.Lock()
	t.ctl, t.stop = ctl, func() { cancel(); <-done }
	t.mu.Unlock()
	return nil
}

// Stop stops the controller, which restores every scope it throttled.
func (t *throttler) Stop() error {
	t.mu.Lock()
	stop := t.stop
	t.ctl, t.stop = nil, nil
	t.mu.Unlock()
	if stop != nil {
		stop()
	}
	return nil
}

// controller is the running controller (nil: none; a nil throttler, as in
// a Supervisor{} of the API edge's tests, has none).
func (t *throttler) controller() *control.Controller {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ctl
}

// list lists the live, accounted scopes for the controller.
func (t *throttler) list() []control.ScopeInfo {
	tiers := t.conf().Tiers
	scopes := t.scopes.snapshot(func(sc *scope) bool { return sc.cgid != 0 })
	out := make([]control.ScopeInfo, 0, len(scopes))
	for _, sc := range scopes {
		out = append(out, control.ScopeInfo{
			Key: sc.id.Key(), Tenant: sc.id.Tenant, ID: sc.cgid, UnifiedDir: sc.node.UnifiedDir(),
			Weight: scopeBaseWeight, TenantWeight: tiers[sc.tier].CPUWeight, TenantCPUMax: tiers[sc.tier].CPUMax,
		})
	}
	return out
}

// throttle applies the controller's settings to a scope: the weight to
// the scope's node (against its tenant's other scopes) and, scaled, to its
// tenant's node (the tier's weight times weight/100, the lowest of its
// throttled scopes'), since against other tenants only the tenant node
// counts; the CPU max (0: none) to the scope's node. The controller steps
// down only a scope whose tenant takes more than its weight entitles it
// to, and caps it no lower than that, so this never takes from a tenant
// what its tier gives it. The tier nodes keep the sums of the configured
// weights.
func (t *throttler) throttle(key string, weight uint64, cpuMax float64) (err error) {
	t.scopes.locked(func() { err = t.throttleLocked(key, weight, cpuMax) })
	return err
}

// throttleLocked is throttle with the registry's lock held: the tenant
// node's weight depends on the live scopes and their throttling.
func (t *throttler) throttleLocked(key string, weight uint64, cpuMax float64) error {
	sc, ok := t.scopes.getLocked(key)
	if !ok {
		return nil // gone: nothing to throttle or restore
	}
	l := cgroups.Limits{CPUWeight: max(weight, 1), CPUMax: cpuMax}
	if cpuMax <= 0 {
		l.CPUMax = -1
	}
	if err := sc.node.Set(l); err != nil {
		return err
	}
	t.scopes.setThrottledLocked(key, weight)
	tier := t.conf().Tiers[sc.tier]
	tenant, err := cgroups.Load(path.Join(t.tree.Root(), sc.tier, sc.id.Tenant))
	if err != nil {
		return err
	}
	return tenant.Set(cgroups.Limits{CPUWeight: t.scopes.tenantWeightLocked(sc.tier, sc.id.Tenant, tier.CPUWeight)})
}

// capTenant applies the fair-share rule's CPU max to a tenant's nodes (one
// per tier it has live scopes in): cpuMax CPUs, at most its tier's
// cpu_max, or (0) the tier's cpu_max back; and makes them SCHED_IDLE
// (cpu.idle) or not. The registry keeps the cap, so that a node made again
// for a new scope of the tenant gets it too.
func (t *throttler) capTenant(tenant string, cpuMax float64, idle bool) (err error) {
	t.scopes.locked(func() { err = t.capTenantLocked(tenant, cpuMax, idle) })
	return err
}

func (t *throttler) capTenantLocked(tenant string, cpuMax float64, idle bool) error {
	t.scopes.setTenantCapLocked(tenant, cpuMax)
	tiers := map[string]bool{}
	t.scopes.eachLocked(func(sc *scope) {
		if sc.id.Tenant == tenant {
			tiers[sc.tier] = true
		}
	})
	var errs []error
	for _, tier := range slices.Sorted(maps.Keys(tiers)) {
		l := cgroups.Limits{CPUMax: t.scopes.tenantCPUMaxLocked(tenant, t.conf().Tiers[tier].tenantLimits().CPUMax)}
		if cpuMax > 0 {
			l.CPUPeriod = t.conf().Control.SharePeriod.Duration // 0: the default
		}
		if !t.noIdle.Load() {
			// Clearing idle gives the node the kernel's default weight:
			// the tenant's goes with it.
			l.CPUIdle, l.CPUWeight = -1, t.scopes.tenantWeightLocked(tier, tenant, t.conf().Tiers[tier].CPUWeight)
			if idle {
				l.CPUIdle = 1
			}
		}
		node, err := cgroups.Load(path.Join(t.tree.Root(), tier, tenant))
		if err == nil {
			err = node.Set(l)
		}
		if errors.Is(err, cgroups.ErrNotSupported) && l.CPUIdle != 0 {
			// No cpu.idle (kernel before 5.15): the cap goes without it.
			t.noIdle.Store(true)
			if idle {
				t.log.Warn("the kernel has no cpu.idle: the fair-share rule caps tenants without making them idle", "tenant", tenant, "err", err)
			}
			l.CPUIdle = 0
			err = node.Set(l)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// tenantCPUMaxLocked is the CPU max of a tenant's node: base, its tier's
// (CPUs; negative: none), or the fair-share rule's cap if lower.
func (r *registry) tenantCPUMaxLocked(tenant string, base float64) float64 {
	c, ok := r.tenantCaps[tenant]
	switch {
	case !ok:
		return base
	case base > 0:
		return min(c, base)
	}
	return c
}

// setTenantCapLocked records the fair-share rule's cap of a tenant (0:
// none).
func (r *registry) setTenantCapLocked(tenant string, cpuMax float64) {
	if cpuMax <= 0 {
		delete(r.tenantCaps, tenant)
		return
	}
	if r.tenantCaps == nil {
		r.tenantCaps = map[string]float64{}
	}
	r.tenantCaps[tenant] = cpuMax
}

// events returns the controller's recent events about the scopes of the
// tenants allow accepts, and whether the controller runs.
func (t *throttler) events(allow func(string) bool, since time.Time) ([]ControlEvent, bool) {
	ctl := t.controller()
	if ctl == nil || !t.conf().Control.Enabled {
		return nil, false
	}
	var out []ControlEvent
	for _, e := range ctl.Events(since) {
		if allow(e.Tenant) {
			out = append(out, e)
		}
	}
	return out, true
}

// level is the controller's step for the scope key (0: none).
func (t *throttler) level(key string) int {
	if ctl := t.controller(); ctl != nil {
		return ctl.Throttled()[key]
	}
	return 0
}

// publish copies the controller's event counts into the metrics (the
// sampler calls it every round).
func (t *throttler) publish() {
	ctl := t.controller()
	if ctl == nil {
		return
	}
	for kind, n := range ctl.Counts() {
		t.metrics.SetControlEvents(kind, n)
	}
	t.metrics.SetThrottled(len(ctl.Throttled()))
	t.metrics.SetCappedTenants(len(ctl.Capped()))
}

// ControlEvents returns the noisy-neighbour controller's recent events
// about the scopes of the tenants allow accepts, and whether it runs.
func (s *Supervisor) ControlEvents(allow func(string) bool, since time.Time) ([]ControlEvent, bool) {
	return s.ctl.events(allow, since)
}
