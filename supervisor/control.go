package supervisor

import (
	"context"
	"fmt"
	"path"
	"time"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/control"
)

// ControlEvent is one action of the noisy-neighbour controller.
type ControlEvent = control.Event

// scopeBaseWeight is every scope's CPU weight within its tenant (see
// Tier.scopeLimits); the controller steps down from it.
const scopeBaseWeight = 100

// startControl starts the noisy-neighbour controller with the
// configuration in force (it does nothing when [control] is off). The
// caller holds no lock.
func (s *Supervisor) startControl() error {
	ctl, err := control.New(s.conf().Control,
		control.AccountingSource(s.acct, s.controlScopes), control.ActuatorFunc(s.throttle), s.log)
	if err != nil {
		return fmt.Errorf("%w: control: %w", ErrConfig, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := ctl.Run(ctx); err != nil {
			s.log.Warn("noisy-neighbour controller: restoring throttled scopes", "err", err)
		}
	}()
	s.ctlMu.Lock()
	s.ctl, s.ctlStop = ctl, func() { cancel(); <-done }
	s.ctlMu.Unlock()
	return nil
}

// stopControl stops the controller, which restores every scope it
// throttled.
func (s *Supervisor) stopControl() {
	s.ctlMu.Lock()
	stop := s.ctlStop
	s.ctl, s.ctlStop = nil, nil
	s.ctlMu.Unlock()
	if stop != nil {
		stop()
	}
}

func (s *Supervisor) controller() *control.Controller {
	s.ctlMu.Lock()
	defer s.ctlMu.Unlock()
	return s.ctl
}

// controlScopes lists the live, accounted scopes for the controller.
func (s *Supervisor) controlScopes() []control.ScopeInfo {
	tiers := s.conf().Tiers
	scopes := s.scopes.snapshot(func(sc *scope) bool { return sc.cgid != 0 })
	out := make([]control.ScopeInfo, 0, len(scopes))
	for _, sc := range scopes {
		out = append(out, control.ScopeInfo{
			Key: sc.id.Key(), Tenant: sc.id.Tenant, ID: sc.cgid, UnifiedDir: sc.node.UnifiedDir(),
			Weight: scopeBaseWeight, TenantWeight: tiers[sc.tier].CPUWeight,
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
func (s *Supervisor) throttle(key string, weight uint64, cpuMax float64) (err error) {
	s.scopes.locked(func() { err = s.throttleLocked(key, weight, cpuMax) })
	return err
}

// throttleLocked is throttle with the registry's lock held: the tenant
// node's weight depends on the live scopes and their throttling.
func (s *Supervisor) throttleLocked(key string, weight uint64, cpuMax float64) error {
	sc, ok := s.scopes.getLocked(key)
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
	s.scopes.setThrottledLocked(key, weight)
	tier := s.conf().Tiers[sc.tier]
	tenant, err := cgroups.Load(path.Join(s.tree.Root(), sc.tier, sc.id.Tenant))
	if err != nil {
		return err
	}
	return tenant.Set(cgroups.Limits{CPUWeight: s.scopes.tenantWeightLocked(sc.tier, sc.id.Tenant, tier.CPUWeight)})
}

// ControlEvents returns the controller's recent events about the scopes of
// the tenants allow accepts, and whether the controller runs.
func (s *Supervisor) ControlEvents(allow func(string) bool, since time.Time) ([]ControlEvent, bool) {
	ctl := s.controller()
	if ctl == nil || !s.conf().Control.Enabled {
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

// throttleLevel is the controller's step for the scope key (0: none).
func (s *Supervisor) throttleLevel(key string) int {
	if ctl := s.controller(); ctl != nil {
		return ctl.Throttled()[key]
	}
	return 0
}

// controlMetrics copies the controller's event counts into the metrics.
func (s *Supervisor) controlMetrics() {
	ctl := s.controller()
	if ctl == nil {
		return
	}
	for kind, n := range ctl.Counts() {
		s.metrics.SetControlEvents(kind, n)
	}
	s.metrics.SetThrottled(len(ctl.Throttled()))
}
