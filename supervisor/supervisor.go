package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/scoped-io/scoped/accounting"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/control"
	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/internal/parallel"
	"github.com/scoped-io/scoped/metrics"
	"github.com/scoped-io/scoped/plugins/host"
	"github.com/scoped-io/scoped/sandbox"
)

// Supervisor is the daemon core. Create it with New, then Recover, serve
// the API, and Stop.
type Supervisor struct {
	cfg        atomic.Pointer[Config]
	log        *slog.Logger
	pluginLog  hclog.Logger
	store      *Store
	tenants    *tenantRegistry
	tree       *cgroups.Tree
	ids        *sandbox.IDAllocator
	sandboxDir string
	socketDir  string
	starter    WorkerStarter
	gate       *gate

	scopes registry // the live scopes
	// loops holds what runs from Recover to Stop, in start order (see
	// Recover).
	loops loops
	// grace is how long Stop waits for the invocations in flight.
	grace   atomic.Int64
	stopped atomic.Bool // Stop was called

	invocations atomic.Int64

	metrics *metrics.Registry
	meter   *meter
	exports *exporters
	acct    accounting.Source
	health  healthState // see Health

	// The parts New wires, each owning its lock (and loop; see Recover).
	net     *networks  // egress networking
	ctl     *throttler // the noisy-neighbour controller
	reclaim *reclaimer // makes room for a new scope
	reap    *reaper    // idle workers and scopes
}

// New prepares a supervisor: it checks the configuration, opens the
// extension store and the cgroup root. Nothing runs until Recover.
func New(cfg Config, log *slog.Logger) (*Supervisor, error) {
	return newSupervisor(cfg, log, cgroups.Open)
}

// newSupervisor is New with the cgroup root opened by openTree (the fuzz
// targets' supervisor has none: opening one creates it, as root only).
func newSupervisor(cfg Config, log *slog.Logger, openTree func(root string) (*cgroups.Tree, error)) (*Supervisor, error) {
	cfg.Clients = slices.Clone(cfg.Clients)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkDirs(&cfg, log); err != nil {
		return nil, err
	}
	store, err := NewStore(cfg.StateDir, cfg.Limits.MaxBundle, cfg.Limits.MaxBundleFiles)
	if err != nil {
		return nil, fmt.Errorf("extension store: %w", err)
	}
	store.Configure(cfg.Limits, log)
	tenants, err := openTenants(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("tenants: %w", err)
	}
	if err := checkAssignments(&cfg, tenants.assignments()); err != nil {
		return nil, err
	}
	tree, err := openTree(cfg.CgroupRoot)
	if err != nil {
		return nil, fmt.Errorf("cgroup root: %w", err)
	}
	ids, err := sandbox.NewIDAllocator(cfg.Scope.IDBase, sandbox.DefaultIDSize, cfg.Scope.IDSlots)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	level := hclog.Warn
	if cfg.Log.SlogLevel() <= slog.LevelDebug {
		level = hclog.Debug
	}
	s := &Supervisor{
		log:        log,
		pluginLog:  hclog.New(&hclog.LoggerOptions{Name: "go-plugin", Level: level, Output: os.Stderr, JSONFormat: cfg.Log.Format == "json"}),
		store:      store,
		tenants:    tenants,
		tree:       tree,
		ids:        ids,
		sandboxDir: filepath.Join(cfg.RuntimeDir, "sandboxes"),
		socketDir:  filepath.Join(cfg.RuntimeDir, "sockets"),
		starter:    host.Starter{},
		metrics:    metrics.New(),
	}
	s.gate = newGate(s.checkCaps)
	s.net = newNetworks(s.conf, log, tenants, tree)
	s.ctl = &throttler{conf: s.conf, log: log, source: func() control.CounterReader { return s.acct },
		scopes: &s.scopes, tree: tree, metrics: s.metrics}
	s.reap = newReaper(&reaper{conf: s.conf, log: log, scopes: &s.scopes, gate: s.gate, store: store, tierOf: s.tierOf,
		acquire: s.acquire, release: s.release, retire: s.retire, remove: s.removeScopes, alive: &s.health.reaper})
	s.reclaim = &reclaimer{conf: s.conf, log: log, scopes: &s.scopes, ids: ids, metrics: s.metrics, remove: s.removeScope}
	s.cfg.Store(&cfg)
	return s, nil
}

// conf is the configuration in force.
func (s *Supervisor) conf() *Config { return s.cfg.Load() }

// Reload applies a new configuration: the isolation policy, limits, pool
// settings, tiers (to the cgroups of live scopes too; the live scopes of a
// tenant whose tier became suspended are stopped) and clients. Paths, the
// cgroup root and the id ranges need a restart; changing them is an error,
// and so is removing a tier that a tenant is assigned to.
func (s *Supervisor) Reload(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	old := s.conf()
	if cfg.Socket != old.Socket || cfg.StateDir != old.StateDir || cfg.RuntimeDir != old.RuntimeDir ||
		cfg.CgroupRoot != old.CgroupRoot || cfg.Scope.IDBase != old.Scope.IDBase || cfg.Scope.IDSlots != old.Scope.IDSlots ||
		cfg.Metering.Enabled != old.Metering.Enabled || cfg.Metering.Window != old.Metering.Window {
		return fmt.Errorf("%w: socket, state_dir, runtime_dir, cgroup_root, the id range and metering's enabled and window change only with a restart", ErrConfig)
	}
	if err := checkAssignments(&cfg, s.tenants.assignments()); err != nil {
		return err
	}
	if s.net.running() && cfg.Network != old.Network {
		return fmt.Errorf("%w: [network] changes only with a restart while egress scopes run", ErrConfig)
	}
	if sc := s.scopes.find(func(sc *scope) bool { _, ok := cfg.Tiers[sc.tier]; return !ok }); sc != nil {
		return fmt.Errorf("%w: tier %q has live scopes (%s); keep it until they are gone", ErrConfig, sc.tier, sc.id.Key())
	}
	// The controller restarts with the new configuration: stopping it
	// restores the scopes it throttled, before the tiers' limits apply.
	_ = s.ctl.Stop()
	s.cfg.Store(&cfg)
	s.store.Configure(cfg.Limits, s.log)
	err := s.applyTiers()
	if s.acct != nil {
		err = errors.Join(err, s.ctl.Start(context.Background()))
	}
	return err
}

// checkAssignments refuses a configuration that lacks a tier some tenant
// is assigned to.
func checkAssignments(cfg *Config, assigned map[string]tenantRecord) error {
	var missing []string
	for tenant, rec := range assigned {
		if _, ok := cfg.Tiers[rec.Tier]; !ok {
			missing = append(missing, tenant+" → "+rec.Tier)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("%w: tenants are assigned tiers the configuration lacks: %s (add the tiers, or reassign the tenants first)",
			ErrConfig, strings.Join(missing, ", "))
	}
	return nil
}

// tierOf is the name and settings of tenant's tier now.
func (s *Supervisor) tierOf(tenant string) (string, Tier) {
	c := s.conf()
	name := s.tenants.tierOf(tenant, c.Tenants.DefaultTier)
	t, ok := c.Tiers[name]
	if !ok { // checkAssignments keeps this from happening
		name = c.Tenants.DefaultTier
		t = c.Tiers[name]
	}
	return name, t
}

// applyTiers brings every live scope in line with its tenant's tier: a
// scope in another tier than its tenant's now is retired (its successor
// starts in the new tier on the next invocation), the tenant and scope
// nodes get the tier's limits, the tier nodes their weights.
func (s *Supervisor) applyTiers() error {
	scopes := s.scopes.snapshot(nil)
	var errs []error
	done := map[string]bool{}
	for _, sc := range scopes {
		name, t := s.tierOf(sc.id.Tenant)
		if name != sc.tier || t.Suspended {
			s.detachScope(sc, t.Suspended)
			continue
		}
		if !done[sc.id.Tenant] {
			done[sc.id.Tenant] = true
			tl := t.tenantLimits()
			s.scopes.locked(func() { tl.CPUWeight = s.scopes.tenantWeightLocked(name, sc.id.Tenant, t.CPUWeight) })
			if _, err := s.tree.Node(tl, name, sc.id.Tenant); err != nil {
				errs = append(errs, err)
			}
		}
		limits := t.scopeLimits()
		// A scope's CPU settings are the same in every tier and belong
		// to the noisy-neighbour controller while it throttles the scope.
		if err := sc.node.Set(cgroups.Limits{MemoryMax: limits.MemoryMax, PidsMax: limits.PidsMax}); err != nil {
			errs = append(errs, err)
			continue
		}
		sc.mu.Lock()
		sc.limits = limits
		sc.mu.Unlock()
	}
	s.scopes.locked(func() { errs = append(errs, s.setTierWeightsLocked()) })
	errs = append(errs, s.net.update(s.scopes.snapshot(nil)))
	return errors.Join(errs...)
}

// setTierWeightsLocked sets each tier node's CPU weight to the sum of its
// live tenants' weights (see tierWeights). Callers hold the registry's
// lock.
func (s *Supervisor) setTierWeightsLocked() error {
	c := s.conf()
	return errors.Join(s.scopes.setTierWeightsLocked(
		func(tier string) uint64 { return c.Tiers[tier].CPUWeight },
		func(tier string, w uint64) error {
			_, err := s.tree.Node(cgroups.Limits{CPUWeight: w}, tier)
			return err
		})...)
}

// detachScope takes sc out of the registry, so that the next invocation
// starts a new scope (in the tenant's tier now), and removes it: at once
// when kill is set, else once its invocations in flight are done.
func (s *Supervisor) detachScope(sc *scope, kill bool) {
	if !s.scopes.leave(sc) {
		return
	}
	s.log.Info("scope leaves its tier", "tenant", sc.id.Tenant, "scope", sc.id.Key(), "tier", sc.tier, "kill", kill)
	go func() {
		if !kill {
			deadline := time.Now().Add(s.conf().Limits.MaxTimeout.Duration + 5*time.Second)
			for sc.active.Load() > 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if err := s.removeScope(sc); err != nil {
			s.log.Error("remove scope", "scope", sc.id.Key(), "err", err)
		}
	}()
}

// SetTenantTier assigns tenant to tier, persists it, and moves the
// tenant's live scopes: they finish what they run and their successors
// start in the new tier (a suspended tier stops them at once).
func (s *Supervisor) SetTenantTier(t ident.Tenant, tier string, allow *[]string) (TenantInfo, error) {
	tenant := string(t)
	if err := ident.Check("tier", tier); err != nil {
		return TenantInfo{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, ok := s.conf().Tiers[tier]; !ok {
		return TenantInfo{}, fmt.Errorf("%w: tier %q is not configured (tiers: %s)", ErrNotFound, tier,
			strings.Join(slices.Sorted(maps.Keys(s.conf().Tiers)), ", "))
	}
	old, _ := s.tierOf(tenant)
	if err := s.tenants.assign(tenant, tier, allow, time.Now()); err != nil {
		return TenantInfo{}, err
	}
	s.log.Info("tenant tier set", "tenant", tenant, "tier", tier, "was", old)
	if allow != nil {
		s.log.Info("tenant egress allow-list set", "tenant", tenant, "allow", strings.Join(*allow, " "))
	}
	if err := s.applyTiers(); err != nil {
		s.log.Error("apply tiers", "tenant", tenant, "err", err)
	}
	return s.Tenant(t), nil
}

// Tenant describes one tenant (known or not: an unknown tenant is in the
// default tier).
func (s *Supervisor) Tenant(t ident.Tenant) TenantInfo {
	tenant := string(t)
	all := s.Tenants(func(t string) bool { return t == tenant })
	if len(all) == 1 {
		return all[0]
	}
	name, _ := s.tierOf(tenant)
	return TenantInfo{Tenant: tenant, Tier: name}
}

// Tenants lists the tenants allow accepts that have a tier assignment or
// live scopes.
func (s *Supervisor) Tenants(allow func(string) bool) []TenantInfo {
	live := map[string]int{}
	for _, sc := range s.scopes.snapshot(nil) {
		live[sc.id.Tenant]++
	}
	assigned := s.tenants.assignments()
	var out []TenantInfo
	for _, t := range tenantNames(assigned, live) {
		if !allow(t) {
			continue
		}
		name, _ := s.tierOf(t)
		rec, ok := assigned[t]
		out = append(out, TenantInfo{Tenant: t, Tier: name, Assigned: ok, Updated: rec.Updated, Scopes: live[t],
			InFlight: s.gate.inFlight(t), EgressAllow: rec.EgressAllow})
	}
	return out
}

// Recover removes what a crashed daemon left behind — sandboxes and their
// processes, cgroups, worker sockets — and starts the daemon's components
// in the order below. Stop stops them in reverse; when one fails to
// start, those started before it are stopped (the cgroups, BPF links,
// network and goroutines they made are gone) and Recover returns its
// error. It is called once.
func (s *Supervisor) Recover() error {
	l := &s.loops
	if l.len() > 0 {
		return errors.New("supervisor: Recover called again")
	}
	l.log = s.log
	l.add("sandboxes", part{start: s.cleanSandboxes, stop: func() error { return os.RemoveAll(s.sandboxDir) }})
	// The ledger before the cgroups' cleanup: what the dead scopes used
	// since the last flush is still in their cgroups' counters until the
	// cleanup removes them.
	l.add("metering ledger", part{start: func(context.Context) error { return s.openMetering() }, stop: s.closeMetering})
	l.add("cgroups", part{start: s.cleanCgroups})
	l.add("network", s.net)
	l.add("runtime directories", part{start: s.makeRuntimeDirs, stop: func() error { return os.RemoveAll(s.socketDir) }})
	l.add("accounting", part{start: func(context.Context) error { return s.openAccounting() }, stop: s.closeAccounting})
	l.add("metering export", part{start: func(context.Context) error { return s.startExporters() },
		stop: func() error { s.stopExporters(); return nil }})
	// Stopping the scopes removes them all: after the loops below, before
	// what their removal still uses (the ledger, accounting, networks).
	l.add("scopes", part{stop: s.removeAll})
	l.add("controller", s.ctl)
	meterLoop := newGoLoop(s.meterLoop)
	l.add("metering loop", part{start: func(ctx context.Context) error {
		if s.meter == nil {
			return nil
		}
		return meterLoop.Start(ctx)
	}, stop: meterLoop.Stop})
	l.add("reaper", s.reap)
	l.add("sampler", newGoLoop(s.sampler))
	return l.Start(context.Background())
}

// cleanSandboxes removes the sandboxes, and their processes, a previous
// run left.
func (s *Supervisor) cleanSandboxes(context.Context) error {
	if n, err := sandbox.Cleanup(s.sandboxDir); err != nil {
		return fmt.Errorf("remove sandboxes left by a previous run: %w", err)
	} else if n > 0 {
		s.log.Warn("removed sandboxes left by a previous run", "count", n)
	}
	return nil
}

// cleanCgroups removes the cgroups a previous run left.
func (s *Supervisor) cleanCgroups(context.Context) error {
	if n, err := s.tree.Cleanup(); err != nil {
		return fmt.Errorf("remove cgroups left by a previous run: %w", err)
	} else if n > 0 {
		s.log.Warn("removed cgroups left by a previous run", "count", n)
	}
	return nil
}

// makeRuntimeDirs makes the runtime and worker socket directories afresh.
func (s *Supervisor) makeRuntimeDirs(context.Context) error {
	if err := os.RemoveAll(s.socketDir); err != nil {
		return err
	}
	for _, d := range []string{s.conf().RuntimeDir, s.socketDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return err
		}
		if err := os.Chmod(d, 0o711); err != nil {
			return err
		}
	}
	return nil
}

// Stop refuses new invocations, waits up to grace for the ones in flight,
// then kills every worker and removes every scope's cgroup and sandbox:
// it stops what Recover started, in reverse order. Calling it again, or
// after a failed Recover, does nothing more.
func (s *Supervisor) Stop(grace time.Duration) error {
	if !s.stopped.CompareAndSwap(false, true) {
		return nil
	}
	s.scopes.stop()
	s.grace.Store(int64(grace))
	err := s.loops.Stop()
	if s.tree != nil {
		err = errors.Join(err, s.tree.Close())
	}
	return err
}

// removeAll stops the scopes: the registry takes no new ones, the
// invocations in flight get Stop's grace, then every worker is killed and
// every scope's cgroup and sandbox removed.
func (s *Supervisor) removeAll() error {
	s.scopes.stop()
	grace := time.Duration(s.grace.Load())
	if !s.scopes.drain(grace) {
		s.log.Warn("grace period over, killing workers with invocations in flight", "grace", grace)
	}
	// The tenant and tier nodes go with the tree's cleanup below.
	errs := s.removeScopes(s.scopes.takeAll())
	if _, err := sandbox.Cleanup(s.sandboxDir); err != nil {
		errs = append(errs, err)
	}
	if _, err := s.tree.Cleanup(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// RemoveRuntimeDir removes the socket, the reattach file, and the runtime
// directory if that left it empty (systemd's RuntimeDirectory= does so
// under systemd).
func (s *Supervisor) RemoveRuntimeDir() {
	_ = os.Remove(s.conf().Socket)
	if p := s.conf().ReattachFile; p != "" {
		_ = os.Remove(p)
	}
	_ = os.Remove(s.conf().RuntimeDir)
}

// removeParallel bounds how many scopes are removed at once. Removing one
// mostly waits on the kernel (killed processes to exit, cgroups to go
// after an RCU grace period), so many overlap well on few CPUs; the bound
// keeps a stop from opening thousands of cgroup and state files at once.
const removeParallel = 16

// removeScope removes a scope that left the registry.
func (s *Supervisor) removeScope(sc *scope) error {
	return s.removeScopes([]*scope{sc})[0]
}

// removeScopes removes scopes that left the registry: it stops their
// workers, commits their last usage to the ledger (one transaction for
// them all), and removes their accounting, networks, series, cgroups and
// host id ranges, at most removeParallel scopes at once; then the tenant
// nodes they leave empty (not while the daemon stops: the tree's cleanup
// removes those). The work per scope does not depend on how many other
// scopes there are. It returns each scope's error (nil: removed).
func (s *Supervisor) removeScopes(scopes []*scope) []error {
	errs := make([]error, len(scopes))
	if len(scopes) == 0 {
		return errs
	}
	_ = parallel.ForEach(scopes, removeParallel, func(sc *scope) error { sc.stopAll(); return nil })
	// Their last usage goes to the ledger while their cgroups are still
	// there.
	if err := s.flushMetering(scopes...); err != nil {
		s.log.Error("metering: final flush of scopes", "scopes", len(scopes), "err", err)
	}
	idx := make([]int, len(scopes))
	for i := range idx {
		idx[i] = i
	}
	stopping := s.scopes.isStopping()
	_ = parallel.ForEach(idx, removeParallel, func(i int) error {
		errs[i] = s.removeScopeNode(scopes[i], stopping)
		return nil
	})
	s.scopes.locked(func() { s.removedLocked(scopes, stopping) })
	return errs
}

// removedLocked ends the reservations of removed scopes (see
// registry.leaveLocked) and, unless the daemon stops, removes the tenant
// nodes they left empty and sets the tier nodes' weights. Callers hold the
// registry's lock.
func (s *Supervisor) removedLocked(scopes []*scope, stopping bool) {
	s.scopes.removedLocked(scopes)
	if stopping {
		return
	}
	// A tenant node goes when its last scope in its tier goes.
	done := map[[2]string]bool{}
	for _, sc := range scopes {
		k := [2]string{sc.tier, sc.id.Tenant}
		if done[k] || s.scopes.tenantHasScopesLocked(sc.tier, sc.id.Tenant) {
			continue
		}
		done[k] = true
		if tenant, terr := cgroups.Load(path.Join(s.tree.Root(), sc.tier, sc.id.Tenant)); terr == nil {
			if pids, _ := tenant.Pids(); len(pids) == 0 {
				_ = tenant.Remove()
			}
		}
	}
	if werr := s.setTierWeightsLocked(); werr != nil {
		s.log.Warn("tier weights", "err", werr)
	}
}

// removeScopeNode removes what is left of a scope whose workers are gone,
// but its tenant's node. While the daemon stops, accounting is closed
// afterwards, all scopes at once: untracking one scope sweeps the whole
// preemption-pair map under accounting's lock, which for every scope of a
// stop made it quadratic (22 s of a 40 s stop of 2,000 scopes).
func (s *Supervisor) removeScopeNode(sc *scope, stopping bool) error {
	if !stopping {
		s.untrack(sc)
	}
	if err := s.net.closeScope(sc); err != nil {
		s.log.Error("network of a scope", "scope", sc.id.Key(), "err", err)
	}
	if !s.scopes.forgetThrottled(sc.id.Key()) {
		// A successor in another tier keeps the key's series.
		s.metrics.RemoveScope(sc.id.Key())
	}
	err := sc.node.Remove()
	s.ids.Release(sc.id.Key())
	return err
}

// scopeFor returns the live scope of id with one invocation counted in its
// active (the caller takes it back; an active scope is never reclaimed),
// creating its cgroup node and taking a host id range on first use.
func (s *Supervisor) scopeFor(id ScopeID) (*scope, error) {
	return s.scopes.acquire(id.Key(), func() (*scope, bool, error) { return s.newScopeLocked(id) })
}

// newScopeLocked makes the scope of id live, in its tenant's tier now, once
// there is room for it (reclaimer.makeRoomLocked; again: the registry's lock was
// released meanwhile, look again). Callers hold the registry's lock.
func (s *Supervisor) newScopeLocked(id ScopeID) (_ *scope, again bool, _ error) {
	tierName, tier := s.tierOf(id.Tenant)
	// This very scope may be being removed (idle, reclaimed, or it left
	// its tier and came back): its cgroup must be gone before its
	// successor makes it again, else the removal takes the new one.
	if s.scopes.waitRemovedLocked(path.Join(s.tree.Root(), tierName, id.Tenant, id.Name)) {
		return nil, true, nil
	}
	if again, err := s.reclaim.makeRoomLocked(id, tierName, tier); err != nil || again {
		return nil, again, err
	}
	tl := tier.tenantLimits()
	tl.CPUWeight = s.scopes.tenantWeightLocked(tierName, id.Tenant, tier.CPUWeight)
	if _, err := s.tree.Node(tl, tierName, id.Tenant); err != nil {
		return nil, false, fmt.Errorf("cgroup of tenant %s: %w", id.Tenant, err)
	}
	limits := tier.scopeLimits()
	node, err := s.tree.Node(limits, tierName, id.Tenant, id.Name)
	if err != nil {
		return nil, false, fmt.Errorf("cgroup of scope %s: %w", id.Key(), err)
	}
	ids, err := s.ids.Acquire(id.Key())
	if err != nil {
		_ = node.Remove()
		return nil, false, noSlotError(id, err)
	}
	sc := &scope{
		id: id, tier: tierName, node: node, ids: ids, limits: limits, created: time.Now(), lastUsed: time.Now(),
		ring: newLogRing(s.conf().Scope.LogLines),
	}
	if st, err := node.Stats(); err == nil {
		sc.oomSeen = st.OOMKills
	}
	s.track(sc)
	s.scopes.addLocked(sc)
	if err := s.setTierWeightsLocked(); err != nil {
		s.log.Warn("tier weights", "err", err)
	}
	s.log.Info("scope created", "tenant", id.Tenant, "scope", id.Key(), "tier", tierName, "cgroup", node.Path(), "host_uid", ids.Base)
	return sc, false, nil
}

// Deploy stores a new version of an extension. Workers of older versions
// finish what they do and are replaced as invocations ask for the new one.
// t's user is not used.
func (s *Supervisor) Deploy(t Target, files []BundleFile) (ExtensionInfo, bool, error) {
	tenant, env, name := string(t.Tenant()), t.Environment(), t.Extension()
	info, unchanged, err := s.store.Deploy(tenant, env, name, files)
	if err == nil && !unchanged {
		s.log.Info("extension deployed", "tenant", tenant, "environment", env, "extension", name,
			"version", info.Version, "digest", info.Digest)
	}
	return info, unchanged, err
}

// RemoveExtension removes t's extension and stops its workers (t's user
// is not used).
func (s *Supervisor) RemoveExtension(t Target) error {
	tenant, env, name := string(t.Tenant()), t.Environment(), t.Extension()
	if err := s.store.Remove(tenant, env, name); err != nil {
		return err
	}
	for _, sc := range s.scopes.snapshot(func(sc *scope) bool { return sc.id.Tenant == tenant }) {
		for _, w := range sc.workerList() {
			if w.ext.Name == name && w.ext.Environment == env {
				s.retire(sc, w, "extension removed")
				go w.stop()
			}
		}
	}
	s.log.Info("extension removed", "tenant", tenant, "environment", env, "extension", name)
	return nil
}

// Extensions lists current extensions of the tenants allow accepts.
func (s *Supervisor) Extensions(allow func(string) bool) ([]ExtensionInfo, error) {
	return s.store.List(allow)
}

// ScopeInfo is a snapshot of one scope.
type ScopeInfo struct {
	ID            ScopeID
	Tier          string
	ThrottleLevel int    // the noisy-neighbour controller's step (0: none)
	NetworkAddr   string // the scope's address on scoped's bridge (egress only)
	Cgroup        string
	HostUID       uint32
	Limits        cgroups.Limits
	Stats         cgroups.Stats
	Workers       []WorkerInfo
	Usage         Usage
}

// Usage is what a scope used since it was created (totals).
type Usage struct {
	Source                     string // "ebpf" or "cgroupfs"
	CPU                        time.Duration
	RunqBuckets                []uint64 // bucket i: waits in [2^i, 2^(i+1)) ns
	RunqCount                  uint64
	RunqSum                    time.Duration
	Preemptions                uint64
	PreemptedBy                map[string]uint64 // other scope key → count
	NetRxBytes, NetTxBytes     uint64
	NetRxPackets, NetTxPackets uint64
	Invocations                int64
	Time                       time.Time
}

// WorkerInfo is a snapshot of one worker.
type WorkerInfo struct {
	ID, Extension, Version string
	Pid                    int
	Started                time.Time
	Invocations            int64
	InFlight               int32
	Cgroup                 string
}

// Scopes returns snapshots of the live scopes of the tenants allow accepts.
func (s *Supervisor) Scopes(allow func(string) bool) []ScopeInfo {
	scopes := s.scopes.snapshot(func(sc *scope) bool { return allow(sc.id.Tenant) })
	out := make([]ScopeInfo, 0, len(scopes))
	for _, sc := range scopes {
		out = append(out, s.info(sc))
	}
	slices.SortFunc(out, func(a, b ScopeInfo) int { return strings.Compare(a.ID.Key(), b.ID.Key()) })
	return out
}

// Scope returns one scope's snapshot.
func (s *Supervisor) Scope(key string) (ScopeInfo, error) {
	sc, ok := s.scopes.get(key)
	if !ok {
		return ScopeInfo{}, fmt.Errorf("%w: no live scope %q", ErrNotFound, key)
	}
	return s.info(sc), nil
}

func (s *Supervisor) info(sc *scope) ScopeInfo {
	st, _ := sc.node.Stats()
	st.OOMKills += sc.oomLost.Load()
	sc.mu.Lock()
	limits := sc.limits
	sc.mu.Unlock()
	info := ScopeInfo{ID: sc.id, Tier: sc.tier, Cgroup: sc.node.Path(), HostUID: sc.ids.Base, Limits: limits, Stats: st,
		ThrottleLevel: s.ctl.level(sc.id.Key())}
	sc.netMu.Lock()
	if sc.net != nil {
		info.NetworkAddr = sc.net.Addr().String()
	}
	sc.netMu.Unlock()
	info.Usage = s.usage(sc, st)
	for _, w := range sc.workerList() {
		info.Workers = append(info.Workers, WorkerInfo{
			ID: w.id, Extension: w.ext.Name, Version: w.ext.Version, Pid: w.pid(), Started: w.started,
			Invocations: w.invocations.Load(), InFlight: w.inFlight.Load(), Cgroup: sc.node.Path() + "/" + w.id,
		})
	}
	slices.SortFunc(info.Workers, func(a, b WorkerInfo) int { return strings.Compare(a.ID, b.ID) })
	return info
}

// Logs returns the kept lines of the scopes matching the filter, and when
// follow is set a channel of new lines and a function to stop following.
func (s *Supervisor) Logs(allow func(string) bool, scopeKey, extension string, tail int, follow bool) ([]LogLine, <-chan LogLine, func()) {
	var rings []*logRing
	for _, sc := range s.scopes.snapshot(func(sc *scope) bool {
		return allow(sc.id.Tenant) && (scopeKey == "" || sc.id.Key() == scopeKey)
	}) {
		rings = append(rings, sc.ring)
	}
	keep := func(l LogLine) bool { return extension == "" || l.Extension == extension }
	var lines []LogLine
	var chans []chan LogLine
	for _, r := range rings {
		kept, ch := r.snapshot(follow)
		for _, l := range kept {
			if keep(l) {
				lines = append(lines, l)
			}
		}
		if ch != nil {
			chans = append(chans, ch)
		}
	}
	slices.SortStableFunc(lines, func(a, b LogLine) int { return a.Time.Compare(b.Time) })
	if tail > 0 && len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	if !follow {
		return lines, nil, func() {}
	}
	out := make(chan LogLine, 256)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, ch := range chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case l := <-ch:
					if keep(l) {
						select {
						case out <- l:
						default:
						}
					}
				case <-done:
					return
				}
			}
		}()
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			close(done)
			wg.Wait()
			for i, r := range rings {
				if i < len(chans) {
					r.unfollow(chans[i])
				}
			}
		})
	}
	return lines, out, stop
}
