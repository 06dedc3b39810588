package supervisor

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scoped-io/scoped/metering"
)

// The invocation journal (metering.Journal) keeps the invocation counters
// between two flushes across a kill of the daemon: each finished invocation
// appends its scope's cumulative counters of the extension (under the
// scope's lock, so a scope's records are in the order of its counters); a
// full flush rotates the journal before it reads the scopes and releases
// the older files once the ledger committed the readings; the next start
// charges what the journal holds beyond the cursors (settlePrevious).

// maxJournalKeys bounds the (scope, extension) pairs one replay charges
// (three deltas each, within metering.MaxDeltas).
const maxJournalKeys = 30_000

// journalFlushAt is the size of the current journal file past which the
// meter flushes early, so that the journal (and a replay) stays bounded
// whatever [metering] flush is.
const journalFlushAt = 64 << 20

// invJournal is the meter's journal and the scopes that appended to it
// since the last rotation.
type invJournal struct {
	j atomic.Pointer[metering.Journal] // nil: none (metering off, or closed)

	mu sync.Mutex // guards the fields below, and orders rotation against appends
	// appended holds the scopes that appended since the last rotation: a
	// full flush that did not commit one of them (a scope being removed,
	// out of the registry but not yet flushed) appends its counters again
	// to the new file before it releases the old ones.
	appended map[*scope]struct{}
	// dirty: a commit failed since the last full flush that succeeded; a
	// clean stop then keeps the journal.
	dirty bool

	// full asks the meter's loop for an early flush (journalFlushAt).
	full chan struct{}
}

// countInvocation counts one finished invocation of ext in sc, and journals
// the scope's counters (a nil meter counts only).
func (m *meter) countInvocation(sc *scope, ext string, d time.Duration, cold bool) {
	var j *metering.Journal
	if m != nil {
		if j = m.journal.j.Load(); j != nil {
			m.journal.mu.Lock()
			if m.journal.appended == nil {
				m.journal.appended = map[*scope]struct{}{}
			}
			m.journal.appended[sc] = struct{}{}
			m.journal.mu.Unlock()
		}
	}
	if err := sc.countInvocation(ext, d, cold, j); err != nil {
		m.metrics.IncError("metering_journal")
	}
	if j != nil && j.Size() > journalFlushAt {
		select {
		case m.journal.full <- struct{}{}:
		default:
		}
	}
}

// journalEntry is the journal record of sc's counters u of ext. Callers
// hold sc.mu.
func journalEntry(sc *scope, ext string, u *extUse) metering.JournalEntry {
	return metering.JournalEntry{Key: sc.node.Path(), CgID: sc.nodeID, Tenant: sc.id.Tenant,
		Dims:        metering.Dimensions{Scope: sc.id.Key(), Environment: sc.id.Environment, Extension: ext},
		Invocations: u.invocations, ColdStarts: u.cold, Micros: int64(u.seconds * 1e6)}
}

// rotateJournal starts a new journal file before a full flush reads the
// scopes. It returns the last older file and the scopes that appended to
// the older files (ok false: no journal, or it failed). Callers hold m.mu.
func (m *meter) rotateJournal() (upTo uint64, appended map[*scope]struct{}, ok bool) {
	j := m.journal.j.Load()
	if j == nil {
		return 0, nil, false
	}
	m.journal.mu.Lock()
	defer m.journal.mu.Unlock()
	upTo, err := j.Rotate()
	if err != nil {
		m.metrics.IncError("metering_journal")
		m.log.Error("metering: invocation journal rotation", "err", err)
		return 0, nil, false
	}
	appended, m.journal.appended = m.journal.appended, nil
	return upTo, appended, true
}

// keepAppended puts back the scopes a full flush that failed took from the
// journal's list, since the files they appended to stay.
func (m *meter) keepAppended(appended map[*scope]struct{}) {
	if len(appended) == 0 {
		return
	}
	m.journal.mu.Lock()
	defer m.journal.mu.Unlock()
	if m.journal.appended == nil {
		m.journal.appended = map[*scope]struct{}{}
	}
	for sc := range appended {
		m.journal.appended[sc] = struct{}{}
	}
}

// releaseJournal, after a full flush committed the scopes in committed,
// appends the counters of the other scopes that appended to the released
// files and whose cgroups are still there (being removed) to the current
// file, then removes the files up to upTo. Callers hold m.mu.
func (m *meter) releaseJournal(upTo uint64, appended map[*scope]struct{}, committed map[*scope]bool) {
	j := m.journal.j.Load()
	if j == nil {
		return
	}
	m.journal.mu.Lock()
	m.journal.dirty = false
	m.journal.mu.Unlock()
	for sc := range appended {
		if committed[sc] {
			continue
		}
		if _, id, ok := m.probe(sc.node.Path()); !ok || (id != 0 && sc.nodeID != 0 && id != sc.nodeID) {
			continue // removed: its last flush is in the ledger or lost
		}
		m.journal.mu.Lock()
		if m.journal.appended == nil {
			m.journal.appended = map[*scope]struct{}{}
		}
		m.journal.appended[sc] = struct{}{}
		m.journal.mu.Unlock()
		if err := sc.journalAll(j); err != nil {
			m.metrics.IncError("metering_journal")
			m.log.Error("metering: invocation journal append; older files kept", "err", err)
			m.keepAppended(appended)
			return
		}
	}
	if err := j.Release(upTo); err != nil {
		m.metrics.IncError("metering_journal")
		m.log.Error("metering: invocation journal release", "err", err)
	}
}

// journalAll appends sc's counters of every extension to j.
func (sc *scope) journalAll(j *metering.Journal) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for ext, u := range sc.use {
		e := journalEntry(sc, ext, u)
		if err := j.Append(&e); err != nil {
			return err
		}
	}
	return nil
}

// flushFailed marks the journal as holding counts the ledger may lack.
func (m *meter) flushFailed() {
	m.journal.mu.Lock()
	m.journal.dirty = true
	m.journal.mu.Unlock()
}

// closeJournal closes the journal at a clean stop: it removes its files when
// every scope's last flush was committed (none live, no failed commit since
// the last full flush), else keeps them for the next start.
func (m *meter) closeJournal() error {
	j := m.journal.j.Swap(nil)
	if j == nil {
		return nil
	}
	m.journal.mu.Lock()
	dirty := m.journal.dirty
	m.journal.mu.Unlock()
	if dirty || len(m.last) > 0 {
		return j.Close()
	}
	return j.Drop()
}

// journalKey names the counters of one extension in one scope life.
type journalKey struct {
	key  string
	cgid uint64
	ext  string
}

// replayJournal reads the journal a previous daemon life left and returns
// the invocation deltas it holds beyond the cursors old, and the last file
// read (for Release). next holds the cursors settlePrevious commits (nil:
// dropped); the counters charged go into those of the same cgroup, so that
// replaying the journal again charges nothing. A scope life's counters are
// charged from its cursor when old has one of the same cgroup, all of them
// when its cgroup is still there without one (never flushed), and not at
// all otherwise (its cursor was dropped with its cgroup: it was flushed).
func (m *meter) replayJournal(j *metering.Journal, old, next map[string][]byte, now time.Time) ([]metering.Delta, uint64) {
	last := map[journalKey]metering.JournalEntry{}
	var order []journalKey
	upTo, err := j.Replay(func(e metering.JournalEntry) error {
		k := journalKey{e.Key, e.CgID, e.Dims.Extension}
		if _, ok := last[k]; !ok {
			if len(last) >= maxJournalKeys {
				m.log.Error("metering: invocation journal holds too many scopes; the rest are not charged", "max", maxJournalKeys)
				return metering.StopReplay()
			}
			order = append(order, k)
		}
		last[k] = e
		return nil
	}, func(file string, err error) {
		m.metrics.IncError("metering_journal")
		m.log.Error("metering: invocation journal damaged; its replay stopped there", "file", file, "err", err)
	})
	if err != nil {
		m.metrics.IncError("metering_journal")
		m.log.Error("metering: invocation journal", "err", err)
		return nil, 0
	}
	states := map[string]*meterState{}
	parse := func(src map[string][]byte, key string) *meterState {
		b := src[key]
		if b == nil {
			return nil
		}
		var st meterState
		if json.Unmarshal(b, &st) != nil {
			return nil
		}
		return &st
	}
	same := func(a, b uint64) bool { return a == 0 || b == 0 || a == b }
	var out []metering.Delta
	for _, k := range order {
		e := last[k]
		o := parse(old, k.key)
		n, ok := states[k.key]
		if !ok {
			n = parse(next, k.key)
			states[k.key] = n
		}
		var base [3]int64
		switch {
		case o != nil && same(o.CgID, k.cgid):
			base = o.Ext[k.ext]
		case n != nil && same(n.CgID, k.cgid):
		default:
			continue
		}
		cum := [3]int64{e.Invocations, e.ColdStarts, e.Micros}
		for i, meter := range [3]string{metering.Invocations, metering.ColdStarts, metering.InvocationSeconds} {
			v := float64(cum[i] - base[i])
			if meter == metering.InvocationSeconds {
				v /= 1e6
			}
			if v <= 0 {
				continue
			}
			d := metering.Delta{Tenant: e.Tenant, Meter: meter, Dims: e.Dims, At: now, Value: v}
			if err := d.Validate(); err != nil {
				m.log.Error("metering: invocation journal record not charged", "scope", e.Dims.Scope, "err", err)
				continue
			}
			out = append(out, d)
		}
		if n != nil && same(n.CgID, k.cgid) {
			if n.Ext == nil {
				n.Ext = map[string][3]int64{}
			}
			c := n.Ext[k.ext]
			for i := range c {
				c[i] = max(c[i], cum[i], base[i])
			}
			n.Ext[k.ext] = c
		}
	}
	for key, st := range states {
		if st == nil {
			continue
		}
		if b, err := json.Marshal(st); err == nil {
			next[key] = b
		}
	}
	return out, upTo
}
