package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/metering"
	"github.com/scoped-io/scoped/metrics"
)

// MeteringConfig is [metering]: package metering owns its keys and checks.
type MeteringConfig = metering.Config

// The values of [metering] on_error.
const (
	CapsRefuse = metering.CapsRefuse
	CapsAllow  = metering.CapsAllow
)

// extUse is what one extension's invocations in one scope added up to, as
// counted by the supervisor (cumulative for the scope's life).
type extUse struct {
	invocations, cold int64
	seconds           float64
}

// meterState is a scope's usage as last committed to the ledger: the
// cursor its next deltas are computed from.
type meterState struct {
	// The scope and its cgroup path, so that a later daemon can charge
	// what it used after this reading from its cgroup's counters.
	ID     ScopeID `json:"id"`
	Cgroup string  `json:"cgroup"`
	// CPU is the cgroup's own CPU counter: the kernel's figure, readable
	// after a crash while the cgroup exists.
	CPU  time.Duration       `json:"cpu_ns"`
	Rx   uint64              `json:"rx"`
	Tx   uint64              `json:"tx"`
	At   time.Time           `json:"at"`
	Mem  uint64              `json:"mem"` // bytes in use at At
	Ext  map[string][3]int64 `json:"ext"` // invocations, cold starts, µs
	CgID uint64              `json:"cgid"`
}

// meterDeps is what a meter needs of the daemon.
type meterDeps struct {
	conf func() *Config
	// tree holds the scope cgroups a previous daemon life left (nil: none,
	// as in a Detached supervisor).
	tree    *cgroups.Tree
	scopes  func(keep func(*scope) bool) []*scope // the live scopes keep accepts (the registry's snapshot)
	acct    *accountant                           // the scopes' network bytes
	metrics *metrics.Registry
	log     *slog.Logger
	alive   *atomic.Int64 // the loop's heartbeat, which Health reads
}

// meter commits the live scopes' usage to the metering ledger: at every
// [metering] flush (its loop, a component: Start/Stop), when scopes are
// removed, and before a usage report. Its ledger is opened by open (when
// [metering] is enabled) and closed by close.
type meter struct {
	meterDeps
	loop *goLoop

	// ledger and caps are set by open, before the daemon serves; nil:
	// metering is off.
	ledger *metering.Ledger
	caps   *spendCaps // the admission gate's spend caps, on the ledger's sums

	mu   sync.Mutex
	last map[string]*meterState // by the scope's cgroup path
	// settled holds the cursors of scopes no longer live (removed, or left
	// by a previous daemon life) whose cgroups may still be there, by
	// path, with their cgroup ids: a cursor stays in the ledger until its
	// cgroup is gone, so that a daemon dying in between charges only what
	// the cgroup used after it, never all of it again.
	settled map[string]uint64
	probe   cgroupProbe
	// unpublished is the tenants whose usage the flushes since the loop's
	// last publish added to the ledger: their spend totals go to the
	// fleet (spendCaps.publish; kept only when it is set).
	unpublished map[ident.Tenant]bool
	// journal keeps the invocation counters between flushes across a
	// kill of the daemon (meterjournal.go).
	journal invJournal
}

var _ component = (*meter)(nil)

func newMeter(d meterDeps) *meter {
	m := &meter{meterDeps: d, last: map[string]*meterState{}, settled: map[string]uint64{}, probe: probeCgroup}
	m.journal.full = make(chan struct{}, 1)
	m.loop = newGoLoop(m.run)
	return m
}

// useLedger meters into l, with the spend caps on its sums.
func (m *meter) useLedger(l *metering.Ledger) {
	m.ledger = l
	m.caps = newSpendCaps(l, func() MeteringConfig { return m.conf().Metering }, m.log, m.metrics.IncError)
}

// cgroupProbe reads the CPU counter and id of the cgroup at path; ok is
// false when it is gone.
type cgroupProbe func(path string) (cpu time.Duration, id uint64, ok bool)

func probeCgroup(p string) (time.Duration, uint64, bool) {
	n, err := cgroups.Load(p)
	if err != nil || !n.Exists() {
		return 0, 0, false
	}
	st, err := n.Stats()
	if err != nil {
		return 0, 0, false
	}
	id, _ := n.ID() // 0 without a unified hierarchy
	return st.CPUUsage, id, true
}

// open opens the ledger in state_dir/metering and settles what a
// previous daemon life left: its workers died with it, but its scopes'
// cgroups are still there (Recover removes them afterwards), so the CPU
// time they used since their last flush, or since they were made if they
// had none, is read from their counters and charged, and the invocation
// counters since from the invocation journal; the other meters' unflushed
// part (memory, network) is lost.
func (m *meter) open() error {
	c := m.conf().Metering
	if !c.Enabled {
		return nil
	}
	l, err := metering.Open(filepath.Join(m.conf().StateDir, "metering"), c.Window.Duration)
	if err != nil {
		return fmt.Errorf("metering ledger: %w", err)
	}
	j, err := metering.OpenJournal(l.Dir())
	if err != nil {
		_ = l.Close()
		return fmt.Errorf("metering ledger: %w", err)
	}
	if err := m.settlePrevious(l, j); err != nil {
		_ = j.Close()
		_ = l.Close()
		return fmt.Errorf("metering ledger: %w", err)
	}
	m.journal.j.Store(j)
	if f := &m.conf().Fleet; f.Enabled() {
		l.SetNode(f.Node) // record ids include the node, for exporters to dedupe across nodes
	}
	m.useLedger(l)
	return nil
}

// settlePrevious charges what the scopes of a previous daemon life used
// after their last flush (see recoverUsage) and the invocations the
// journal j holds beyond their cursors (see replayJournal), in one
// transaction on l, then releases the journal's older files.
// Without a cgroup tree only the cursors' cgroups are looked at.
func (m *meter) settlePrevious(l *metering.Ledger, j *metering.Journal) error {
	old, err := l.Cursors()
	if err != nil {
		return err
	}
	var present []string
	if m.tree != nil {
		// The scope cgroups are <root>/<tier>/<tenant>/<scope>.
		if present, err = m.tree.Descendants(3); err != nil {
			return err
		}
	}
	pol := m.conf().Isolation
	idOf := func(p string) (ScopeID, bool) {
		elems := strings.Split(strings.TrimPrefix(p, m.tree.Root()+"/"), "/")
		if len(elems) != 3 {
			return ScopeID{}, false
		}
		return pol.idOf(elems[1], elems[2]), true
	}
	now := time.Now()
	deltas, cursors, unflushed := recoverUsage(old, present, idOf, m.probe, now)
	inv, upTo := m.replayJournal(j, old, cursors, now)
	deltas = append(deltas, inv...)
	if len(deltas) > 0 || len(cursors) > 0 {
		if err := l.Commit(deltas, cursors); err != nil {
			return err
		}
	}
	if err := j.Release(upTo); err != nil {
		m.log.Error("metering: invocation journal release", "err", err)
	}
	m.mu.Lock()
	for k, b := range cursors {
		var st meterState
		if b != nil && json.Unmarshal(b, &st) == nil {
			m.settled[k] = st.CgID
		}
	}
	m.mu.Unlock()
	if len(deltas) > 0 || unflushed > 0 {
		m.log.Warn("metering: settled the previous run's scopes; CPU time since its last flush recovered from their cgroups, invocations from the journal, memory and network's unflushed part lost",
			"scopes", len(cursors), "recovered", len(deltas), "invocation_deltas", len(inv), "never_flushed", unflushed)
	}
	return nil
}

// close closes the ledger (after the scopes' last flush).
// goneSettledLocked lists the settled cursors whose cgroups are gone (or
// made again): those leave the ledger. Callers hold m.mu.
func (m *meter) goneSettledLocked() []string {
	var gone []string
	for key, cgid := range m.settled {
		if _, id, ok := m.probe(key); !ok || (cgid != 0 && id != 0 && id != cgid) {
			gone = append(gone, key)
		}
	}
	return gone
}

func (m *meter) close() error {
	if m.ledger == nil {
		return nil
	}
	// The scopes are removed by now: their settled cursors go with them,
	// so that a clean stop leaves none for the next start to settle.
	m.mu.Lock()
	drop := map[string][]byte{}
	for _, key := range m.goneSettledLocked() {
		drop[key] = nil
	}
	var err error
	if len(drop) > 0 {
		if err = m.ledger.Commit(nil, drop); err == nil {
			for key := range drop {
				delete(m.settled, key)
			}
		}
	}
	jerr := m.closeJournal()
	m.mu.Unlock()
	return errors.Join(err, jerr, m.ledger.Close())
}

// recoverUsage charges what the scopes of a previous daemon life used
// after their cursors, read from their cgroups' CPU counters: all of it
// for a scope cgroup in present that has no cursor (it died before its
// first flush) or whose cursor is of an earlier cgroup of the same path.
// It returns the deltas, the cursors to commit with them (a settled
// reading for each cgroup still there, nil to drop the others), and how
// many scopes had never been flushed.
func recoverUsage(cursors map[string][]byte, present []string, idOf func(string) (ScopeID, bool),
	probe cgroupProbe, now time.Time) ([]metering.Delta, map[string][]byte, int) {
	var out []metering.Delta
	next := make(map[string][]byte, len(cursors)+len(present))
	charge := func(key string, id ScopeID, since time.Duration, cgid uint64) {
		cpu, nowID, ok := probe(key)
		if !ok {
			next[key] = nil
			return
		}
		if cgid != 0 && nowID != 0 && cgid != nowID {
			since = 0 // a later cgroup of the same path
		}
		if cpu > since {
			out = append(out, metering.Delta{
				Tenant: id.Tenant, Meter: metering.CPUSeconds, At: now, Value: (cpu - since).Seconds(),
				Dims: metering.Dimensions{Scope: id.Key(), Environment: id.Environment, Extension: id.Extension},
			})
		}
		b, err := json.Marshal(meterState{ID: id, Cgroup: key, CPU: cpu, At: now, CgID: nowID})
		if err != nil {
			next[key] = nil
			return
		}
		next[key] = b
	}
	for key, b := range cursors {
		var st meterState
		if err := json.Unmarshal(b, &st); err != nil || st.ID.Tenant == "" {
			next[key] = nil
			continue
		}
		charge(key, st.ID, st.CPU, st.CgID)
	}
	unflushed := 0
	for _, key := range present {
		if _, ok := cursors[key]; ok {
			continue
		}
		id, ok := idOf(key)
		if !ok {
			continue
		}
		unflushed++
		charge(key, id, 0, 0)
	}
	return out, next, unflushed
}

// countInvocation adds one invocation to the scope's per-extension use
// and, given a journal, appends the extension's counters to it.
func (sc *scope) countInvocation(ext string, d time.Duration, cold bool, j *metering.Journal) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.use == nil {
		sc.use = map[string]*extUse{}
	}
	u := sc.use[ext]
	if u == nil {
		u = &extUse{}
		sc.use[ext] = u
	}
	u.invocations++
	u.seconds += d.Seconds()
	if cold {
		u.cold++
	}
	if j == nil {
		return nil
	}
	e := journalEntry(sc, ext, u)
	return j.Append(&e)
}

// flush commits every live scope's usage since the last flush;
// given removed, the scopes going away now, it commits theirs alone (their
// cursors are dropped in the same transaction), so that removing a scope
// costs the same however many others live.
func (m *meter) flush(removed ...*scope) error {
	if m.ledger == nil {
		return nil
	}
	var scopes []*scope
	if len(removed) == 0 {
		scopes = m.scopes(nil)
	}
	scopes = append(scopes, removed...)
	removing := map[string]bool{}
	for _, sc := range removed {
		removing[sc.node.Path()] = true
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var upTo uint64
	var appended map[*scope]struct{}
	rotated := false
	if len(removed) == 0 {
		// Before the readings: the older journal files then hold no
		// count the readings lack.
		upTo, appended, rotated = m.rotateJournal()
		defer func() {
			if rotated { // not released: the next full flush sees these scopes too
				m.keepAppended(appended)
			}
		}()
	}
	var deltas []metering.Delta
	cursors := map[string][]byte{}
	next := map[string]*meterState{}
	gone := m.goneSettledLocked()
	for _, sc := range scopes {
		// Keyed by cgroup path: a scope that changed tier has a successor
		// under the same name while it winds down.
		key := sc.node.Path()
		cur, err := m.reading(sc, now)
		if err != nil {
			m.metrics.IncError("metering_read")
			continue
		}
		prev := m.last[key]
		if prev == nil || prev.CgID != cur.CgID || prev.Cgroup != cur.Cgroup {
			// First reading of this scope (or a new cgroup under the
			// name): everything it used so far is new.
			prev = &meterState{At: sc.created, Ext: map[string][3]int64{}, CgID: cur.CgID}
		}
		deltas = append(deltas, usageDeltas(sc, prev, cur, now)...)
		b, err := json.Marshal(cur)
		if err != nil {
			return err
		}
		// A removed scope's last reading stays as a settled cursor
		// until its cgroup is gone.
		cursors[key] = b
		next[key] = cur
	}
	for _, key := range gone {
		if _, ok := cursors[key]; !ok {
			cursors[key] = nil
		}
	}
	if err := m.ledger.Commit(deltas, cursors); err != nil {
		m.metrics.IncError("metering_commit")
		m.flushFailed()
		return fmt.Errorf("metering: %w", err)
	}
	if rotated {
		committed := make(map[*scope]bool, len(scopes))
		for _, sc := range scopes {
			committed[sc] = next[sc.node.Path()] != nil
		}
		m.releaseJournal(upTo, appended, committed)
		rotated = false
	}
	for _, key := range gone {
		delete(m.settled, key)
	}
	if m.caps != nil && m.caps.fleet.Load() != nil {
		if m.unpublished == nil {
			m.unpublished = map[ident.Tenant]bool{}
		}
		for _, d := range deltas {
			m.unpublished[ident.Tenant(d.Tenant)] = true
		}
	}
	for key, st := range next {
		if removing[key] {
			delete(m.last, key)
			m.settled[key] = st.CgID
			continue
		}
		// A live scope's cursor replaces a settled one of the same path.
		delete(m.settled, key)
		m.last[key] = st
	}
	// Close the windows that ended a flush ago (late readings of a closed
	// window go to the first open one).
	if _, err := m.ledger.Seal(now.Add(-m.conf().Metering.Flush.Duration)); err != nil {
		return fmt.Errorf("metering: %w", err)
	}
	return nil
}

// reading is a scope's cumulative usage now.
func (m *meter) reading(sc *scope, now time.Time) (*meterState, error) {
	st, err := sc.node.Stats()
	if err != nil {
		return nil, err
	}
	cur := &meterState{ID: sc.id, Cgroup: sc.node.Path(), CPU: st.CPUUsage, At: now, Mem: st.MemoryCurrent,
		CgID: sc.nodeID, Ext: map[string][3]int64{}}
	u := Usage{}
	if m.acct.usage(sc, &u) {
		cur.Rx, cur.Tx = u.NetRxBytes, u.NetTxBytes
	}
	sc.mu.Lock()
	for ext, e := range sc.use {
		cur.Ext[ext] = [3]int64{e.invocations, e.cold, int64(e.seconds * 1e6)}
	}
	sc.mu.Unlock()
	return cur, nil
}

// usageDeltas turns two readings of a scope into ledger deltas. Memory is
// integrated as the mean of the two readings over the time between them.
func usageDeltas(sc *scope, prev, cur *meterState, now time.Time) []metering.Delta {
	dims := metering.Dimensions{Scope: sc.id.Key(), Environment: sc.id.Environment, Extension: sc.id.Extension}
	var out []metering.Delta
	add := func(meter string, d metering.Dimensions, v float64) {
		if v > 0 {
			out = append(out, metering.Delta{Tenant: sc.id.Tenant, Meter: meter, Dims: d, At: now, Value: v})
		}
	}
	if cur.CPU > prev.CPU {
		add(metering.CPUSeconds, dims, (cur.CPU - prev.CPU).Seconds())
	}
	if dt := cur.At.Sub(prev.At); dt > 0 {
		add(metering.MemoryGiBSeconds, dims, float64(prev.Mem+cur.Mem)/2/(1<<30)*dt.Seconds())
	}
	if cur.Rx > prev.Rx {
		add(metering.NetBytesIn, dims, float64(cur.Rx-prev.Rx))
	}
	if cur.Tx > prev.Tx {
		add(metering.NetBytesOut, dims, float64(cur.Tx-prev.Tx))
	}
	exts := make([]string, 0, len(cur.Ext))
	for ext := range cur.Ext {
		exts = append(exts, ext)
	}
	sort.Strings(exts)
	for _, ext := range exts {
		c, p := cur.Ext[ext], prev.Ext[ext]
		d := dims
		d.Extension = ext
		add(metering.Invocations, d, float64(c[0]-p[0]))
		add(metering.ColdStarts, d, float64(c[1]-p[1]))
		add(metering.InvocationSeconds, d, float64(c[2]-p[2])/1e6)
	}
	return out
}

// Start starts the loop that flushes every [metering] flush (none while
// metering is off).
func (m *meter) Start(ctx context.Context) error {
	if m.ledger == nil {
		return nil
	}
	return m.loop.Start(ctx)
}

// Stop stops the loop and waits for it.
func (m *meter) Stop() error { return m.loop.Stop() }

// run flushes every [metering] flush until ctx ends, and prunes records
// past the retention once an hour.
func (m *meter) run(ctx context.Context) {
	beat(m.alive)
	defer m.alive.Store(0)
	alive := time.NewTicker(heartbeatEvery)
	defer alive.Stop()
	var pruned time.Time
	next := time.NewTimer(m.conf().Metering.Flush.Duration)
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-alive.C:
			beat(m.alive)
			continue
		case <-next.C:
		case <-m.journal.full: // the invocation journal is large: flush early
		}
		beat(m.alive)
		if err := m.flush(); err != nil {
			m.log.Error("metering flush", "err", err)
		}
		m.publishSpend(time.Now())
		if time.Since(pruned) >= time.Hour {
			pruned = time.Now()
			n, err := m.ledger.Prune(pruned.Add(-m.conf().Metering.Retention.Duration))
			switch {
			case err != nil:
				m.log.Error("metering prune", "err", err)
				m.metrics.IncError("metering_prune")
			case n > 0:
				m.log.Info("metering: pruned delivered records past the retention", "records", n)
			}
		}
		next.Reset(m.conf().Metering.Flush.Duration)
	}
}

// publishSpend publishes the spend totals of the tenants the flushes since
// the last call added usage of (in a fleet; see spendCaps.publish).
func (m *meter) publishSpend(now time.Time) {
	if m.caps == nil {
		return
	}
	m.mu.Lock()
	tenants := m.unpublished
	m.unpublished = nil
	m.mu.Unlock()
	m.caps.publish(tenants, now)
}

// UsageQuery asks the ledger for a tenant's usage.
type UsageQuery = metering.Query

// UsageRow is one row of a usage report.
type UsageRow = metering.Row

// TenantUsage reports a tenant's metered usage from the ledger, with the
// usage since the last flush committed first.
func (s *Supervisor) TenantUsage(q UsageQuery) ([]UsageRow, error) { return s.meter.usage(q) }

// usage is TenantUsage (a nil meter is off).
func (m *meter) usage(q UsageQuery) ([]UsageRow, error) {
	if m == nil || m.ledger == nil {
		return nil, fmt.Errorf("%w: metering is off ([metering] enabled = false)", ErrNotFound)
	}
	if err := m.flush(); err != nil {
		return nil, err
	}
	rows, err := m.ledger.Usage(q)
	if errors.Is(err, metering.ErrInvalid) {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return rows, err
}

// checkCaps refuses an invocation of a tenant past one of its tier's spend
// caps (none while metering is off); the admission gate calls it.
func (m *meter) checkCaps(tenant ident.Tenant, tierName string, t Tier, now time.Time) error {
	if m.caps == nil {
		return nil
	}
	return m.caps.check(tenant, tierName, t, now)
}
