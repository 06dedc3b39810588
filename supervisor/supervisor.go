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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/accounting"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/control"
	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/internal/parallel"
	"github.com/scoped-io/scoped/metrics"
	"github.com/scoped-io/scoped/netns"
	workerv1 "github.com/scoped-io/scoped/proto/worker/v1"
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

	mu      sync.Mutex
	scopes  map[string]*scope // by ScopeID.Key()
	tierCPU map[string]uint64 // CPU weight last set on each tier node
	// throttled holds the weights the noisy-neighbour controller set on
	// scopes below their base, by scope key.
	throttled map[string]uint64
	stopping  bool
	inflight  sync.WaitGroup

	invocations atomic.Int64
	reaperStop  chan struct{}
	reaperDone  chan struct{}

	metrics       *metrics.Registry
	meter         *meter
	exports       *exporters
	meterStop     chan struct{}
	meterDone     chan struct{}
	ctlMu         sync.Mutex
	ctl           *control.Controller
	ctlStop       func()
	acct          accounting.Source
	samplerCancel context.CancelFunc
	samplerDone   chan struct{}
	netMu         sync.Mutex
	net           *netns.Manager // nil: no tier has egress (yet)
	health        healthState    // see Health
	// removing holds the scopes that left the registry and are being
	// removed, by cgroup path, each with a channel closed once it is gone
	// (see leaveLocked); guarded by mu.
	removing map[string]chan struct{}
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
	if cfg.Log.Level == "debug" {
		level = hclog.Debug
	}
	s := &Supervisor{
		log:         log,
		pluginLog:   hclog.New(&hclog.LoggerOptions{Name: "go-plugin", Level: level, Output: os.Stderr, JSONFormat: cfg.Log.Format == "json"}),
		store:       store,
		tenants:     tenants,
		tree:        tree,
		ids:         ids,
		sandboxDir:  filepath.Join(cfg.RuntimeDir, "sandboxes"),
		socketDir:   filepath.Join(cfg.RuntimeDir, "sockets"),
		scopes:      map[string]*scope{},
		tierCPU:     map[string]uint64{},
		throttled:   map[string]uint64{},
		reaperStop:  make(chan struct{}),
		reaperDone:  make(chan struct{}),
		metrics:     metrics.New(),
		samplerDone: make(chan struct{}),
	}
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
	s.netMu.Lock()
	running := s.net != nil
	s.netMu.Unlock()
	if running && cfg.Network != old.Network {
		return fmt.Errorf("%w: [network] changes only with a restart while egress scopes run", ErrConfig)
	}
	s.mu.Lock()
	for _, sc := range s.scopes {
		if _, ok := cfg.Tiers[sc.tier]; !ok {
			s.mu.Unlock()
			return fmt.Errorf("%w: tier %q has live scopes (%s); keep it until they are gone", ErrConfig, sc.tier, sc.id.Key())
		}
	}
	s.mu.Unlock()
	// The controller restarts with the new configuration: stopping it
	// restores the scopes it throttled, before the tiers' limits apply.
	s.stopControl()
	s.cfg.Store(&cfg)
	s.store.Configure(cfg.Limits, s.log)
	err := s.applyTiers()
	if s.acct != nil {
		err = errors.Join(err, s.startControl())
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
	s.mu.Lock()
	scopes := make([]*scope, 0, len(s.scopes))
	for _, sc := range s.scopes {
		scopes = append(scopes, sc)
	}
	s.mu.Unlock()
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
			s.mu.Lock()
			tl.CPUWeight = s.tenantWeightLocked(name, sc.id.Tenant, t.CPUWeight)
			s.mu.Unlock()
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
	s.mu.Lock()
	errs = append(errs, s.setTierWeightsLocked())
	s.mu.Unlock()
	errs = append(errs, s.updateNetworks())
	return errors.Join(errs...)
}

// setTierWeightsLocked sets each tier node's CPU weight to the sum of its
// live tenants' weights (see tierWeights). Callers hold s.mu.
func (s *Supervisor) setTierWeightsLocked() error {
	c := s.conf()
	sums := map[string]uint64{}
	seen := map[[2]string]bool{}
	for _, sc := range s.scopes {
		k := [2]string{sc.tier, sc.id.Tenant}
		if seen[k] {
			continue
		}
		seen[k] = true
		sums[sc.tier] += c.Tiers[sc.tier].CPUWeight
	}
	var errs []error
	for name, w := range tierWeights(sums) {
		if s.tierCPU[name] == w {
			continue
		}
		if _, err := s.tree.Node(cgroups.Limits{CPUWeight: w}, name); err != nil {
			errs = append(errs, err)
			continue
		}
		s.tierCPU[name] = w
	}
	return errors.Join(errs...)
}

// detachScope takes sc out of the registry, so that the next invocation
// starts a new scope (in the tenant's tier now), and removes it: at once
// when kill is set, else once its invocations in flight are done.
func (s *Supervisor) detachScope(sc *scope, kill bool) {
	s.mu.Lock()
	if s.scopes[sc.id.Key()] != sc {
		s.mu.Unlock()
		return
	}
	s.leaveLocked(sc)
	s.mu.Unlock()
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
func (s *Supervisor) SetTenantTier(tenant, tier string, allow *[]string) (TenantInfo, error) {
	if err := ident.Check("tenant", tenant); err != nil {
		return TenantInfo{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := ident.Check("tier", tier); err != nil {
		return TenantInfo{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, ok := s.conf().Tiers[tier]; !ok {
		return TenantInfo{}, fmt.Errorf("%w: tier %q is not configured (tiers: %s)", ErrNotFound, tier,
			strings.Join(slices.Sorted(maps.Keys(s.conf().Tiers)), ", "))
	}
	if allow != nil {
		if _, err := parseAllow(*allow); err != nil {
			return TenantInfo{}, fmt.Errorf("%w: egress allow-list: %w", ErrInvalid, err)
		}
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
	return s.Tenant(tenant), nil
}

// Tenant describes one tenant (known or not: an unknown tenant is in the
// default tier).
func (s *Supervisor) Tenant(tenant string) TenantInfo {
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
	s.mu.Lock()
	for _, sc := range s.scopes {
		live[sc.id.Tenant]++
	}
	s.mu.Unlock()
	assigned := s.tenants.assignments()
	var out []TenantInfo
	for _, t := range tenantNames(assigned, live) {
		if !allow(t) {
			continue
		}
		name, _ := s.tierOf(t)
		rec, ok := assigned[t]
		out = append(out, TenantInfo{Tenant: t, Tier: name, Assigned: ok, Updated: rec.Updated, Scopes: live[t],
			InFlight: s.tenants.inFlight(t), EgressAllow: rec.EgressAllow})
	}
	return out
}

// Recover removes what a crashed daemon left behind — sandboxes and their
// processes, cgroups, worker sockets — and starts the idle reaper.
func (s *Supervisor) Recover() error {
	if n, err := sandbox.Cleanup(s.sandboxDir); err != nil {
		return fmt.Errorf("remove sandboxes left by a previous run: %w", err)
	} else if n > 0 {
		s.log.Warn("removed sandboxes left by a previous run", "count", n)
	}
	// The ledger first: what the dead scopes used since the last flush is
	// still in their cgroups' counters until the cleanup removes them.
	if err := s.openMetering(); err != nil {
		return err
	}
	if n, err := s.tree.Cleanup(); err != nil {
		return fmt.Errorf("remove cgroups left by a previous run: %w", err)
	} else if n > 0 {
		s.log.Warn("removed cgroups left by a previous run", "count", n)
	}
	if err := s.openNetwork(); err != nil {
		return err
	}
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
	if err := s.openAccounting(); err != nil {
		return err
	}
	if err := s.startControl(); err != nil {
		return err
	}
	if s.meter != nil {
		s.meterStop, s.meterDone = make(chan struct{}), make(chan struct{})
		go s.meterLoop(s.meterStop, s.meterDone)
	}
	if err := s.startExporters(); err != nil {
		return err
	}
	go s.reaper()
	ctx, cancel := context.WithCancel(context.Background())
	s.samplerCancel = cancel
	go s.sampler(ctx)
	return nil
}

// Stop refuses new invocations, waits up to grace for the ones in flight,
// then kills every worker and removes every scope's cgroup and sandbox.
func (s *Supervisor) Stop(grace time.Duration) error {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return nil
	}
	s.stopping = true
	s.mu.Unlock()
	close(s.reaperStop)
	<-s.reaperDone
	s.stopControl()
	if s.meterStop != nil {
		close(s.meterStop)
		<-s.meterDone
	}
	if s.samplerCancel != nil {
		s.samplerCancel()
		<-s.samplerDone
	}

	drained := make(chan struct{})
	go func() { s.inflight.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(grace):
		s.log.Warn("grace period over, killing workers with invocations in flight", "grace", grace)
	}
	s.mu.Lock()
	scopes := make([]*scope, 0, len(s.scopes))
	for _, sc := range s.scopes {
		scopes = append(scopes, sc)
	}
	s.scopes = map[string]*scope{}
	s.mu.Unlock()
	// The tenant and tier nodes go with the tree's cleanup below.
	errs := s.removeScopes(scopes)
	if _, err := sandbox.Cleanup(s.sandboxDir); err != nil {
		errs = append(errs, err)
	}
	if _, err := s.tree.Cleanup(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, s.closeNetwork())
	if s.acct != nil {
		errs = append(errs, s.acct.Close())
	}
	s.stopExporters()
	if s.meter != nil {
		errs = append(errs, s.meter.ledger.Close())
	}
	errs = append(errs, s.tree.Close(), os.RemoveAll(s.sandboxDir), os.RemoveAll(s.socketDir))
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

// leaveLocked takes sc out of the registry to be removed (removeScopes):
// until its removal is over, a new scope of the same cgroup path waits
// (scopeFor), since removing the old node would take the new one with it.
// Callers hold s.mu.
func (s *Supervisor) leaveLocked(sc *scope) {
	if s.scopes[sc.id.Key()] == sc {
		delete(s.scopes, sc.id.Key())
	}
	if s.removing == nil {
		s.removing = map[string]chan struct{}{}
	}
	if _, ok := s.removing[sc.node.Path()]; !ok {
		s.removing[sc.node.Path()] = make(chan struct{})
	}
}

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
	s.mu.Lock()
	stopping := s.stopping
	s.mu.Unlock()
	_ = parallel.ForEach(idx, removeParallel, func(i int) error {
		errs[i] = s.removeScopeNode(scopes[i], stopping)
		return nil
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sc := range scopes {
		if ch, ok := s.removing[sc.node.Path()]; ok {
			delete(s.removing, sc.node.Path())
			close(ch)
		}
	}
	if stopping {
		return errs
	}
	// A tenant node goes when its last scope in its tier goes.
	done := map[[2]string]bool{}
	for _, sc := range scopes {
		k := [2]string{sc.tier, sc.id.Tenant}
		if done[k] || s.tenantHasScopesLocked(sc.tier, sc.id.Tenant) {
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
	return errs
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
	if err := s.closeScopeNetwork(sc); err != nil {
		s.log.Error("network of a scope", "scope", sc.id.Key(), "err", err)
	}
	s.mu.Lock()
	_, live := s.scopes[sc.id.Key()]
	if !live {
		delete(s.throttled, sc.id.Key())
	}
	s.mu.Unlock()
	if !live {
		// A successor in another tier keeps the key's series.
		s.metrics.RemoveScope(sc.id.Key())
	}
	err := sc.node.Remove()
	s.ids.Release(sc.id.Key())
	return err
}

func (s *Supervisor) tenantHasScopesLocked(tier, tenant string) bool {
	for _, sc := range s.scopes {
		if sc.id.Tenant == tenant && sc.tier == tier {
			return true
		}
	}
	return false
}

// scopeFor returns the live scope of id with one invocation counted in its
// active (the caller takes it back; an active scope is never reclaimed),
// creating its cgroup node and taking a host id range on first use.
func (s *Supervisor) scopeFor(id ScopeID) (*scope, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var tierName string
	var tier Tier
	for again := true; again; {
		if s.stopping {
			return nil, ErrStopping
		}
		if sc, ok := s.scopes[id.Key()]; ok {
			sc.active.Add(1)
			return sc, nil
		}
		tierName, tier = s.tierOf(id.Tenant)
		var err error
		if again, err = s.makeRoomLocked(id, tierName, tier); err != nil {
			return nil, err
		}
	}
	tl := tier.tenantLimits()
	tl.CPUWeight = s.tenantWeightLocked(tierName, id.Tenant, tier.CPUWeight)
	if _, err := s.tree.Node(tl, tierName, id.Tenant); err != nil {
		return nil, fmt.Errorf("cgroup of tenant %s: %w", id.Tenant, err)
	}
	limits := tier.scopeLimits()
	node, err := s.tree.Node(limits, tierName, id.Tenant, id.Name)
	if err != nil {
		return nil, fmt.Errorf("cgroup of scope %s: %w", id.Key(), err)
	}
	ids, err := s.ids.Acquire(id.Key())
	if err != nil {
		_ = node.Remove()
		return nil, noSlotError(id, err)
	}
	sc := &scope{
		id: id, tier: tierName, node: node, ids: ids, limits: limits, created: time.Now(), lastUsed: time.Now(),
		ring:    newLogRing(s.conf().Scope.LogLines),
		workers: map[string][]*worker{}, starting: map[string]int{}, changed: make(chan struct{}),
	}
	if st, err := node.Stats(); err == nil {
		sc.oomSeen = st.OOMKills
	}
	s.track(sc)
	s.scopes[id.Key()] = sc
	if err := s.setTierWeightsLocked(); err != nil {
		s.log.Warn("tier weights", "err", err)
	}
	s.log.Info("scope created", "tenant", id.Tenant, "scope", id.Key(), "tier", tierName, "cgroup", node.Path(), "host_uid", ids.Base)
	sc.active.Add(1)
	return sc, nil
}

// InvokeRequest is one invocation as the API edge hands it over.
type InvokeRequest struct {
	Target
	Version  string
	Payload  []byte
	Metadata map[string]string
	Timeout  time.Duration // 0: the default
}

// InvokeResult is what an invocation returns.
type InvokeResult struct {
	Result       []byte
	InvocationID string
	Scope        string
	Worker       string
	Cold         bool
	Duration     time.Duration
	Queued       time.Duration
	ColdStart    *ColdStart // the phases of the worker's start when Cold, else nil
}

// checkTargetFields validates every request field that can reach a path.
func checkTargetFields(t Target, version string) error {
	fields := [][2]string{{"tenant", t.Tenant}, {"environment", t.Environment}, {"extension", t.Extension}}
	if t.User != "" {
		fields = append(fields, [2]string{"user", t.User})
	}
	if version != "" {
		fields = append(fields, [2]string{"version", version})
	}
	for _, f := range fields {
		if err := ident.Check(f[0], f[1]); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if t.User == AnonymousUser {
		return fmt.Errorf("%w: user %q is reserved for requests without a user", ErrInvalid, t.User)
	}
	return nil
}

// Invoke runs one invocation.
func (s *Supervisor) Invoke(ctx context.Context, req InvokeRequest) (_ InvokeResult, err error) {
	start := time.Now()
	if err := checkTargetFields(req.Target, req.Version); err != nil {
		return InvokeResult{}, err
	}
	if int64(len(req.Payload)) > s.conf().Limits.MaxPayload {
		return InvokeResult{}, fmt.Errorf("%w: payload of %d bytes, at most %d are allowed", ErrTooLarge, len(req.Payload), s.conf().Limits.MaxPayload)
	}
	if len(req.Metadata) > 64 {
		return InvokeResult{}, fmt.Errorf("%w: %d metadata entries, at most 64 are allowed", ErrTooLarge, len(req.Metadata))
	}
	for k, v := range req.Metadata {
		if len(k) > 128 || len(v) > 4096 || k == "" {
			return InvokeResult{}, fmt.Errorf("%w: metadata key %.40q: keys are 1..128 bytes, values at most 4096", ErrInvalid, k)
		}
	}
	if req.Timeout < 0 {
		return InvokeResult{}, fmt.Errorf("%w: negative timeout", ErrInvalid)
	}
	ext, err := s.store.Get(req.Tenant, req.Environment, req.Extension, req.Version)
	if err != nil {
		return InvokeResult{}, err
	}
	tierName, tier := s.tierOf(req.Tenant)
	timeout, longest := tier.timeouts(s.conf().Limits)
	if req.Timeout > 0 {
		timeout = min(req.Timeout, longest)
	}
	if err := s.checkCaps(req.Tenant, tierName, tier, time.Now()); err != nil {
		s.metrics.IncRefused(tierName, refusalOf(err))
		return InvokeResult{}, err
	}
	done, err := s.tenants.admit(req.Tenant, tier, time.Now())
	if err != nil {
		s.metrics.IncRefused(tierName, refusalOf(err))
		return InvokeResult{}, err
	}
	defer done()

	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return InvokeResult{}, ErrStopping
	}
	s.inflight.Add(1)
	s.mu.Unlock()
	defer s.inflight.Done()

	id := s.conf().Isolation.scopeOf(req.Target)
	sc, err := s.scopeFor(id)
	if err != nil {
		return InvokeResult{}, err
	}
	defer sc.active.Add(-1) // scopeFor counted it
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	invID := newInvocationID()
	var cold bool
	defer func() {
		s.metrics.ObserveInvocation(sc.labels(), req.Extension, resultOf(err), time.Since(start), cold)
		sc.countInvocation(req.Extension, time.Since(start), cold)
	}()
	log := s.log.With("tenant", req.Tenant, "scope", id.Key(), "invocation", invID, "extension", ext.Name)

	w, cold, err := s.acquire(ctx, sc, ext, tier.maxWorkers(s.conf().Pool))
	if err != nil {
		if errors.Is(err, ErrDeadline) || errors.Is(ctx.Err(), context.DeadlineExceeded) && !errors.Is(err, ErrBusy) {
			return InvokeResult{}, fmt.Errorf("%w after %s while waiting for a worker: %w", ErrDeadline, timeout, err)
		}
		return InvokeResult{}, err
	}
	queued := time.Since(start)
	if w.inFlight.Add(1) == 1 {
		w.current.Store(invID)
	} else {
		w.current.Store("")
	}
	w.lastUsed.Store(time.Now().UnixNano())
	deadline, _ := ctx.Deadline()
	callCtx, cpuCheck := ctx, func() (time.Duration, bool) { return 0, false }
	if tier.CPUTime.Duration > 0 {
		callCtx, cpuCheck = s.watchCPU(ctx, sc, w, tier.CPUTime.Duration)
	}
	resp, err := w.rpc.Invoke(callCtx, &workerv1.InvokeRequest{
		InvocationId: invID, Extension: ext.Name, Payload: req.Payload,
		Metadata: req.Metadata, DeadlineMs: time.Until(deadline).Milliseconds(),
	})
	cpuUsed, overCPU := cpuCheck()
	if err != nil && ctx.Err() == nil {
		// gRPC sends the deadline along: the worker's side of it may end
		// the stream (RST_STREAM CANCEL) just before this side's timer
		// fires. An error that close to the deadline is the deadline.
		if left := time.Until(deadline); left < 100*time.Millisecond {
			select {
			case <-ctx.Done():
			case <-time.After(left + 10*time.Millisecond):
			}
		}
	}
	if w.inFlight.Add(-1) == 0 {
		w.current.Store("")
	}
	w.invocations.Add(1)
	w.lastUsed.Store(time.Now().UnixNano())
	s.invocations.Add(1)
	sc.invocations.Add(1)
	execOOM := w.exec != nil && s.endExec(sc, w, log) // kills what the program left

	res := InvokeResult{InvocationID: invID, Scope: id.Key(), Worker: w.id, Cold: cold, Queued: queued}
	if cold {
		res.ColdStart = w.coldStart(start)
	}
	switch {
	case overCPU:
		// The worker may still be computing: recycle it.
		s.retire(sc, w, "cpu time")
		<-w.slots
		go w.stop()
		log.Warn("invocation over its cpu time limit, worker recycled", "worker", w.id, "cpu", cpuUsed, "limit", tier.CPUTime.Duration)
		return res, fmt.Errorf("%w: %s used %s of CPU, its tier %s allows %s per invocation (the worker was recycled)",
			ErrCPUTime, ext.Name, cpuUsed.Round(100*time.Microsecond), tierName, tier.CPUTime.Duration)
	case err == nil:
		s.release(sc, w)
	case ctx.Err() != nil && w.exec != nil && !w.retired.Load() && !w.exited():
		// endExec killed the program and all it started: the worker serves on.
		s.release(sc, w)
		if ctx.Err() == context.DeadlineExceeded {
			log.Warn("invocation deadline exceeded, its processes were killed", "worker", w.id, "timeout", timeout)
			return res, fmt.Errorf("%w: %s after %s (its processes were killed)", ErrDeadline, ext.Name, timeout)
		}
		return res, fmt.Errorf("%w: %w (its processes were killed)", ErrDeadline, ctx.Err())
	case ctx.Err() == context.DeadlineExceeded:
		// The worker may be stuck in the handler: kill it and start afresh.
		s.retire(sc, w, "deadline")
		<-w.slots
		go w.stop()
		log.Warn("invocation deadline exceeded, worker killed", "worker", w.id, "timeout", timeout)
		return res, fmt.Errorf("%w: %s after %s (the worker was killed and will be replaced)", ErrDeadline, ext.Name, timeout)
	case status.Code(err) == codes.ResourceExhausted && !w.exited():
		// The result was larger than the client accepts; the worker is fine.
		s.release(sc, w)
		return res, fmt.Errorf("%w: the result of %s exceeds %d bytes", ErrTooLarge, ext.Name, s.conf().Limits.MaxResult)
	case ctx.Err() != nil:
		// The caller went away; the worker may still be busy.
		s.retire(sc, w, "caller cancelled")
		<-w.slots
		go w.stop()
		return res, fmt.Errorf("%w: %w", ErrDeadline, ctx.Err())
	default:
		<-w.slots
		err = s.failure(sc, w, fmt.Errorf("%w: the worker of %s died during the call: %v", ErrWorker, ext.Name, status.Convert(err).Message()))
		if execOOM { // endExec counted the OOM kill, of the worker itself
			err = execOOMError(sc, ext)
		}
		return res, err
	}
	res.Duration = time.Since(start)
	if resp.GetError() != "" {
		if execOOM {
			return res, execOOMError(sc, ext)
		}
		return res, fmt.Errorf("%w: %s", ErrHandler, truncate(resp.GetError(), 4096))
	}
	if int64(len(resp.GetResult())) > s.conf().Limits.MaxResult {
		return res, fmt.Errorf("%w: the result of %s exceeds %d bytes", ErrTooLarge, ext.Name, s.conf().Limits.MaxResult)
	}
	res.Result = resp.GetResult()
	log.Debug("invocation done", "worker", w.id, "cold", cold, "duration", res.Duration)
	return res, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

var invSeq atomic.Uint64

func newInvocationID() string {
	return fmt.Sprintf("i%x-%x", time.Now().UnixNano()&0xffffffffff, invSeq.Add(1))
}

// reaper stops idle workers and removes scopes that have none left, and
// keeps warm_min workers per extension of live scopes.
func (s *Supervisor) reaper() {
	defer close(s.reaperDone)
	beat(&s.health.reaper)
	defer s.health.reaper.Store(0)
	tick := time.NewTicker(max(s.conf().Pool.IdleTimeout.Duration/4, 100*time.Millisecond))
	defer tick.Stop()
	alive := time.NewTicker(heartbeatEvery)
	defer alive.Stop()
	for {
		select {
		case <-s.reaperStop:
			return
		case <-alive.C:
			beat(&s.health.reaper)
			continue
		case <-tick.C:
		}
		beat(&s.health.reaper)
		idle := s.conf().Pool.IdleTimeout.Duration
		s.tenants.prune(func(tenant string) Tier { _, t := s.tierOf(tenant); return t }, time.Now())
		s.store.PrunePending()
		s.mu.Lock()
		scopes := make([]*scope, 0, len(s.scopes))
		for _, sc := range s.scopes {
			scopes = append(scopes, sc)
		}
		s.mu.Unlock()
		var gone []*scope
		for _, sc := range scopes {
			beat(&s.health.reaper)
			for _, w := range sc.idleWorkers(idle, s.conf().Pool.WarmMin) {
				s.retire(sc, w, "idle")
				go w.stop()
			}
			s.warm(sc)
			sc.mu.Lock()
			empty := len(sc.workers) == 0 && len(sc.starting) == 0 && time.Since(sc.lastUsed) > idle
			sc.mu.Unlock()
			if empty {
				s.mu.Lock()
				// An invocation may have taken it meanwhile (scopeFor
				// counts it in active under s.mu).
				if s.scopes[sc.id.Key()] == sc && !s.stopping && sc.active.Load() == 0 {
					s.leaveLocked(sc)
					gone = append(gone, sc)
				}
				s.mu.Unlock()
			}
			// Idle scopes go removeParallel at a time; each soon after
			// it left the registry.
			if len(gone) == removeParallel {
				s.removeIdle(gone)
				gone = gone[:0]
			}
		}
		s.removeIdle(gone)
	}
}

// removeIdle removes idle scopes that left the registry, and logs it.
func (s *Supervisor) removeIdle(gone []*scope) {
	for i, err := range s.removeScopes(gone) {
		sc := gone[i]
		if err != nil {
			s.log.Error("remove idle scope", "scope", sc.id.Key(), "err", err)
		} else {
			s.log.Info("idle scope removed", "tenant", sc.id.Tenant, "scope", sc.id.Key())
		}
	}
}

// warm starts workers up to warm_min for every extension version that has
// (or had) workers in sc.
func (s *Supervisor) warm(sc *scope) {
	if s.conf().Pool.WarmMin == 0 {
		return
	}
	sc.mu.Lock()
	var need []ExtensionInfo
	for _, ws := range sc.workers {
		live := 0
		for _, w := range ws {
			if !w.retired.Load() {
				live++
			}
		}
		if len(ws) > 0 && live+sc.starting[versionKey(ws[0].ext)] < s.conf().Pool.WarmMin {
			need = append(need, ws[0].ext)
		}
	}
	sc.mu.Unlock()
	for _, ext := range need {
		beat(&s.health.reaper) // a start may take start_timeout
		ctx, cancel := context.WithTimeout(context.Background(), s.conf().Pool.StartTimeout.Duration)
		w, _, err := s.acquire(ctx, sc, ext, s.conf().Tiers[sc.tier].maxWorkers(s.conf().Pool))
		cancel()
		if err == nil {
			s.release(sc, w)
		}
	}
}

// Deploy stores a new version of an extension. Workers of older versions
// finish what they do and are replaced as invocations ask for the new one.
func (s *Supervisor) Deploy(tenant, env, name string, files []BundleFile) (ExtensionInfo, bool, error) {
	info, unchanged, err := s.store.Deploy(tenant, env, name, files)
	if err == nil && !unchanged {
		s.log.Info("extension deployed", "tenant", tenant, "environment", env, "extension", name,
			"version", info.Version, "digest", info.Digest)
	}
	return info, unchanged, err
}

// RemoveExtension removes an extension and stops its workers.
func (s *Supervisor) RemoveExtension(tenant, env, name string) error {
	if err := s.store.Remove(tenant, env, name); err != nil {
		return err
	}
	s.mu.Lock()
	scopes := make([]*scope, 0)
	for _, sc := range s.scopes {
		if sc.id.Tenant == tenant {
			scopes = append(scopes, sc)
		}
	}
	s.mu.Unlock()
	for _, sc := range scopes {
		sc.mu.Lock()
		var victims []*worker
		for _, ws := range sc.workers {
			for _, w := range ws {
				if w.ext.Name == name && w.ext.Environment == env {
					victims = append(victims, w)
				}
			}
		}
		sc.mu.Unlock()
		for _, w := range victims {
			s.retire(sc, w, "extension removed")
			go w.stop()
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
	s.mu.Lock()
	var scopes []*scope
	for _, sc := range s.scopes {
		if allow(sc.id.Tenant) {
			scopes = append(scopes, sc)
		}
	}
	s.mu.Unlock()
	out := make([]ScopeInfo, 0, len(scopes))
	for _, sc := range scopes {
		out = append(out, s.info(sc))
	}
	slices.SortFunc(out, func(a, b ScopeInfo) int { return strings.Compare(a.ID.Key(), b.ID.Key()) })
	return out
}

// Scope returns one scope's snapshot.
func (s *Supervisor) Scope(key string) (ScopeInfo, error) {
	s.mu.Lock()
	sc, ok := s.scopes[key]
	s.mu.Unlock()
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
		ThrottleLevel: s.throttleLevel(sc.id.Key())}
	sc.netMu.Lock()
	if sc.net != nil {
		info.NetworkAddr = sc.net.Addr().String()
	}
	sc.netMu.Unlock()
	info.Usage = s.usage(sc, st)
	sc.mu.Lock()
	for _, ws := range sc.workers {
		for _, w := range ws {
			info.Workers = append(info.Workers, WorkerInfo{
				ID: w.id, Extension: w.ext.Name, Version: w.ext.Version, Pid: w.pid(), Started: w.started,
				Invocations: w.invocations.Load(), InFlight: w.inFlight.Load(), Cgroup: sc.node.Path() + "/" + w.id,
			})
		}
	}
	sc.mu.Unlock()
	slices.SortFunc(info.Workers, func(a, b WorkerInfo) int { return strings.Compare(a.ID, b.ID) })
	return info
}

// Logs returns the kept lines of the scopes matching the filter, and when
// follow is set a channel of new lines and a function to stop following.
func (s *Supervisor) Logs(allow func(string) bool, scopeKey, extension string, tail int, follow bool) ([]LogLine, <-chan LogLine, func()) {
	s.mu.Lock()
	var rings []*logRing
	for key, sc := range s.scopes {
		if allow(sc.id.Tenant) && (scopeKey == "" || key == scopeKey) {
			rings = append(rings, sc.ring)
		}
	}
	s.mu.Unlock()
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
