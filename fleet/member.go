package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/scoped-io/scoped/fleet/record"
	"github.com/scoped-io/scoped/internal/ident"
)

// Load is a node's load now: live scopes and CPUs busy.
type Load func() (scopes int, busy float64)

// MemberOptions configure a Member.
type MemberOptions struct {
	// Client is the fleet's etcd client (Dial); the Member does not close
	// it.
	Client *clientv3.Client
	// Keys is the fleet's key layout (Config.Keys).
	Keys record.Keys
	// TTL is the lease's TTL (Config.LeaseTTL), whole seconds.
	TTL time.Duration
	// Node is this node's record; its load fields come from Load.
	Node record.Node
	// Load gives the node's load at each refresh (nil: none).
	Load Load
	// Policy, when set, is published at join if the fleet has none, and
	// compared with the fleet's otherwise (ErrPolicyMismatch).
	Policy *record.Policy
	// Refresh is how often the lease is kept alive and the record
	// refreshed (default: min(2s, TTL/4)).
	Refresh time.Duration
	Log     *slog.Logger
}

// Member keeps this node's record in etcd under a lease from Start to
// Stop: kept alive and refreshed with the node's load; Stop revokes the
// lease, so a clean stop leaves the fleet at once and a dead node leaves
// within the TTL. Keys it holds for the node (bundles, spend) live under
// the same lease and are put again when a lost lease is replaced.
type Member struct {
	o   MemberOptions
	log *slog.Logger

	mu      sync.Mutex       // held across the lease's RPCs
	lease   clientv3.LeaseID // 0: none (not registered now)
	last    []byte           // the node record last written
	cancel  context.CancelFunc
	done    chan struct{}
	running bool
	live    atomic.Bool // running, read without mu

	hmu   sync.Mutex
	held  map[string]string   // key → value, under the lease
	dirty map[string]struct{} // held keys not written yet
	gone  map[string]struct{} // released keys not deleted yet (etcd did not answer)
}

// NewMember returns a Member for o (started by Start).
func NewMember(o MemberOptions) *Member {
	if o.TTL < time.Second {
		o.TTL = DefaultLeaseTTL
	}
	if o.Refresh <= 0 {
		o.Refresh = min(2*time.Second, o.TTL/4)
	}
	o.Refresh = max(o.Refresh, 100*time.Millisecond)
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Member{o: o, log: o.Log.With("node", o.Node.Name), held: map[string]string{}, dirty: map[string]struct{}{},
		gone: map[string]struct{}{}}
}

// ttlSeconds is the lease's TTL in etcd's unit.
func (m *Member) ttlSeconds() int64 { return max(int64(m.o.TTL/time.Second), 1) }

// Start checks or publishes the fleet's policy, registers the node under
// a new lease and keeps it alive until Stop. It fails with
// ErrPolicyMismatch, ErrNodeTaken or ErrUnavailable.
func (m *Member) Start(ctx context.Context) error {
	if m.o.Client == nil {
		return errors.New("fleet member: no etcd client")
	}
	if err := m.o.Node.Check(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running {
		return errors.New("fleet member already running")
	}
	if m.o.Policy != nil {
		if err := JoinPolicy(ctx, m.o.Client, m.o.Keys, *m.o.Policy); err != nil {
			return err
		}
	}
	if err := m.registerLocked(ctx, true); err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.cancel, m.done, m.running = cancel, make(chan struct{}), true
	m.live.Store(true)
	go m.run(lctx, m.done)
	m.log.Info("joined the fleet", "lease", fmt.Sprintf("%x", int64(m.lease)), "ttl", m.o.TTL)
	return nil
}

// Stop stops refreshing and revokes the lease: the node's record and the
// keys it held are gone at once.
func (m *Member) Stop() error {
	m.mu.Lock()
	if !m.running {
		m.mu.Unlock()
		return nil
	}
	cancel, done := m.cancel, m.done
	m.running = false
	m.live.Store(false)
	m.mu.Unlock()
	cancel()
	<-done
	m.mu.Lock()
	defer m.mu.Unlock()
	id := m.lease
	m.lease, m.last = 0, nil
	if id == 0 {
		return nil
	}
	ctx, cancelRevoke := context.WithTimeout(context.Background(), DialTimeout)
	defer cancelRevoke()
	if _, err := m.o.Client.Revoke(ctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		m.log.Warn("left the fleet without revoking the lease; the node's keys expire with it", "err", err, "ttl", m.o.TTL)
		return unavailable(ctx, "revoke the node's lease", err)
	}
	m.log.Info("left the fleet")
	return nil
}

// Lease is the node's current lease (0 while it has none).
func (m *Member) Lease() clientv3.LeaseID {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lease
}

// record is the node's record with its load now.
func (m *Member) record() ([]byte, error) {
	n := m.o.Node
	n.Labels = slices.Clone(n.Labels)
	if m.o.Load != nil {
		n.Scopes, n.Busy = m.o.Load()
		n.Scopes = max(n.Scopes, 0)
		n.Busy = min(max(n.Busy, 0), float64(max(n.CPUs, 1)))
	}
	if err := n.Check(); err != nil {
		return nil, err
	}
	return json.Marshal(n)
}

// registerLocked grants a lease and puts the node's record and every held
// key under it. At join (first), a record of the node under another live
// lease is refused unless it has this node's address (a previous life of
// this daemon, whose lease is revoked).
func (m *Member) registerLocked(ctx context.Context, first bool) error {
	c, k := m.o.Client, m.o.Keys
	b, err := m.record()
	if err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	if first {
		r, err := c.Get(tctx, k.Node(m.o.Node.Name))
		if err != nil {
			return unavailable(tctx, "read the node's record", err)
		}
		if len(r.Kvs) == 1 {
			var old record.Node
			if record.Decode(r.Kvs[0].Value, &old) == nil && old.Addr != m.o.Node.Addr {
				return fmt.Errorf("%w: node %s is registered at %s, this daemon advertises %s "+
					"(another daemon has this [fleet] node name; if it is gone, its record expires within lease_ttl %s)",
					ErrNodeTaken, m.o.Node.Name, old.Addr, m.o.Node.Addr, m.o.TTL)
			}
			if id := clientv3.LeaseID(r.Kvs[0].Lease); id != 0 {
				m.log.Warn("revoking the lease of this node's previous life", "lease", fmt.Sprintf("%x", int64(id)))
				if _, err := c.Revoke(tctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
					return unavailable(tctx, "revoke the previous lease", err)
				}
			}
		}
	}
	g, err := c.Grant(tctx, m.ttlSeconds())
	if err != nil {
		return unavailable(tctx, "grant a lease", err)
	}
	if _, err := c.Put(tctx, k.Node(m.o.Node.Name), string(b), clientv3.WithLease(g.ID)); err != nil {
		_, _ = c.Revoke(tctx, g.ID)
		return unavailable(tctx, "register the node", err)
	}
	m.lease, m.last = g.ID, b
	m.hmu.Lock()
	held := maps.Clone(m.held)
	clear(m.gone) // under the previous lease, gone with it
	m.hmu.Unlock()
	if err := m.writeHeld(tctx, held); err != nil {
		m.log.Warn("the keys the node holds could not all be written again; retrying", "err", err)
	}
	return nil
}

// writeHeld puts keys under the lease, in transactions of at most 100
// operations (etcd's default limit is 128), and marks those written clean.
func (m *Member) writeHeld(ctx context.Context, keys map[string]string) error {
	names := slices.Sorted(maps.Keys(keys))
	for len(names) > 0 {
		batch := names[:min(len(names), 100)]
		names = names[len(batch):]
		ops := make([]clientv3.Op, 0, len(batch))
		for _, k := range batch {
			ops = append(ops, clientv3.OpPut(k, keys[k], clientv3.WithLease(m.lease)))
		}
		if _, err := m.o.Client.Txn(ctx).Then(ops...).Commit(); err != nil {
			m.hmu.Lock()
			for _, k := range batch {
				if _, ok := m.held[k]; ok {
					m.dirty[k] = struct{}{}
				}
			}
			m.hmu.Unlock()
			return err
		}
		m.hmu.Lock()
		for _, k := range batch {
			if v, ok := m.held[k]; ok && v == keys[k] {
				delete(m.dirty, k)
			}
		}
		m.hmu.Unlock()
	}
	return nil
}

// run keeps the lease alive and the record fresh until ctx ends.
func (m *Member) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(m.o.Refresh)
	defer t.Stop()
	failing := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := m.refresh(ctx)
		switch {
		case err == nil && !failing.IsZero():
			m.log.Info("fleet membership restored", "after", time.Since(failing).Round(time.Millisecond))
			failing = time.Time{}
		case err != nil && ctx.Err() == nil && failing.IsZero():
			m.log.Warn("fleet membership cannot be refreshed (etcd unreachable?); retrying", "err", err)
			failing = time.Now()
		}
	}
}

// refresh keeps the lease alive and rewrites the record when it changed
// (or was removed); a lost lease is replaced.
func (m *Member) refresh(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	tctx, cancel := context.WithTimeout(ctx, max(m.o.Refresh, time.Second))
	defer cancel()
	if m.lease == 0 {
		return m.registerLocked(tctx, false)
	}
	_, err := m.o.Client.KeepAliveOnce(tctx, m.lease)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		m.log.Warn("the node's lease was lost; registering again", "lease", fmt.Sprintf("%x", int64(m.lease)))
		m.lease = 0
		return m.registerLocked(tctx, false)
	}
	if err != nil {
		return err
	}
	b, err := m.record()
	if err != nil {
		return err
	}
	key := m.o.Keys.Node(m.o.Node.Name)
	_, err = m.o.Client.Txn(tctx).
		If(clientv3.Compare(clientv3.Value(key), "=", string(b)), clientv3.Compare(clientv3.LeaseValue(key), "=", m.lease)).
		Else(clientv3.OpPut(key, string(b), clientv3.WithLease(m.lease))).Commit()
	if err != nil {
		return err
	}
	m.last = b
	m.hmu.Lock()
	gone := slices.Sorted(maps.Keys(m.gone))
	m.hmu.Unlock()
	if err := m.deleteGone(tctx, gone); err != nil {
		return err
	}
	m.hmu.Lock()
	dirty := make(map[string]string, len(m.dirty))
	for k := range m.dirty {
		dirty[k] = m.held[k]
	}
	m.hmu.Unlock()
	return m.writeHeld(tctx, dirty)
}

// deleteGone deletes released keys whose deletion failed, in transactions
// of at most 100 operations. A key held again meanwhile is not deleted, or
// (held again while it was) written again.
func (m *Member) deleteGone(ctx context.Context, keys []string) error {
	for len(keys) > 0 {
		batch := keys[:min(len(keys), 100)]
		keys = keys[len(batch):]
		ops := make([]clientv3.Op, 0, len(batch))
		m.hmu.Lock()
		for _, k := range batch {
			if _, ok := m.held[k]; ok {
				delete(m.gone, k)
			} else {
				ops = append(ops, clientv3.OpDelete(k))
			}
		}
		m.hmu.Unlock()
		if len(ops) == 0 {
			continue
		}
		if _, err := m.o.Client.Txn(ctx).Then(ops...).Commit(); err != nil {
			return err
		}
		m.hmu.Lock()
		for _, k := range batch {
			if _, ok := m.held[k]; ok {
				m.dirty[k] = struct{}{}
			} else {
				delete(m.gone, k)
			}
		}
		m.hmu.Unlock()
	}
	return nil
}

// hold puts key under the node's lease and remembers it, so that it is put
// again under a new lease. Failing (ErrUnavailable), it stays remembered
// and the refresh loop writes it when etcd is back.
func (m *Member) hold(ctx context.Context, key, value string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.running {
		return ErrStopped
	}
	m.remember(key, value)
	if m.lease == 0 {
		return fmt.Errorf("%w: the node has no lease now (kept; written when it registers again)", ErrUnavailable)
	}
	tctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	if err := m.writeHeld(tctx, map[string]string{key: value}); err != nil {
		return unavailable(tctx, "put "+key+" (kept; written when etcd is back)", err)
	}
	return nil
}

// remember records key as held and not yet written (the refresh loop
// writes it within Refresh unless the caller does first).
func (m *Member) remember(key, value string) {
	m.hmu.Lock()
	defer m.hmu.Unlock()
	m.held[key] = value
	m.dirty[key] = struct{}{}
	delete(m.gone, key)
}

// written marks key as written with value.
func (m *Member) written(key, value string) {
	m.hmu.Lock()
	defer m.hmu.Unlock()
	if v, ok := m.held[key]; ok && v == value {
		delete(m.dirty, key)
	}
}

// release deletes key and forgets it. Failing (ErrUnavailable), the
// refresh loop deletes it when etcd is back.
func (m *Member) release(ctx context.Context, key string) error {
	m.hmu.Lock()
	_, had := m.held[key]
	delete(m.held, key)
	delete(m.dirty, key)
	m.hmu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lease == 0 {
		return nil // nothing under a lease now; the next one gets only what is held
	}
	tctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	if _, err := m.o.Client.Delete(tctx, key); err != nil {
		m.hmu.Lock()
		if _, again := m.held[key]; had && !again {
			m.gone[key] = struct{}{}
		}
		m.hmu.Unlock()
		return unavailable(tctx, "delete "+key+" (deleted when etcd is back)", err)
	}
	return nil
}

// HoldBundle says, under the node's lease, that this node holds the bundle
// of digest (others may fetch it from here).
func (m *Member) HoldBundle(ctx context.Context, digest string) error {
	if err := record.CheckDigest(digest); err != nil {
		return err
	}
	return m.hold(ctx, m.o.Keys.Bundle(digest, m.o.Node.Name), "")
}

// HeldBundles returns the digests of the bundles this node says it holds
// (HoldBundle, or a registration with this Member), sorted.
func (m *Member) HeldBundles() []string {
	prefix := m.o.Keys.Bundles()
	m.hmu.Lock()
	defer m.hmu.Unlock()
	var out []string
	for k := range m.held {
		if d, n, err := m.o.Keys.BundleOf(k); err == nil && n == m.o.Node.Name && strings.HasPrefix(k, prefix) {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

// DropBundle says this node no longer holds the bundle of digest.
func (m *Member) DropBundle(ctx context.Context, digest string) error {
	if err := record.CheckDigest(digest); err != nil {
		return err
	}
	return m.release(ctx, m.o.Keys.Bundle(digest, m.o.Node.Name))
}

// PublishSpend publishes this node's spend totals of tenant under its
// lease: queued, and written by the refresh loop within Refresh (so a
// ledger flush never waits for etcd); unchanged totals are not written
// again. It fails only on a bad argument or a stopped Member.
func (m *Member) PublishSpend(tenant string, s record.Spend) error {
	if err := ident.Check("tenant", tenant); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := s.Check(); err != nil {
		return err
	}
	key := m.o.Keys.Spend(tenant) + m.o.Node.Name
	m.hmu.Lock()
	prev, ok := m.held[key]
	m.hmu.Unlock()
	if ok {
		var p record.Spend
		if json.Unmarshal([]byte(prev), &p) == nil && p.Day.Equal(s.Day) && p.Month.Equal(s.Month) &&
			reflect.DeepEqual(p.Daily, s.Daily) && reflect.DeepEqual(p.Monthly, s.Monthly) {
			return nil
		}
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if !m.live.Load() {
		return ErrStopped
	}
	m.remember(key, string(b))
	return nil
}

// JoinPolicy publishes p as the fleet's policy if it has none (in one
// transaction), or compares it with the fleet's: a difference is
// ErrPolicyMismatch naming it.
func JoinPolicy(ctx context.Context, c *clientv3.Client, k record.Keys, p record.Policy) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := record.Decode(b, &record.Policy{}); err != nil {
		return fmt.Errorf("this node's policy: %w", err)
	}
	tctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	key := k.Policy()
	r, err := c.Txn(tctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(b))).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return unavailable(tctx, "publish the fleet policy", err)
	}
	if r.Succeeded {
		return nil
	}
	kvs := r.Responses[0].GetResponseRange().Kvs
	if len(kvs) != 1 {
		return fmt.Errorf("%w: the fleet policy vanished while read", ErrUnavailable)
	}
	var fleet record.Policy
	if err := record.Decode(kvs[0].Value, &fleet); err != nil {
		return fmt.Errorf("%w: the fleet's policy does not parse: %w", ErrPolicyMismatch, err)
	}
	if d := PolicyDiff(fleet, p); d != "" {
		return fmt.Errorf("%w: %s (the fleet's policy at %s is what every node must have)", ErrPolicyMismatch, d, key)
	}
	return nil
}
