package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"sync"
	"time"
)

// Source gives the controller a snapshot of every live scope.
type Source interface {
	Snapshot() (Snapshot, error)
}

// SourceFunc makes a function a Source.
type SourceFunc func() (Snapshot, error)

// Snapshot calls f.
func (f SourceFunc) Snapshot() (Snapshot, error) { return f() }

// Actuator applies CPU settings to scopes' and tenants' cgroups. Its
// methods are called from the controller's goroutine only, and should not
// take long: a few cgroup file writes.
type Actuator interface {
	// SetCPU sets the scope's CPU weight and CPU max (in CPUs; 0 removes
	// the cap).
	SetCPU(key string, weight uint64, cpuMax float64) error
	// SetTenantCPU sets the CPU max of the tenant's node (in CPUs, at most
	// its configured CPU max; 0 gives back its configured CPU max) and
	// whether it is SCHED_IDLE. A tenant without a node is no error.
	SetTenantCPU(tenant string, cpuMax float64, idle bool) error
}

// Actuators makes two functions an Actuator; a nil one fails with
// ErrNoActuator.
type Actuators struct {
	Scope  func(key string, weight uint64, cpuMax float64) error
	Tenant func(tenant string, cpuMax float64, idle bool) error
}

// SetCPU calls a.Scope.
func (a Actuators) SetCPU(key string, weight uint64, cpuMax float64) error {
	if a.Scope == nil {
		return ErrNoActuator
	}
	return a.Scope(key, weight, cpuMax)
}

// SetTenantCPU calls a.Tenant.
func (a Actuators) SetTenantCPU(tenant string, cpuMax float64, idle bool) error {
	if a.Tenant == nil {
		return ErrNoActuator
	}
	return a.Tenant(tenant, cpuMax, idle)
}

var (
	_ Source   = SourceFunc(nil)
	_ Actuator = Actuators{}
)

// logEvery: a failure that repeats every tick is logged the first time and
// then once every logEvery ticks.
const logEvery = 60

// Controller runs Decide and DecideShares on a Source's snapshots every
// Config.Interval and applies their actions through an Actuator. An action
// that fails is logged and tried again at the next tick (unless a newer one
// for the same scope or tenant replaces it). Every event is logged, counted and kept in a ring. Its
// methods are safe for concurrent use.
type Controller struct {
	cfg Config
	src Source
	act Actuator
	log *slog.Logger

	tickMu  sync.Mutex // serialises Tick and Close; guards the fields below
	st      State
	shares  ShareState
	pending map[string]*pending
	tpend   map[string]*tenantPending
	closed  bool
	srcErrs int // consecutive failed snapshots

	done chan struct{} // closed by Close

	mu        sync.Mutex // guards the fields below, for the readers
	ring      []Event
	next      int
	full      bool
	counts    map[string]uint64
	throttled map[string]int
	capped    map[string]float64
}

type pending struct {
	a     Action
	tries int
}

type tenantPending struct {
	a     TenantAction
	tries int
}

// New returns a controller; it does nothing until Run or Tick. A nil log
// means slog.Default(). It fails, wrapping ErrInvalidConfig, if cfg does
// not validate.
func New(cfg Config, src Source, act Actuator, log *slog.Logger) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Enabled && (src == nil || act == nil) {
		return nil, fmt.Errorf("%w: a Source and an Actuator are needed", ErrInvalidConfig)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Controller{
		cfg: cfg, src: src, act: act, log: log.With("component", "control"),
		pending:   make(map[string]*pending),
		tpend:     make(map[string]*tenantPending),
		done:      make(chan struct{}),
		ring:      make([]Event, max(cfg.MaxEvents, 1)),
		counts:    make(map[string]uint64),
		throttled: make(map[string]int),
		capped:    make(map[string]float64),
	}, nil
}

// Run ticks every Config.Interval until ctx is done or the controller is
// closed, then closes it (which restores every throttled scope) and returns
// Close's error. Disabled, it only waits. Snapshot errors are logged and the
// tick skipped.
func (c *Controller) Run(ctx context.Context) error {
	if c.cfg.Enabled {
		t := time.NewTicker(c.cfg.Interval.Duration)
		defer t.Stop()
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case <-c.done:
				break loop
			case <-t.C:
				_ = c.Tick() // it logs its errors
			}
		}
	} else {
		select {
		case <-ctx.Done():
		case <-c.done:
		}
	}
	return c.Close()
}

// Tick reads one snapshot, decides and applies. It is what Run calls every
// interval; tests call it directly. It returns the Source's error (also
// logged; the tick is skipped), ErrClosed after Close, and nil when
// disabled. Actuator errors are logged, not returned: the action is
// retried at the next tick.
func (c *Controller) Tick() error {
	c.tickMu.Lock()
	defer c.tickMu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if !c.cfg.Enabled {
		return nil
	}
	snap, err := c.src.Snapshot()
	if err != nil {
		c.srcErrs++
		if c.srcErrs%logEvery == 1 {
			c.log.Warn("snapshot failed; tick skipped", "err", err, "times", c.srcErrs)
		}
		return fmt.Errorf("snapshot: %w", err)
	}
	c.srcErrs = 0
	st, acts, evs, err := c.decide(snap)
	if err != nil {
		return err
	}
	c.st = st
	shares, tacts, sevs, err := c.decideShares(snap)
	if err != nil {
		return err
	}
	c.shares = shares

	present := make(map[string]bool, len(snap.Scopes))
	for _, s := range snap.Scopes {
		present[s.Key] = true
	}
	for key := range c.pending {
		if !present[key] {
			delete(c.pending, key) // gone: nothing to set any more
		}
	}
	for _, a := range acts {
		c.pending[a.Key] = &pending{a: a}
	}
	tenants := make(map[string]bool)
	for _, s := range snap.Scopes {
		tenants[s.Tenant] = true
	}
	for _, a := range tacts {
		c.tpend[a.Tenant] = &tenantPending{a: a}
	}
	c.apply(tenants)
	c.record(append(evs, sevs...), st.Throttled(), shares.Capped())
	return nil
}

// decideShares runs DecideShares as decide runs Decide.
func (c *Controller) decideShares(snap Snapshot) (st ShareState, acts []TenantAction, evs []Event, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("fair-share decision failed", "panic", r, "stack", string(debug.Stack()))
			st, acts, evs, err = c.shares, nil, nil, fmt.Errorf("decide shares: panic: %v", r)
		}
	}()
	st, acts, evs = DecideShares(c.cfg, c.shares, snap)
	if c.log.Enabled(context.Background(), slog.LevelDebug) {
		if d := st.Describe(); d != "" {
			c.log.Debug("fair shares tick", "figures", d)
		}
	}
	return st, acts, evs, nil
}

// decide runs Decide; a panic (a bug) is logged and turned into an error,
// and the state stays as it was: the daemon keeps serving invocations, and
// Close still restores what was throttled.
func (c *Controller) decide(snap Snapshot) (st State, acts []Action, evs []Event, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("decision failed", "panic", r, "stack", string(debug.Stack()))
			st, acts, evs, err = c.st, nil, nil, fmt.Errorf("decide: panic: %v", r)
		}
	}()
	st, acts, evs = Decide(c.cfg, c.st, snap)
	return st, acts, evs, nil
}

// apply runs the pending actions; the ones that fail stay pending, but for
// tenants not in the snapshot (tenants says which are), which are tried
// once.
func (c *Controller) apply(tenants map[string]bool) {
	for _, t := range slices.Sorted(maps.Keys(c.tpend)) {
		p := c.tpend[t]
		err := c.act.SetTenantCPU(t, p.a.CPUMax, p.a.Idle)
		if err == nil || !tenants[t] {
			delete(c.tpend, t)
		}
		if err == nil {
			continue
		}
		p.tries++
		if p.tries%logEvery == 1 {
			c.log.Warn("tenant cpu max not applied; retrying next tick", "tenant", t, "cpu_max", p.a.CPUMax, "tries", p.tries, "err", err)
		}
	}
	for _, key := range slices.Sorted(maps.Keys(c.pending)) {
		p := c.pending[key]
		err := c.act.SetCPU(key, p.a.Weight, p.a.CPUMax)
		if err == nil {
			delete(c.pending, key)
			continue
		}
		p.tries++
		if p.tries%logEvery == 1 {
			c.log.Warn("cpu settings not applied; retrying next tick", "scope", key,
				"level", p.a.Level, "weight", p.a.Weight, "cpu_max", p.a.CPUMax, "tries", p.tries, "err", err)
		}
	}
}

// record logs, counts and keeps events, and publishes the levels and
// the capped tenants.
func (c *Controller) record(evs []Event, throttled map[string]int, capped map[string]float64) {
	for _, e := range evs {
		if e.Scope == "" {
			c.log.Info("fair shares: "+e.Kind, "tenant", e.Tenant, "starving", e.Victims, "reason", e.Reason)
			continue
		}
		c.log.Info("noisy neighbour: "+e.Kind, "tenant", e.Tenant, "scope", e.Scope,
			"victims", e.Victims, "level", e.Level, "reason", e.Reason)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range evs {
		c.counts[e.Kind]++
		c.ring[c.next] = e
		c.next = (c.next + 1) % len(c.ring)
		if c.next == 0 {
			c.full = true
		}
	}
	c.throttled = throttled
	c.capped = capped
}

// Close restores every throttled scope to its base weight and CPU max and
// lifts every tenant cap (and retries the actions still pending), records
// a "restored" or "share_lifted" event for each, and stops Run. It returns the Actuator's errors, joined. Closing twice is
// a no-op.
func (c *Controller) Close() error {
	c.tickMu.Lock()
	defer c.tickMu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	close(c.done)
	acts, evs := c.st.restoreAll(nil, time.Now(), "controller stopped")
	c.st = State{}
	for _, a := range acts {
		c.pending[a.Key] = &pending{a: a}
	}
	tacts, sevs := c.shares.liftAll(time.Now(), "controller stopped")
	c.shares = ShareState{}
	evs = append(evs, sevs...)
	for _, a := range tacts {
		c.tpend[a.Tenant] = &tenantPending{a: a}
	}
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(c.pending)) {
		a := c.pending[key].a
		if err := c.act.SetCPU(key, a.Weight, a.CPUMax); err != nil {
			c.log.Warn("cpu settings not restored", "scope", key, "weight", a.Weight, "cpu_max", a.CPUMax, "err", err)
			errs = append(errs, fmt.Errorf("restore %s: %w", key, err))
		}
	}
	clear(c.pending)
	for _, t := range slices.Sorted(maps.Keys(c.tpend)) {
		a := c.tpend[t].a
		if err := c.act.SetTenantCPU(t, a.CPUMax, a.Idle); err != nil {
			c.log.Warn("tenant cpu max not restored", "tenant", t, "cpu_max", a.CPUMax, "err", err)
			errs = append(errs, fmt.Errorf("restore tenant %s: %w", t, err))
		}
	}
	clear(c.tpend)
	c.record(evs, map[string]int{}, map[string]float64{})
	return errors.Join(errs...)
}

// Events returns the kept events that happened after since, oldest first
// (the zero time: all of them).
func (c *Controller) Events(since time.Time) []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []Event
	if c.full {
		all = append(all, c.ring[c.next:]...)
	}
	all = append(all, c.ring[:c.next]...)
	out := make([]Event, 0, len(all))
	for _, e := range all {
		if since.IsZero() || e.At.After(since) {
			e.Victims = slices.Clone(e.Victims)
			out = append(out, e)
		}
	}
	return out
}

// Counts returns how many events of each kind happened since New, for
// metrics.
func (c *Controller) Counts() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.counts)
}

// Throttled returns the level (1 or 2) of every scope the controller holds
// down now, by key.
func (c *Controller) Throttled() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.throttled)
}

// Capped returns the CPU max of every tenant the fair-share rule caps now,
// by tenant.
func (c *Controller) Capped() map[string]float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.capped)
}
