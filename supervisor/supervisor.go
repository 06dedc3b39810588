package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/control"
	"github.com/scoped-io/scoped/internal/ident"
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
	loops   loops
	stopped atomic.Bool // Stop was called

	metrics *metrics.Registry
	meter   *meter
	acct    *accountant
	health  healthState // see Health

	// The parts New wires, each owning its lock (and loop; see Recover).
	inv    *invoker   // runs invocations, over the scopes' pools
	keeper *keeper    // makes and removes the live scopes
	net    *networks  // egress networking
	ctl    *throttler // the noisy-neighbour controller
	reap   *reaper    // idle workers and scopes
	fleet  *fleetLink // this node of a fleet ([fleet]; nil: a single host)
}

// New prepares a supervisor: it checks the configuration, opens the
// extension store and the cgroup root. Nothing runs until Recover.
func New(cfg Config, log *slog.Logger) (*Supervisor, error) {
	return newSupervisor(cfg, log, func(string) (*cgroups.Tree, error) { return openCgroups(&cfg, log) })
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
	warnMemory(&cfg, tree, log)
	if err := setTenantsMemory(&cfg, tree); err != nil {
		return nil, err
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
	s.acct = newAccountant(tree, s.cfg.Load, s.scopes.find, s.metrics, log)
	s.meter = newMeter(meterDeps{conf: s.cfg.Load, tree: tree, scopes: s.scopes.snapshot, acct: s.acct,
		metrics: s.metrics, log: log, alive: &s.health.meter})
	s.gate = newGate(s.meter.checkCaps)
	s.wire()
	if cfg.Fleet.Enabled() {
		s.fleet = newFleetLink(s.fleetDeps())
		s.inv.fleetGet = s.fleet.extension
	}
	s.cfg.Store(&cfg)
	return s, nil
}

// wire makes the parts of s from its fields, each given what it uses.
func (s *Supervisor) wire() {
	s.net = newNetworks(s.conf, s.log, s.tenants, s.tree)
	s.keeper = newKeeper(&keeper{conf: s.conf, log: s.log, tree: s.tree, ids: s.ids, scopes: &s.scopes, metrics: s.metrics,
		net: s.net, sandboxDir: s.sandboxDir, tierOf: s.tierOf, track: s.acct.track, untrack: s.acct.untrack, flush: s.meter.flush})
	s.ctl = &throttler{conf: s.conf, log: s.log, source: func() control.CounterReader { return s.acct },
		scopes: &s.scopes, tree: s.tree, metrics: s.metrics}
	s.inv = &invoker{cfg: &s.cfg, log: s.log, pluginLog: s.pluginLog, store: s.store, gate: s.gate, scopes: &s.scopes,
		scopeFor: s.keeper.scopeFor, tierOf: s.tierOf, network: s.net.worker, starter: s.starter, metrics: s.metrics, meter: s.meter,
		sandboxDir: s.sandboxDir, socketDir: s.socketDir}
	s.reap = newReaper(&reaper{conf: s.conf, log: s.log, scopes: &s.scopes, gate: s.gate, store: s.store, tierOf: s.tierOf,
		acquire: s.inv.acquire, release: s.inv.release, retire: s.inv.retire, remove: s.keeper.removeScopes, alive: &s.health.reaper})
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
		cfg.CgroupRoot != old.CgroupRoot || cfg.CgroupDelegate != old.CgroupDelegate || cfg.SupervisorCPUWeight != old.SupervisorCPUWeight ||
		cfg.CgroupFavorDynMods != old.CgroupFavorDynMods ||
		cfg.Scope.IDBase != old.Scope.IDBase || cfg.Scope.IDSlots != old.Scope.IDSlots ||
		cfg.Metering.Enabled != old.Metering.Enabled || cfg.Metering.Window != old.Metering.Window {
		return fmt.Errorf("%w: socket, state_dir, runtime_dir, cgroup_root, cgroup_delegate, supervisor_cpu_weight, cgroup_favordynmods, the id range and metering's enabled and window change only with a restart", ErrConfig)
	}
	if err := checkAssignments(&cfg, s.tenants.assignments()); err != nil {
		return err
	}
	if err := checkFleetReload(old, &cfg); err != nil {
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
	warnMemory(&cfg, s.tree, s.log)
	err := errors.Join(setTenantsMemory(&cfg, s.tree), s.keeper.applyTiers())
	if s.acct.opened() {
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
	if s.fleet != nil {
		if err := s.fleet.setTenant(tenant, tier, allow); err != nil {
			return TenantInfo{}, err
		}
	}
	if err := s.tenants.assign(tenant, tier, allow, time.Now()); err != nil {
		return TenantInfo{}, err
	}
	s.log.Info("tenant tier set", "tenant", tenant, "tier", tier, "was", old)
	if allow != nil {
		s.log.Info("tenant egress allow-list set", "tenant", tenant, "allow", strings.Join(*allow, " "))
	}
	if err := s.keeper.applyTiers(); err != nil {
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
	l.add("metering ledger", part{start: func(context.Context) error { return s.meter.open() }, stop: s.meter.close})
	l.add("cgroups", part{start: s.cleanCgroups})
	if s.conf().CgroupFavorDynMods {
		l.add("cgroup favordynmods", s.favorDynMods())
	}
	l.add("network", s.net)
	l.add("runtime directories", part{start: s.makeRuntimeDirs, stop: func() error { return os.RemoveAll(s.socketDir) }})
	l.add("accounting", s.acct)
	l.add("metering export", newExporters(s.cfg.Load, s.meter, s.log))
	// Stopping the scopes removes them all: after the loops below, before
	// what their removal still uses (the ledger, accounting, networks).
	l.add("scopes", s.keeper)
	l.add("controller", s.ctl)
	l.add("metering loop", s.meter)
	l.add("reaper", s.reap)
	l.add("sampler", newSampler(s.cfg.Load, s.scopes.snapshot, s.acct, s.metrics, s.ctl.publish))
	if s.fleet != nil {
		l.add("fleet", s.fleet) // last: the node leaves the fleet first
	}
	return l.Start(context.Background())
}

// cleanSandboxes removes the sandboxes, and their processes, a previous
// run left.
func (s *Supervisor) cleanSandboxes(context.Context) error {
	asked := sandbox.Launcher(s.conf().Scope.Launcher)
	switch l, err := sandbox.DefaultLauncher(); {
	case asked == sandbox.LauncherNative && err != nil:
		return fmt.Errorf("[scope] launcher = %q: %w", asked, err)
	case asked != "":
		s.log.Info("sandbox launcher", "launcher", asked)
	case err != nil:
		s.log.Warn("sandbox launcher: libcontainer, the native one is not available", "launcher", l, "err", err)
	default:
		s.log.Info("sandbox launcher", "launcher", l)
	}
	if n, err := sandbox.Cleanup(s.sandboxDir); err != nil {
		return fmt.Errorf("remove sandboxes left by a previous run: %w", err)
	} else if n > 0 {
		s.log.Warn("removed sandboxes left by a previous run", "count", n)
	}
	return nil
}

// favorDynMods turns the host's cgroup2 favordynmods on while the daemon
// runs (cgroup_favordynmods), and back off at stop if it was off.
func (s *Supervisor) favorDynMods() part {
	var restore func() error
	return part{
		start: func(context.Context) error {
			var err error
			if restore, err = cgroups.FavorDynMods(); err != nil {
				return fmt.Errorf("cgroup_favordynmods: %w", err)
			}
			s.log.Info("cgroup2 favordynmods on while the daemon runs (host-wide: cgroup moves skip the RCU wait, forks and exits cost a little more)")
			return nil
		},
		stop: func() error {
			if restore == nil {
				return nil
			}
			return restore()
		},
	}
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
	s.keeper.grace.Store(int64(grace))
	err := s.loops.Stop()
	if s.tree != nil {
		err = errors.Join(err, s.tree.Close())
	}
	return err
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

// Deploy stores a new version of an extension. Workers of older versions
// finish what they do and are replaced as invocations ask for the new one.
// t's user is not used.
func (s *Supervisor) Deploy(t Target, files []BundleFile) (ExtensionInfo, bool, error) {
	tenant, env, name := string(t.Tenant()), t.Environment(), t.Extension()
	deploy := s.store.Deploy
	if s.fleet != nil {
		deploy = s.fleet.deploy
	}
	info, unchanged, err := deploy(tenant, env, name, files)
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
	if s.fleet != nil {
		return s.fleet.remove(tenant, env, name)
	}
	return s.removeLocal(tenant, env, name)
}

// removeLocal removes an extension from this node's store and stops its
// workers.
func (s *Supervisor) removeLocal(tenant, env, name string) error {
	if err := s.store.Remove(tenant, env, name); err != nil {
		return err
	}
	for _, sc := range s.scopes.snapshot(func(sc *scope) bool { return sc.id.Tenant == tenant }) {
		for _, w := range sc.workerList() {
			if w.ext.Name == name && w.ext.Environment == env {
				s.inv.retire(sc, w, "extension removed")
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
	info.Usage = s.acct.scopeUsage(sc, st)
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
