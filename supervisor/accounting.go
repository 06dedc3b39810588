package supervisor

import (
	"fmt"

	"github.com/scoped-io/scoped/accounting"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/metrics"
)

// openAccounting starts per-scope accounting: eBPF where it loads, the
// cgroup files otherwise (or when the configuration asks for them).
func (s *Supervisor) openAccounting() error {
	mode := s.conf().Accounting.Mode
	opts := accounting.Options{ForceFallback: mode == "cgroupfs", Logger: s.log}
	root, err := cgroups.Load(s.tree.Root())
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
	s.acct = src
	return nil
}

// closeAccounting detaches what accounting attached (after the scopes).
func (s *Supervisor) closeAccounting() error {
	if s.acct == nil {
		return nil
	}
	return s.acct.Close()
}

// track starts accounting a new scope; a failure is logged, not fatal:
// the scope then has its cgroup figures only.
func (s *Supervisor) track(sc *scope) {
	id, err := sc.node.ID()
	if err != nil {
		id = 0
	}
	sc.cgid, sc.nodeID = id, id
	if s.acct == nil {
		return
	}
	if err := s.acct.Track(id, sc.node); err != nil {
		s.log.Warn("scope not accounted", "tenant", sc.id.Tenant, "scope", sc.id.Key(), "err", err)
		s.metrics.IncError("accounting_track")
		sc.cgid = 0
	}
}

func (s *Supervisor) untrack(sc *scope) {
	if s.acct != nil && sc.cgid != 0 {
		if err := s.acct.Untrack(sc.cgid); err != nil {
			s.log.Warn("untrack scope", "scope", sc.id.Key(), "err", err)
		}
	}
}

// accountingUsage fills u from the scope's accounted counters.
func (s *Supervisor) accountingUsage(sc *scope, u *Usage) bool {
	if s.acct == nil || sc.cgid == 0 {
		return false
	}
	c, err := s.acct.Read(sc.cgid)
	if err != nil {
		return false
	}
	u.Source = s.acct.Name()
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
			if other := s.scopes.find(func(o *scope) bool { return o.cgid == id }); other != nil {
				key = other.id.Key()
			}
			u.PreemptedBy[key] += n
		}
	}
	return true
}

// addAccountingDaemon reports the accounting source and its own cost.
func (s *Supervisor) addAccountingDaemon(d *metrics.DaemonSample) {
	if s.acct == nil {
		return
	}
	st := s.acct.Stats()
	d.AccountingSource = st.Source
	if len(st.Programs) > 0 {
		d.BPFPrograms = make(map[string]metrics.BPFProgramStats, len(st.Programs))
		for name, p := range st.Programs {
			d.BPFPrograms[name] = metrics.BPFProgramStats{RunTime: p.RunTime, RunCount: p.RunCount}
		}
	}
}
