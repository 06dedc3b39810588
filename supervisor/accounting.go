package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/scoped-io/scoped/accounting"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/control"
	"github.com/scoped-io/scoped/metrics"
)

var (
	_ component             = (*accountant)(nil)
	_ control.CounterReader = (*accountant)(nil) // the controller reads the scopes' counters
)

// accountant counts what each live scope uses through an accounting
// source: eBPF where it loads, the cgroup files otherwise (or when the
// configuration asks for them). It is a component: Start opens the source,
// Stop closes it (after the scopes). Before Start a scope has its cgroup
// figures only.
type accountant struct {
	tree *cgroups.Tree // the scopes' cgroup root
	conf func() *Config
	// find returns a live scope match accepts, or nil (the registry's
	// find): preemptions name the scope of the preempting cgroup.
	find    func(match func(*scope) bool) *scope
	metrics *metrics.Registry
	log     *slog.Logger

	mu  sync.Mutex
	src accounting.Source // nil until Start; closed (not nil) after Stop
}

func newAccountant(tree *cgroups.Tree, conf func() *Config, find func(func(*scope) bool) *scope,
	m *metrics.Registry, log *slog.Logger) *accountant {
	return &accountant{tree: tree, conf: conf, find: find, metrics: m, log: log}
}

// source is the accounting source (nil: not started).
func (a *accountant) source() accounting.Source {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.src
}

// opened reports whether Start opened the source.
func (a *accountant) opened() bool { return a.source() != nil }

// Start opens the accounting source by [accounting] mode.
func (a *accountant) Start(context.Context) error {
	mode := a.conf().Accounting.Mode
	opts := accounting.Options{ForceFallback: mode == "cgroupfs", BPFStats: a.conf().Accounting.BPFStats, Logger: a.log}
	root, err := cgroups.Load(a.tree.Root())
	if err != nil {
		return err
	}
	if dir := root.UnifiedDir(); dir != "" {
		id, err := root.ID()
		if err != nil {
			return err
		}
		level, err := accounting.Level(dir)
		if err != nil {
			return err
		}
		// <root>/<tier>/<tenant>/<scope>
		opts.RootID, opts.RootLevel, opts.ScopeLevel = id, level, level+3
	}
	src, err := accounting.Open(opts)
	if err != nil {
		return fmt.Errorf("accounting: %w", err)
	}
	if mode == "ebpf" && src.Name() != accounting.SourceEBPF {
		_ = src.Close()
		return fmt.Errorf("%w: accounting.mode is \"ebpf\" but eBPF accounting is not available: %v", ErrConfig, src.Stats().Reason)
	}
	a.mu.Lock()
	a.src = src
	a.mu.Unlock()
	return nil
}

// Stop detaches what accounting attached (after the scopes).
func (a *accountant) Stop() error {
	src := a.source()
	if src == nil {
		return nil
	}
	return src.Close()
}

// Read returns the counters of the scope whose cgroup id is id (the
// noisy-neighbour controller's view): accounting.ErrClosed before Start
// and after Stop.
func (a *accountant) Read(id uint64) (accounting.Counters, error) {
	src := a.source()
	if src == nil {
		return accounting.Counters{}, accounting.ErrClosed
	}
	return src.Read(id)
}

// track starts accounting a new scope; a failure is logged, not fatal:
// the scope then has its cgroup figures only.
func (a *accountant) track(sc *scope) {
	id, err := sc.node.ID()
	if err != nil {
		id = 0
	}
	sc.cgid, sc.nodeID = id, id
	src := a.source()
	if src == nil {
		return
	}
	if err := src.Track(id, sc.node); err != nil {
		a.log.Warn("scope not accounted", "tenant", sc.id.Tenant, "scope", sc.id.Key(), "err", err)
		a.metrics.IncError("accounting_track")
		sc.cgid = 0
	}
}

func (a *accountant) untrack(sc *scope) {
	if src := a.source(); src != nil && sc.cgid != 0 {
		if err := src.Untrack(sc.cgid); err != nil {
			a.log.Warn("untrack scope", "scope", sc.id.Key(), "err", err)
		}
	}
}

// scopeUsage is the scope's accounted use: eBPF counters where accounting
// runs, the cgroup's own figures (st) otherwise.
func (a *accountant) scopeUsage(sc *scope, st cgroups.Stats) Usage {
	u := Usage{Source: "cgroupfs", CPU: st.CPUUsage, Invocations: sc.invocations.Load(), Time: time.Now()}
	a.usage(sc, &u)
	return u
}

// usage fills u from the scope's accounted counters.
func (a *accountant) usage(sc *scope, u *Usage) bool {
	src := a.source()
	if src == nil || sc.cgid == 0 {
		return false
	}
	c, err := src.Read(sc.cgid)
	if err != nil {
		return false
	}
	u.Source = src.Name()
	u.CPU = c.CPU
	if u.Source != accounting.SourceEBPF {
		return true
	}
	u.RunqBuckets = append([]uint64(nil), c.RunqDelay.Buckets[:]...)
	u.RunqCount, u.RunqSum = c.RunqDelay.Count, c.RunqDelay.Sum
	u.Preemptions = c.Preemptions
	u.NetRxBytes, u.NetTxBytes = c.NetRxBytes, c.NetTxBytes
	u.NetRxPackets, u.NetTxPackets = c.NetRxPackets, c.NetTxPackets
	if len(c.PreemptedBy) > 0 {
		u.PreemptedBy = make(map[string]uint64, len(c.PreemptedBy))
		for id, n := range c.PreemptedBy {
			key := fmt.Sprintf("cgroup-%d", id)
			if other := a.find(func(o *scope) bool { return o.cgid == id }); other != nil {
				key = other.id.Key()
			}
			u.PreemptedBy[key] += n
		}
	}
	return true
}

// addScope copies the scope's accounted figures into the sample.
func (a *accountant) addScope(sc *scope, sample *metrics.ScopeSample) {
	u := Usage{}
	if !a.usage(sc, &u) {
		return
	}
	sample.CPU = u.CPU
	sample.RunqBuckets, sample.RunqCount, sample.RunqSum = u.RunqBuckets, u.RunqCount, u.RunqSum
	sample.PreemptedBy = u.PreemptedBy
	sample.NetRxBytes, sample.NetTxBytes = u.NetRxBytes, u.NetTxBytes
	sample.NetRxPackets, sample.NetTxPackets = u.NetRxPackets, u.NetTxPackets
}

// addDaemon reports the accounting source and its own cost.
func (a *accountant) addDaemon(d *metrics.DaemonSample) {
	src := a.source()
	if src == nil {
		return
	}
	st := src.Stats()
	d.AccountingSource = st.Source
	if len(st.Programs) > 0 {
		d.BPFPrograms = make(map[string]metrics.BPFProgramStats, len(st.Programs))
		for name, p := range st.Programs {
			d.BPFPrograms[name] = metrics.BPFProgramStats{RunTime: p.RunTime, RunCount: p.RunCount}
		}
	}
}
