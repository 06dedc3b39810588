package supervisor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/fleet"
	"github.com/scoped-io/scoped/fleet/bundles"
	"github.com/scoped-io/scoped/fleet/record"
	"github.com/scoped-io/scoped/metrics"
)

// The fleet node: with [fleet] endpoints the daemon is one node of a
// fleet sharing an etcd cluster. fleetLink joins it (membership under a
// lease, the fleet's policy), watches the fleet-wide state and ties it to
// the daemon:
//
//   - tier assignments are written to the fleet first (SetTenantTier), and
//     every node applies the fleet's assignments to its own tenant registry
//     as the watch reports them (a tenant suspended anywhere is refused
//     everywhere within the watch's latency);
//   - a deploy stages the bundle, registers it fleet-wide (the fleet
//     allocates the version, "v<N>") and publishes it locally as that
//     version; the node holds the bundle under its lease;
//   - an invocation of an extension whose fleet-wide current bundle this
//     node lacks fetches it from a node holding it (mutual TLS, digest
//     verified), imports it and holds it, then runs it; concurrent
//     invocations wait for one fetch;
//   - while etcd is unreachable the state is degraded: deploys, removals and
//     tier changes fail with fleet.ErrUnavailable, invocations go on with the
//     last state seen (scoped_fleet_degraded is 1, and it is logged).
//
// Changing [fleet], [isolation] or a tier's placement needs a restart (the
// fleet's policy is checked at join only).

// fleetWriteTimeout bounds one write to the fleet's state.
const fleetWriteTimeout = 10 * time.Second

// fleetFetchTimeout bounds fetching one bundle from other nodes.
const fleetFetchTimeout = 2 * time.Minute

// fleetTick is how often the link checks whether the state is degraded.
const fleetTick = 250 * time.Millisecond

// fleetDeps is what the fleet node uses of the daemon.
type fleetDeps struct {
	conf    func() *Config
	log     *slog.Logger
	metrics *metrics.Registry // scoped_fleet_degraded
	store   *Store            // lookups, fleet deploys, fetched bundles
	tenants *tenantRegistry   // the local assignments the fleet's are applied to
	// applyTiers moves the live scopes of tenants whose tier changed
	// (the keeper's).
	applyTiers func() error
	// removeLocal removes an extension from this node's store and stops
	// its workers.
	removeLocal func(tenant, env, name string) error
	// liveScopes is the number of live scopes, cpuUsage the CPU time of
	// the cgroup root (nil: busy CPUs are not measured): the node's load.
	liveScopes func() int
	cpuUsage   func() (time.Duration, error)
	// spendLimits and splitLimits make the limits fleet-wide (the meter's
	// useFleetLimits, the gate's setFleetNodes); nil, nil and 0, nil
	// make them a single host's again.
	spendLimits func(pub spendPublisher, others fleetSpend)
	splitLimits func(n int, placed map[string]int)
}

// fleetDeps is what s gives its fleet node.
func (s *Supervisor) fleetDeps() fleetDeps {
	d := fleetDeps{conf: s.conf, log: s.log, metrics: s.metrics, store: s.store, tenants: s.tenants,
		applyTiers: s.keeper.applyTiers, removeLocal: s.removeLocal, liveScopes: s.scopes.len,
		spendLimits: s.meter.useFleetLimits, splitLimits: s.gate.setFleetNodes}
	if s.tree != nil {
		root := s.tree.Root()
		d.cpuUsage = func() (time.Duration, error) { return cgroups.CPUUsage(root) }
	}
	return d
}

// fleetLink is the daemon's fleet node, a component started by Recover
// (last: it leaves the fleet first at Stop) when [fleet] is on.
type fleetLink struct {
	fleetDeps

	// Set by Start, read-only until Stop.
	cfg     fleet.Config
	client  *clientv3.Client
	member  *fleet.Member
	state   *fleet.State
	tlsConf *tls.Config

	// changes from the watch (OnChange), applied by run.
	pmu      sync.Mutex
	pend     pending
	kick     chan struct{}
	degraded atomic.Bool

	policy record.Policy // this node's (fleetPolicy), set by Start
	split  string        // the split last applied, for its log line (run only)
	splitN atomic.Int64  // the nodes of that split (0: none, a single host's)

	fmu      sync.Mutex
	fetching map[string]*fetchCall // tenant/env/name/digest → the fetch in flight
	// deploying is, by digest, the deploys of a bundle here: registered
	// (so held) before they are stored and before this node's state shows
	// them, not to be dropped meanwhile.
	deploying map[string]*registering
	// fetchBundle is fetch (tests replace it).
	fetchBundle func(ctx context.Context, tenant, env, name, version, digest string) (ExtensionInfo, error)

	busy *busyCPUs // the load's busy CPUs

	cancel context.CancelFunc
	done   chan struct{}
	live   atomic.Bool // between Start and Stop
}

// pending is what the watch reported changed, for run to apply.
type pending struct {
	tenants map[string]struct{}
	exts    map[[3]string]struct{}
	nodes   bool // the membership or the policy: split the limits again
	holds   bool // a deploy ended: check the bundles held
}

// registering is the deploys of one bundle on this node: those running,
// and the versions they registered that the state does not show yet.
type registering struct {
	running  int
	versions map[[3]string]int // tenant, env, name → version
}

// fetchCall is one fetch of a bundle that invocations wait for.
type fetchCall struct {
	done    chan struct{}
	waiters int // callers that wait for it (under fmu)
	info    ExtensionInfo
	err     error
}

func newFleetLink(d fleetDeps) *fleetLink {
	d.log = d.log.With("component", "fleet")
	f := &fleetLink{fleetDeps: d, pend: pending{tenants: map[string]struct{}{}, exts: map[[3]string]struct{}{}},
		kick: make(chan struct{}, 1), fetching: map[string]*fetchCall{}, deploying: map[string]*registering{}, busy: newBusyCPUs(d.cpuUsage)}
	f.fetchBundle = f.fetch
	return f
}

// fleetVersion is the store's name of fleet-wide version n.
func fleetVersion(n int) string { return "v" + strconv.Itoa(n) }

// fleetPolicy is what every node of the fleet must agree on, from c.
func fleetPolicy(c *Config) record.Policy {
	p := record.Policy{Isolation: slices.Clone(c.Isolation.By)}
	for name, t := range c.Tiers {
		if len(t.Placement) > 0 {
			if p.Placement == nil {
				p.Placement = map[string][]string{}
			}
			p.Placement[name] = slices.Clone(t.Placement)
		}
	}
	if p.Isolation == nil {
		p.Isolation = []string{}
	}
	return p
}

// checkFleetReload refuses a reload that changes [fleet] or, in a fleet,
// the fleet's policy (isolation, placements): every node must agree on it,
// and it is checked when the node joins.
func checkFleetReload(old, cfg *Config) error {
	if !reflect.DeepEqual(old.Fleet, cfg.Fleet) {
		return fmt.Errorf("%w: [fleet] changes only with a restart", ErrConfig)
	}
	if cfg.Fleet.Enabled() {
		if d := fleet.PolicyDiff(fleetPolicy(old), fleetPolicy(cfg)); d != "" {
			return fmt.Errorf("%w: the fleet's policy changes only with a restart of every node: %s", ErrConfig, d)
		}
	}
	return nil
}

// fleetClientTLS is what this node presents to another (fetching a
// bundle): its certificate, and the fleet's CA to verify the other's,
// checked for [fleet] peer_server_name when set.
func fleetClientTLS(fc *fleet.Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(fc.TLSCert, fc.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("%w: fleet.tls_cert/tls_key: %w", ErrConfig, err)
	}
	b, err := os.ReadFile(fc.TLSCA)
	if err != nil {
		return nil, fmt.Errorf("%w: fleet.tls_ca: %w", ErrConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%w: fleet.tls_ca %s holds no PEM certificate", ErrConfig, fc.TLSCA)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool,
		ServerName: fc.PeerServerName}, nil
}

// Start joins the fleet (policy, node record under a lease), lists and
// watches its state, applies the fleet's tenant assignments, and holds
// the bundles this node has of the fleet's current versions. It fails
// when etcd cannot be reached (a node does not start without having seen
// the fleet's state once), or on a policy mismatch.
func (f *fleetLink) Start(ctx context.Context) (err error) {
	c := f.conf()
	f.cfg = c.Fleet
	if f.tlsConf, err = fleetClientTLS(&f.cfg); err != nil {
		return err
	}
	if f.client, err = fleet.Dial(&f.cfg); err != nil {
		return err
	}
	policy := fleetPolicy(c)
	keys := f.cfg.Keys()
	f.member = fleet.NewMember(fleet.MemberOptions{Client: f.client, Keys: keys, TTL: f.cfg.LeaseTTL.Duration,
		Node: f.cfg.NodeRecord(int(c.Scope.IDSlots), ""), Load: f.load, Policy: &policy, Log: f.log})
	f.state = fleet.NewState(fleet.StateOptions{Client: f.client, Keys: keys, Node: f.cfg.Node, Member: f.member,
		OnChange: f.onChange, Log: f.log})
	if err := f.member.Start(ctx); err != nil {
		_ = f.client.Close()
		return fmt.Errorf("join the fleet: %w", err)
	}
	if err := f.state.Start(ctx); err != nil {
		_ = f.member.Stop()
		_ = f.client.Close()
		return fmt.Errorf("read the fleet's state: %w", err)
	}
	f.policy = policy
	f.live.Store(true)
	// Fleet-wide limits: spend caps summed over the nodes (this node's
	// totals published at every flush), rate and concurrency split
	// between the live nodes.
	f.spendLimits(f.member, fleetSpendOf(f.state, f.cfg.Node))
	f.applySplit()
	for t := range f.state.Tenants() {
		f.applyTenant(t)
	}
	f.holdLocal(ctx)
	f.metrics.SetFleetDegraded(false)
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel, f.done = cancel, make(chan struct{})
	go f.run(lctx, f.done)
	return nil
}

// Stop leaves the fleet (the lease is revoked: the node's record and
// bundle holds go at once) and closes the etcd client.
func (f *fleetLink) Stop() error {
	if f.cancel == nil {
		return nil
	}
	f.live.Store(false)
	f.cancel()
	<-f.done
	f.cancel = nil
	// A single host's limits again, before the Member stops taking spend.
	f.spendLimits(nil, nil)
	f.splitLimits(0, nil)
	f.splitN.Store(0)
	err := errors.Join(f.state.Stop(), f.member.Stop())
	return errors.Join(err, f.client.Close())
}

// load is the node's load for its record, at every refresh: live scopes,
// and the CPUs the scopes kept busy since the last refresh.
func (f *fleetLink) load() (int, float64) {
	n := 0
	if f.liveScopes != nil {
		n = f.liveScopes()
	}
	return n, f.busy.sample()
}

// holdLocal makes the bundles this node says it holds (under its lease)
// those it has of the fleet's current versions: it holds each it stores
// (a restarted node serves them again), and drops every other it held —
// an extension removed fleet-wide, a version superseded, a bundle no
// longer stored — so that no node fetches from a node without it. A
// bundle being deployed here (registered, not yet stored) is left as it
// is. A drop etcd does not take now is retried by the Member.
func (f *fleetLink) holdLocal(ctx context.Context) {
	held := f.member.HeldBundles() // first: a fetch stores a bundle before it holds it
	want := map[string]bool{}
	for key, x := range f.state.Extensions() {
		if t, e, n, ok := splitExtKey(key); ok && f.stores(t, e, n, x) {
			want[x.Digest] = true
		}
	}
	for _, d := range held {
		if want[d] || f.registering(d) {
			continue
		}
		if err := f.member.DropBundle(ctx, d); err != nil {
			f.log.Warn("could not say this node no longer holds a bundle (retried)", "digest", d, "err", err)
		} else {
			f.log.Info("bundle no longer held by this node", "digest", d)
		}
	}
	for d := range want {
		if slices.Contains(held, d) {
			continue
		}
		if err := f.member.HoldBundle(ctx, d); err != nil {
			f.log.Warn("could not say this node holds a bundle", "digest", d, "err", err)
		}
	}
}

// registering reports whether a deploy here of digest runs, or registered
// a version the state does not show yet (forgetting those it shows).
func (f *fleetLink) registering(digest string) bool {
	f.fmu.Lock()
	defer f.fmu.Unlock()
	r := f.deploying[digest]
	if r == nil {
		return false
	}
	for k, v := range r.versions {
		if x, ok := f.state.ExtensionRecord(k[0], k[1], k[2]); ok && x.Version >= v {
			delete(r.versions, k)
		}
	}
	if r.running == 0 && len(r.versions) == 0 {
		delete(f.deploying, digest)
		return false
	}
	return true
}

// deployRuns counts a deploy of digest running (delta 1, then -1 when it
// ends).
func (f *fleetLink) deployRuns(digest string, delta int) {
	f.fmu.Lock()
	defer f.fmu.Unlock()
	r := f.deploying[digest]
	if r == nil {
		r = &registering{versions: map[[3]string]int{}}
		f.deploying[digest] = r
	}
	r.running += delta
}

// registered records the version a running deploy of digest registered
// for an extension.
func (f *fleetLink) registered(digest, tenant, env, name string, version int) {
	f.fmu.Lock()
	defer f.fmu.Unlock()
	if r := f.deploying[digest]; r != nil {
		r.versions[[3]string{tenant, env, name}] = max(r.versions[[3]string{tenant, env, name}], version)
	}
}

// stores reports whether this node stores the fleet's version x of an
// extension: as that version, or as its current one.
func (f *fleetLink) stores(tenant, env, name string, x record.Extension) bool {
	if cur, err := f.store.Get(tenant, env, name, ""); err == nil && cur.Digest == x.Digest { // cached
		return true
	}
	have, err := f.store.Get(tenant, env, name, fleetVersion(x.Version))
	return err == nil && have.Digest == x.Digest
}

// splitExtKey splits State.Extensions' "tenant/env/name".
func splitExtKey(k string) (t, e, n string, ok bool) {
	p := strings.Split(k, "/")
	if len(p) != 3 || checkTarget(p[0], p[1], p[2]) != nil {
		return "", "", "", false
	}
	return p[0], p[1], p[2], true
}

// onChange takes a change from the State's watch: it only records it and
// wakes run (it must not block).
func (f *fleetLink) onChange(c fleet.Change) {
	switch c.Kind {
	case fleet.KindTenant:
		f.pmu.Lock()
		f.pend.tenants[c.Tenant] = struct{}{}
		f.pmu.Unlock()
	case fleet.KindExtension:
		f.pmu.Lock()
		f.pend.exts[[3]string{c.Tenant, c.Env, c.Name}] = struct{}{}
		f.pmu.Unlock()
	case fleet.KindNode, fleet.KindPolicy:
		f.pmu.Lock()
		f.pend.nodes = true
		f.pmu.Unlock()
	default:
		return
	}
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// run applies the changes onChange recorded and follows whether the
// state is degraded, until ctx ends.
func (f *fleetLink) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(fleetTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.kick:
			f.applyPending()
		case <-t.C:
			f.checkDegraded()
		}
	}
}

// checkDegraded logs and exports a change of the state's reachability.
func (f *fleetLink) checkDegraded() {
	since, deg := f.state.Degraded()
	if f.degraded.Swap(deg) == deg {
		return
	}
	f.metrics.SetFleetDegraded(deg)
	if deg {
		f.log.Warn("fleet degraded: etcd unreachable; invocations go on with the last fleet state, deploys and tier changes are refused",
			"since", since.UTC().Format(time.RFC3339))
	} else {
		f.log.Info("fleet state reachable again: deploys and tier changes accepted")
	}
}

// applyPending applies the tenants and extensions that changed, and the
// limits' split when the membership or the policy did.
func (f *fleetLink) applyPending() {
	f.pmu.Lock()
	p := f.pend
	f.pend = pending{tenants: map[string]struct{}{}, exts: map[[3]string]struct{}{}}
	f.pmu.Unlock()
	tenants, exts := p.tenants, p.exts
	if p.nodes {
		f.applySplit()
	}
	for t := range tenants {
		f.applyTenant(t)
	}
	if len(exts) > 0 || p.holds {
		defer f.holdAfter()
	}
	for k := range exts {
		if _, ok := f.state.Extension(k[0], k[1], k[2]); ok {
			continue // a new version: fetched when invoked
		}
		cur, err := f.store.Get(k[0], k[1], k[2], "")
		if err != nil {
			continue // not here
		}
		if err := f.removeLocal(cur.Tenant, cur.Environment, cur.Name); err != nil && !errors.Is(err, ErrNotFound) {
			f.log.Error("remove an extension removed from the fleet", "tenant", k[0], "environment", k[1], "extension", k[2], "err", err)
			continue
		}
		f.log.Info("extension removed from the fleet", "tenant", k[0], "environment", k[1], "extension", k[2])
	}
}

// holdAfter makes the bundles held those stored, once the extensions'
// changes are applied.
func (f *fleetLink) holdAfter() {
	ctx, cancel := context.WithTimeout(context.Background(), fleetWriteTimeout)
	defer cancel()
	f.holdLocal(ctx)
}

// checkHolds has run check the bundles held (after a deploy).
func (f *fleetLink) checkHolds() {
	f.pmu.Lock()
	f.pend.holds = true
	f.pmu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// applySplit splits the tiers' rate, burst and max_concurrent between
// the live nodes the state lists (this node counts while it runs, listed
// or not: its record may be between leases), per the fleet's policy (this
// node's until the fleet has one).
func (f *fleetLink) applySplit() {
	nodes := f.state.Nodes()
	if _, ok := nodes[f.cfg.Node]; !ok {
		nodes[f.cfg.Node] = record.Node{Name: f.cfg.Node, Labels: slices.Clone(f.cfg.Labels)}
	}
	pol, ok := f.state.Policy()
	if !ok {
		pol = f.policy
	}
	n, placed := fleetSplitOf(nodes, pol)
	f.splitLimits(n, placed)
	f.splitN.Store(int64(n))
	if desc := splitString(n, placed); desc != f.split {
		f.split = desc
		f.log.Info("fleet limits split between the live nodes", "split", desc)
	}
}

// splitString describes a split for the log: "3 nodes" and each placed
// tier's "tier=N".
func splitString(n int, placed map[string]int) string {
	b := strings.Builder{}
	b.WriteString(strconv.Itoa(n) + " nodes")
	for _, t := range slices.Sorted(maps.Keys(placed)) {
		b.WriteString(" " + t + "=" + strconv.Itoa(placed[t]))
	}
	return b.String()
}

// applyTenant makes the local assignment of tenant the fleet's.
func (f *fleetLink) applyTenant(tenant string) {
	rec, ok := f.state.Tenant(tenant)
	if !ok || checkTarget(tenant, "x", "x") != nil {
		return // no fleet assignment: the local one stays
	}
	if _, ok := f.conf().Tiers[rec.Tier]; !ok {
		f.log.Error("the fleet assigns a tenant a tier this node's configuration lacks; keeping its local tier",
			"tenant", tenant, "tier", rec.Tier)
		return
	}
	local, had := f.tenants.assignments()[tenant]
	if had && local.Tier == rec.Tier && slices.Equal(local.EgressAllow, rec.EgressAllow) {
		return
	}
	allow := slices.Clone(rec.EgressAllow)
	if err := f.tenants.assign(tenant, rec.Tier, &allow, rec.Updated); err != nil {
		f.log.Error("apply the fleet's tier assignment", "tenant", tenant, "tier", rec.Tier, "err", err)
		return
	}
	f.log.Info("tenant tier set from the fleet", "tenant", tenant, "tier", rec.Tier, "was", local.Tier)
	if err := f.applyTiers(); err != nil {
		f.log.Error("apply tiers", "tenant", tenant, "err", err)
	}
}

// writable fails while the fleet's state cannot be written.
func (f *fleetLink) writable(what string) error {
	if !f.live.Load() {
		return fmt.Errorf("%s: %w", what, fleet.ErrStopped)
	}
	if since, deg := f.state.Degraded(); deg {
		return fmt.Errorf("%s: %w (since %s)", what, fleet.ErrUnavailable, since.UTC().Format(time.RFC3339))
	}
	return nil
}

// setTenant writes tenant's tier (and allow-list, when given) to the
// fleet.
func (f *fleetLink) setTenant(tenant, tier string, allow *[]string) error {
	if err := f.writable("set tenant " + tenant); err != nil {
		return err
	}
	if allow != nil {
		if _, err := parseAllow(*allow); err != nil {
			return fmt.Errorf("%w: egress allow-list: %w", ErrInvalid, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), fleetWriteTimeout)
	defer cancel()
	return f.state.UpdateTenant(ctx, tenant, func(rec *record.Tenant, _ bool) error {
		rec.Tier = tier
		if allow != nil {
			rec.EgressAllow = slices.Clone(*allow)
		}
		return nil
	})
}

// deploy stages files, registers them fleet-wide and publishes them as
// the fleet's version.
func (f *fleetLink) deploy(tenant, env, name string, files []BundleFile) (ExtensionInfo, bool, error) {
	what := "deploy " + tenant + "/" + env + "/" + name
	if err := f.writable(what); err != nil {
		return ExtensionInfo{}, false, err
	}
	var digest string
	var unchanged bool
	defer f.checkHolds() // one registered but not stored is dropped
	info, _, err := f.store.deployAs(tenant, env, name, files, func(d string, m Manifest, size int64) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), fleetWriteTimeout)
		defer cancel()
		digest = d
		f.deployRuns(d, 1)
		x, same, err := f.state.RegisterExtension(ctx, tenant, env, name, d,
			record.Manifest{Runtime: m.Runtime, Entrypoint: m.Entrypoint, Network: m.Network, Size: size})
		if err != nil {
			return "", err
		}
		f.registered(d, tenant, env, name, x.Version)
		unchanged = same
		return fleetVersion(x.Version), nil
	})
	if digest != "" {
		f.deployRuns(digest, -1)
	}
	if err != nil {
		return ExtensionInfo{}, false, err
	}
	if unchanged {
		// RegisterExtension holds a new bundle; an unchanged one may not be
		// held by this node yet.
		ctx, cancel := context.WithTimeout(context.Background(), fleetWriteTimeout)
		defer cancel()
		if err := f.member.HoldBundle(ctx, digest); err != nil {
			f.log.Warn("could not say this node holds a bundle", "digest", digest, "err", err)
		}
	}
	return info, unchanged, nil
}

// remove removes an extension fleet-wide (every node removes its copy as
// the watch reports it) and here; one only this node has (deployed
// before it joined) is removed here.
func (f *fleetLink) remove(tenant, env, name string) error {
	if err := f.writable("remove " + tenant + "/" + env + "/" + name); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), fleetWriteTimeout)
	defer cancel()
	err := f.state.RemoveExtension(ctx, tenant, env, name)
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return err
	}
	lerr := f.removeLocal(tenant, env, name)
	if err == nil && errors.Is(lerr, ErrNotFound) {
		return nil // the fleet had it, this node did not
	}
	return lerr
}

// extension is the invoker's store lookup in a fleet: the fleet's current
// version of the extension, fetched from a node holding it when this node
// lacks it. An extension the fleet does not know, or a version other than
// the fleet's current one, is the local store's.
func (f *fleetLink) extension(ctx context.Context, tenant, env, name, version string) (ExtensionInfo, error) {
	if !f.live.Load() {
		return f.store.Get(tenant, env, name, version)
	}
	x, ok := f.state.Extension(tenant, env, name)
	want := fleetVersion(x.Version)
	if !ok || version != "" && version != want {
		return f.store.Get(tenant, env, name, version)
	}
	if cur, err := f.store.Get(tenant, env, name, ""); err == nil && cur.Digest == x.Digest {
		return cur, nil
	}
	if have, err := f.store.Get(tenant, env, name, want); err == nil && have.Digest == x.Digest {
		return have, nil
	}
	return f.fetchOnce(ctx, tenant, env, name, want, x.Digest)
}

// fetchOnce fetches and imports a bundle, once for all the invocations
// that want it at the same time; each waits at most until its ctx ends.
func (f *fleetLink) fetchOnce(ctx context.Context, tenant, env, name, version, digest string) (ExtensionInfo, error) {
	key := tenant + "/" + env + "/" + name + "/" + digest
	f.fmu.Lock()
	c := f.fetching[key]
	if c == nil {
		c = &fetchCall{done: make(chan struct{})}
		f.fetching[key] = c
		go func() {
			fctx, cancel := context.WithTimeout(context.Background(), fleetFetchTimeout)
			defer cancel()
			c.info, c.err = f.fetchBundle(fctx, tenant, env, name, version, digest)
			f.fmu.Lock()
			delete(f.fetching, key)
			f.fmu.Unlock()
			close(c.done)
		}()
	}
	c.waiters++
	f.fmu.Unlock()
	select {
	case <-c.done:
		return c.info, c.err
	case <-ctx.Done():
		return ExtensionInfo{}, fmt.Errorf("%w: waiting for bundle %s of %s: %v", fleet.ErrNoBundle, digest, name, ctx.Err())
	}
}

// fetch gets the bundle of digest from a node holding it, verified, and
// stores it as version of the extension; this node then holds it too.
func (f *fleetLink) fetch(ctx context.Context, tenant, env, name, version, digest string) (ExtensionInfo, error) {
	log := f.log.With("tenant", tenant, "environment", env, "extension", name, "version", version, "digest", digest)
	lim := f.conf().Limits
	nodes := f.state.Nodes()
	var tried []string
	var last error
	for _, h := range f.state.BundleHolders(digest) {
		n, ok := nodes[h]
		if h == f.cfg.Node || !ok || n.Addr == "" {
			continue
		}
		tried = append(tried, h)
		start := time.Now()
		files, err := bundles.Fetch(ctx, n.Addr, f.tlsConf, digest, bundles.Limits{MaxBytes: lim.MaxBundle, MaxFiles: lim.MaxBundleFiles})
		if err != nil {
			log.Warn("bundle fetch failed", "from", h, "addr", n.Addr, "err", err)
			last = err
			continue
		}
		info, _, err := f.store.Import(tenant, env, name, version, digest, files)
		if err != nil {
			log.Error("fetched bundle not stored", "from", h, "err", err)
			return ExtensionInfo{}, fmt.Errorf("%w: store bundle %s of %s fetched from %s: %v", fleet.ErrNoBundle, digest, name, h, err)
		}
		log.Info("bundle fetched from the fleet", "from", h, "took", time.Since(start).Round(time.Millisecond))
		if err := f.member.HoldBundle(ctx, digest); err != nil {
			log.Warn("could not say this node holds a bundle", "err", err)
		}
		return info, nil
	}
	if len(tried) == 0 {
		return ExtensionInfo{}, fmt.Errorf("%w: version %s of extension %s (bundle %s): no live node holds it", fleet.ErrNoBundle, version, name, digest)
	}
	return ExtensionInfo{}, fmt.Errorf("%w: bundle %s of extension %s from %v: %v", fleet.ErrNoBundle, digest, name, tried, last)
}

// degradedSince reports whether the node's fleet state is degraded
// (false without [fleet]).
func (f *fleetLink) degradedSince() (time.Time, bool) {
	if f == nil || !f.live.Load() {
		return time.Time{}, false
	}
	return f.state.Degraded()
}

// deployAs validates and stages files, asks version for the version's
// name (given the bundle's digest, manifest and size: the fleet's
// registration), then publishes them as that version, made current. A
// failed version call leaves nothing stored.
func (s *Store) deployAs(tenant, env, name string, files []BundleFile, version func(digest string, m Manifest, size int64) (string, error)) (info ExtensionInfo, unchanged bool, err error) {
	if err := checkTarget(tenant, env, name); err != nil {
		return info, false, err
	}
	m, digest, size, err := s.validateBundle(files)
	if err != nil {
		return info, false, err
	}
	tmp, err := s.stage(files)
	if err != nil {
		return info, false, err
	}
	defer os.RemoveAll(tmp)
	v, err := version(digest, m, size)
	if err != nil {
		return info, false, err
	}
	if err := checkVersion(v); err != nil {
		return info, false, err
	}
	info, unchanged, err = s.publish(tenant, env, name, v, tmp, m, digest, size)
	if err == nil && !unchanged {
		s.prune(tenant, env, name)
	}
	return info, unchanged, err
}
