package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/scoped-io/scoped/fleet/record"
)

// Kind is what a Change is about.
type Kind int

const (
	KindNode Kind = iota
	KindPolicy
	KindTenant
	KindExtension
	KindSpend
	KindBundle
)

func (k Kind) String() string {
	return [...]string{"node", "policy", "tenant", "extension", "spend", "bundle"}[k]
}

// Change is one record that changed in the fleet's state (Deleted: it is
// gone, or no longer parses). The fields of its key are set by Kind.
type Change struct {
	Kind    Kind
	Deleted bool
	Node    string // KindNode, KindSpend, KindBundle
	Tenant  string // KindTenant, KindExtension, KindSpend
	Env     string // KindExtension
	Name    string // KindExtension
	Digest  string // KindBundle
}

// StateOptions configure a State.
type StateOptions struct {
	// Client is the fleet's etcd client (Dial); the State does not close
	// it.
	Client *clientv3.Client
	Keys   record.Keys
	// Node is this node's name (deploys record it); Member, when set,
	// holds a registered bundle under the node's lease in the same
	// transaction.
	Node   string
	Member *Member
	// OnChange, when set, is called for every change, in order, from the
	// watch's goroutine: it must not block (nor call the State's writes).
	OnChange func(Change)
	// Probe is how often etcd's reachability is checked (default 1s);
	// Timeout bounds a probe and a write (default 5s, probes at most 2s).
	Probe   time.Duration
	Timeout time.Duration
	Log     *slog.Logger
}

// State is this node's copy of the fleet-wide state: listed at Start,
// then watched from the list's revision. While etcd is unreachable it is
// degraded: the last state stays served, writes fail with ErrUnavailable,
// and once etcd answers again it is listed afresh (changes missed are
// notified) and watched again.
type State struct {
	o   StateOptions
	log *slog.Logger

	mu       sync.RWMutex
	snap     *snapshot
	degraded time.Time // zero: not degraded

	run     sync.Mutex // guards cancel, done
	cancel  context.CancelFunc
	done    chan struct{}
	started bool
}

// snapshot is the decoded state at a revision, and the raw values it was
// decoded from (to tell what a fresh list changed).
type snapshot struct {
	rev     int64
	raw     map[string]string
	nodes   map[string]record.Node
	policy  *record.Policy
	tenants map[string]record.Tenant
	exts    map[string]record.Extension        // tenant/env/name
	spend   map[string]map[string]record.Spend // tenant → node
	bundles map[string]map[string]struct{}     // digest → nodes
	modRev  map[string]int64                   // key → mod revision
}

func newSnapshot() *snapshot {
	return &snapshot{raw: map[string]string{}, nodes: map[string]record.Node{}, tenants: map[string]record.Tenant{},
		exts: map[string]record.Extension{}, spend: map[string]map[string]record.Spend{},
		bundles: map[string]map[string]struct{}{}, modRev: map[string]int64{}}
}

// NewState returns a State for o (started by Start).
func NewState(o StateOptions) *State {
	if o.Probe <= 0 {
		o.Probe = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &State{o: o, log: o.Log.With("node", o.Node), snap: newSnapshot()}
}

// Start lists the fleet's state and watches it until Stop. It fails
// (ErrUnavailable) when etcd cannot be listed within ctx.
func (s *State) Start(ctx context.Context) error {
	s.run.Lock()
	defer s.run.Unlock()
	if s.started {
		return errors.New("fleet state already running")
	}
	if err := s.relist(ctx, false); err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel, s.done, s.started = cancel, make(chan struct{}), true
	go s.loop(lctx, s.done)
	return nil
}

// Stop stops watching; the last state stays readable.
func (s *State) Stop() error {
	s.run.Lock()
	defer s.run.Unlock()
	if !s.started {
		return nil
	}
	s.cancel()
	<-s.done
	s.started = false
	return nil
}

// Degraded reports whether etcd is unreachable now, and since when.
func (s *State) Degraded() (since time.Time, degraded bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.degraded, !s.degraded.IsZero()
}

// Revision is the etcd revision the state is at.
func (s *State) Revision() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.snap.rev
}

// setDegraded marks etcd unreachable (from now, if not already).
func (s *State) setDegraded(err error) {
	s.mu.Lock()
	first := s.degraded.IsZero()
	if first {
		s.degraded = time.Now()
	}
	s.mu.Unlock()
	if first {
		s.log.Warn("fleet state degraded: etcd unreachable; serving the last state seen, refusing fleet writes", "err", err)
	}
}

// loop applies the watch's events and probes etcd until ctx ends.
func (s *State) loop(ctx context.Context, done chan struct{}) {
	defer close(done)
	// clientv3's Watch blocks until etcd confirms the watch: it is made in
	// a goroutine of its own, and its channel taken when ready.
	var stopWatch context.CancelFunc
	var ready chan clientv3.WatchChan
	startWatch := func() {
		wctx, cancel := context.WithCancel(ctx)
		stopWatch, ready = cancel, make(chan clientv3.WatchChan, 1)
		go func(ready chan<- clientv3.WatchChan) { ready <- s.watch(wctx) }(ready)
	}
	var wch clientv3.WatchChan
	startWatch()
	defer func() { stopWatch() }()
	probe := time.NewTicker(s.o.Probe)
	defer probe.Stop()
	resync := false
	for {
		select {
		case <-ctx.Done():
			return
		case wch = <-ready:
			ready = nil
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil || wr.Canceled {
				if !resync {
					s.log.Warn("fleet watch broken; listing again when etcd answers", "err", wr.Err())
				}
				resync = true
				wch = nil // wait for the probe
				continue
			}
			s.apply(wr.Events, wr.Header.Revision)
		case <-probe.C:
			pctx, cancel := context.WithTimeout(ctx, min(s.o.Timeout, 2*time.Second))
			_, err := s.o.Client.Get(pctx, s.o.Keys.Policy(), clientv3.WithCountOnly())
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				s.setDegraded(err)
				continue
			}
			if _, deg := s.Degraded(); !deg && !resync {
				continue
			}
			// Back: list afresh, then watch from there.
			stopWatch()
			if err := s.relist(ctx, true); err != nil {
				s.setDegraded(err)
				resync, wch, ready = true, nil, nil
				continue
			}
			startWatch()
			wch, resync = nil, false
		}
	}
}

// watch watches the prefix from the state's revision on.
func (s *State) watch(ctx context.Context) clientv3.WatchChan {
	prefix := strings.TrimSuffix(s.o.Keys.Nodes(), "nodes/")
	return s.o.Client.Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(s.Revision()+1))
}

// relist reads the whole prefix and replaces the state with it; when
// notify, the changes from the previous state are notified.
func (s *State) relist(ctx context.Context, notify bool) error {
	prefix := strings.TrimSuffix(s.o.Keys.Nodes(), "nodes/")
	tctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	r, err := s.o.Client.Get(tctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return unavailable(tctx, "list the fleet state", err)
	}
	next := newSnapshot()
	next.rev = r.Header.Revision
	for _, kv := range r.Kvs {
		s.put(next, string(kv.Key), kv.Value, kv.ModRevision)
	}
	s.mu.Lock()
	prev := s.snap
	s.snap = next
	since := s.degraded
	s.degraded = time.Time{}
	s.mu.Unlock()
	if !since.IsZero() {
		s.log.Info("fleet state caught up: etcd reachable again", "degraded_for", time.Since(since).Round(time.Millisecond), "revision", next.rev)
	}
	if notify && s.o.OnChange != nil {
		keys := map[string]bool{}
		for k := range prev.raw {
			keys[k] = true
		}
		for k := range next.raw {
			keys[k] = true
		}
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			pv, pok := prev.raw[k]
			nv, nok := next.raw[k]
			if pok == nok && pv == nv {
				continue
			}
			if c, ok := s.parseKey(k); ok {
				c.Deleted = !nok
				s.o.OnChange(c)
			}
		}
	}
	return nil
}

// apply applies watch events to the state, then notifies them.
func (s *State) apply(evs []*clientv3.Event, rev int64) {
	s.mu.Lock()
	snap := s.snap
	var changes []Change
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		if ev.Kv.ModRevision <= snap.modRev[key] {
			continue // already listed (the watch starts after the list: belt and braces)
		}
		var c Change
		var ok bool
		if ev.Type == clientv3.EventTypeDelete {
			c, ok = s.del(snap, key)
			delete(snap.modRev, key)
		} else {
			c, ok = s.put(snap, key, ev.Kv.Value, ev.Kv.ModRevision)
		}
		if ok {
			changes = append(changes, c)
		}
	}
	snap.rev = max(snap.rev, rev)
	s.mu.Unlock()
	if s.o.OnChange != nil {
		for _, c := range changes {
			s.o.OnChange(c)
		}
	}
}

// parseKey names the record key is of; false for keys of no known kind.
func (s *State) parseKey(key string) (Change, bool) {
	k := s.o.Keys
	var c Change
	var err error
	switch {
	case key == k.Policy():
		c.Kind = KindPolicy
	case strings.HasPrefix(key, k.Nodes()):
		c.Kind = KindNode
		c.Node, err = k.NodeOf(key)
	case strings.HasPrefix(key, k.Tenants()):
		c.Kind = KindTenant
		c.Tenant, err = k.TenantOf(key)
	case strings.HasPrefix(key, k.Extensions()):
		c.Kind = KindExtension
		c.Tenant, c.Env, c.Name, err = k.ExtensionOf(key)
	case strings.HasPrefix(key, k.SpendRoot()):
		c.Kind = KindSpend
		c.Tenant, c.Node, err = k.SpendOf(key)
	case strings.HasPrefix(key, k.Bundles()):
		c.Kind = KindBundle
		c.Digest, c.Node, err = k.BundleOf(key)
	default:
		return c, false // a newer version's key: not ours to read
	}
	if err != nil {
		s.log.Warn("fleet record skipped: malformed key", "key", trunc(key), "err", err)
		return c, false
	}
	return c, true
}

// put decodes the record at key into snap (a record that does not parse
// is skipped, logged, and removes what the key held).
func (s *State) put(snap *snapshot, key string, value []byte, modRev int64) (Change, bool) {
	c, ok := s.parseKey(key)
	if !ok {
		return c, false
	}
	snap.modRev[key] = modRev
	var err error
	switch c.Kind {
	case KindPolicy:
		var p record.Policy
		if err = record.Decode(value, &p); err == nil {
			snap.policy = &p
		}
	case KindNode:
		var n record.Node
		if err = record.Decode(value, &n); err == nil && n.Name != c.Node {
			err = fmt.Errorf("%w: node %q's record names %q", record.ErrInvalid, c.Node, n.Name)
		}
		if err == nil {
			snap.nodes[c.Node] = n
		}
	case KindTenant:
		var t record.Tenant
		if err = record.DecodeState(value, &t); err == nil {
			snap.tenants[c.Tenant] = t
		}
	case KindExtension:
		var x record.Extension
		if err = record.DecodeState(value, &x); err == nil {
			snap.exts[extKey(c.Tenant, c.Env, c.Name)] = x
		}
	case KindSpend:
		var sp record.Spend
		if err = record.DecodeState(value, &sp); err == nil {
			if snap.spend[c.Tenant] == nil {
				snap.spend[c.Tenant] = map[string]record.Spend{}
			}
			snap.spend[c.Tenant][c.Node] = sp
		}
	case KindBundle:
		if snap.bundles[c.Digest] == nil {
			snap.bundles[c.Digest] = map[string]struct{}{}
		}
		snap.bundles[c.Digest][c.Node] = struct{}{}
	}
	if err != nil {
		s.log.Warn("fleet record skipped: malformed", "key", trunc(key), "err", err)
		s.del(snap, key)
		c.Deleted = true
		return c, true
	}
	snap.raw[key] = string(value)
	return c, true
}

// del removes the record at key from snap.
func (s *State) del(snap *snapshot, key string) (Change, bool) {
	c, ok := s.parseKey(key)
	if !ok {
		return c, false
	}
	c.Deleted = true
	delete(snap.raw, key)
	switch c.Kind {
	case KindPolicy:
		snap.policy = nil
	case KindNode:
		delete(snap.nodes, c.Node)
	case KindTenant:
		delete(snap.tenants, c.Tenant)
	case KindExtension:
		delete(snap.exts, extKey(c.Tenant, c.Env, c.Name))
	case KindSpend:
		delete(snap.spend[c.Tenant], c.Node)
		if len(snap.spend[c.Tenant]) == 0 {
			delete(snap.spend, c.Tenant)
		}
	case KindBundle:
		delete(snap.bundles[c.Digest], c.Node)
		if len(snap.bundles[c.Digest]) == 0 {
			delete(snap.bundles, c.Digest)
		}
	}
	return c, true
}

func extKey(tenant, env, name string) string { return tenant + "/" + env + "/" + name }

// trunc bounds a key from another host in a log line.
func trunc(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// Nodes returns the live nodes, by name.
func (s *State) Nodes() map[string]record.Node {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]record.Node, len(s.snap.nodes))
	for k, n := range s.snap.nodes {
		n.Labels = slices.Clone(n.Labels)
		out[k] = n
	}
	return out
}

// Policy returns the fleet's policy (false: none published).
func (s *State) Policy() (record.Policy, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.snap.policy == nil {
		return record.Policy{}, false
	}
	p := record.Policy{Isolation: slices.Clone(s.snap.policy.Isolation)}
	if s.snap.policy.Placement != nil {
		p.Placement = map[string][]string{}
		for t, l := range s.snap.policy.Placement {
			p.Placement[t] = slices.Clone(l)
		}
	}
	return p, true
}

// Tenant returns a tenant's assignment (false: none, the default tier).
func (s *State) Tenant(tenant string) (record.Tenant, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.snap.tenants[tenant]
	t.EgressAllow = slices.Clone(t.EgressAllow)
	return t, ok
}

// Tenants returns every tenant's assignment.
func (s *State) Tenants() map[string]record.Tenant {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]record.Tenant, len(s.snap.tenants))
	for k, t := range s.snap.tenants {
		t.EgressAllow = slices.Clone(t.EgressAllow)
		out[k] = t
	}
	return out
}

// Extension returns an extension's current version (false: none, or
// removed).
func (s *State) Extension(tenant, env, name string) (record.Extension, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	x, ok := s.snap.exts[extKey(tenant, env, name)]
	return x, ok && !x.Removed
}

// ExtensionRecord returns an extension's record, a removed one's
// tombstone (which keeps its version count) included.
func (s *State) ExtensionRecord(tenant, env, name string) (record.Extension, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	x, ok := s.snap.exts[extKey(tenant, env, name)]
	return x, ok
}

// Extensions returns every extension's current version by
// "tenant/env/name" (removed ones not).
func (s *State) Extensions() map[string]record.Extension {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string]record.Extension{}
	for k, x := range s.snap.exts {
		if !x.Removed {
			out[k] = x
		}
	}
	return out
}

// Spend returns the spend records of tenant, by node.
func (s *State) Spend(tenant string) map[string]record.Spend {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string]record.Spend{}
	for n, sp := range s.snap.spend[tenant] {
		sp.Daily, sp.Monthly = maps.Clone(sp.Daily), maps.Clone(sp.Monthly)
		out[n] = sp
	}
	return out
}

// SpendTotals sums tenant's usage of meter over the nodes, in the UTC day
// and month of now (records of earlier periods count nothing).
func (s *State) SpendTotals(tenant, meter string, now time.Time) (day, month float64) {
	return s.SpendTotalsExcept(tenant, meter, "", now)
}

// SpendTotalsExcept is SpendTotals over the nodes other than except: a
// node adds its own ledger's sums (newer than what it published) to the
// others' totals, so that it counts itself once.
func (s *State) SpendTotalsExcept(tenant, meter, except string, now time.Time) (day, month float64) {
	now = now.UTC()
	d := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	m := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for node, sp := range s.snap.spend[tenant] {
		if node == except {
			continue
		}
		if sp.Day.Equal(d) {
			day += sp.Daily[meter]
		}
		if sp.Month.Equal(m) {
			month += sp.Monthly[meter]
		}
	}
	return day, month
}

// BundleHolders returns the nodes holding the bundle of digest, sorted.
func (s *State) BundleHolders(digest string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Sorted(maps.Keys(s.snap.bundles[digest]))
}
