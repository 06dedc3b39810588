//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package accounting

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// pairRefresh is how often, at most, Read and Stats re-read the pair map
// when a scope's preemption total no longer matches what they read last.
const pairRefresh = 250 * time.Millisecond

// trackRetries bounds how often Track retries an insert the kernel refused
// with ENOMEM, trackBackoff is the first pause (doubled each time; about
// 0.5 s in all). The per-CPU values of acct_scopes (BPF_F_NO_PREALLOC) come
// from a per-CPU cache that the kernel refills in atomic context, which can
// take only per-CPU pages already populated: while creating cgroups
// (memcgs) eats those pages, an insert fails until the kernel's percpu
// balance work has populated more, which a short pause lets it do.
// (Preallocating instead would pin MaxScopes × 328 bytes × possible CPUs.)
const (
	trackRetries = 8
	trackBackoff = 2 * time.Millisecond
)

// Indices of acct_drops (enum in bpf/accounting.c).
const (
	dropPair = iota
	dropTask
	dropMax
)

// acctLoaded is what the source keeps of the collection. Not acctObjects:
// loading its Variables would mmap .rodata, which keeps that map in the
// kernel until the garbage collector unmaps it, after Close.
type acctLoaded struct {
	acctPrograms
	acctMaps
}

// ebpfSource counts in the kernel with the programs of bpf/accounting.c.
type ebpfSource struct {
	opts    Options
	objs    acctLoaded
	tps     []link.Link // the scheduler tracepoints
	statsFD io.Closer   // BPF_ENABLE_STATS; nil where the kernel refused

	mu     sync.Mutex
	closed bool
	scopes map[uint64]*trackedScope
	pairs  pairCache
	// gone are the scopes untracked since the last sweep of acct_pairs,
	// whose pair entries may still be there: Untrack leaves them to the
	// next readPairs (finding them means walking the whole map). Readers
	// skip pairs that name a scope not tracked.
	gone map[uint64]struct{}
	// retried counts the inserts Track retried after ENOMEM.
	retried int
	// update replaces the acct_scopes insert in tests; nil in use.
	update func(id uint64, zero []acctScopeStats) error
}

var _ Source = (*ebpfSource)(nil)

type trackedScope struct {
	links []link.Link // cgroup_skb ingress and egress on the scope's directory
}

// pairCache is the last read of acct_pairs.
type pairCache struct {
	at      time.Time
	by      map[uint64]map[uint64]uint64 // victim → preemptor → count
	sums    map[uint64]uint64            // victim → total of by[victim]
	entries int
}

func openEBPF(opts Options) (_ *ebpfSource, err error) {
	if opts.RootID == 0 {
		return nil, notSupported("no unified cgroup hierarchy (root cgroup id 0)", nil)
	}
	if _, err := btf.LoadKernelSpec(); err != nil {
		return nil, notSupported("kernel BTF", err)
	}
	// The programs are CO-RE-relocated against the kernel's BTF, which
	// cilium/ebpf keeps cached otherwise: megabytes for nothing.
	defer btf.FlushKernelSpec()
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, notSupported("lifting RLIMIT_MEMLOCK", err)
	}
	spec, err := loadAcct()
	if err != nil {
		return nil, fmt.Errorf("accounting programs: %w", err)
	}
	spec.Maps["acct_scopes"].MaxEntries = uint32(opts.MaxScopes)
	spec.Maps["acct_pairs"].MaxEntries = uint32(opts.MaxPairs)
	for name, v := range map[string]any{
		"root_id":     opts.RootID,
		"root_level":  uint32(opts.RootLevel),
		"scope_level": uint32(opts.ScopeLevel),
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("accounting programs: set %s: %w", name, err)
		}
	}
	s := &ebpfSource{opts: opts, scopes: make(map[uint64]*trackedScope), gone: make(map[uint64]struct{})}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		// A *ebpf.VerifierError prints the verifier's last lines.
		return nil, notSupported("loading the eBPF programs", err)
	}
	defer func() {
		if err != nil {
			s.closeAll()
		}
	}()
	for _, p := range []*ebpf.Program{s.objs.AcctSwitch} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			return nil, notSupported("attaching "+p.String(), err)
		}
		s.tps = append(s.tps, l)
	}
	// The kernel measures programs' run time while any such fd is open:
	// host-wide, so only when asked.
	if opts.BPFStats {
		if fd, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME); err != nil {
			opts.Logger.Info("BPF run-time statistics unavailable", "err", err)
		} else {
			s.statsFD = fd
		}
	}
	return s, nil
}

func (s *ebpfSource) Name() string { return SourceEBPF }

func (s *ebpfSource) Track(id uint64, scope Scope) error {
	if scope == nil || scope.UnifiedDir() == "" {
		return fmt.Errorf("%w: scope %d has no unified cgroup directory", ErrInvalidScope, id)
	}
	dir := scope.UnifiedDir()
	chain, err := ancestors(dir)
	if err != nil {
		return err
	}
	switch level := len(chain) - 1; {
	case level != s.opts.ScopeLevel:
		return fmt.Errorf("%w: %s is at level %d, scopes are at %d", ErrInvalidScope, dir, level, s.opts.ScopeLevel)
	case chain[s.opts.RootLevel] != s.opts.RootID:
		return fmt.Errorf("%w: %s is not below the root cgroup %d (level %d)", ErrInvalidScope, dir, s.opts.RootID, s.opts.RootLevel)
	case chain[level] != id:
		return fmt.Errorf("%w: %s has id %d, not %d", ErrInvalidScope, dir, chain[level], id)
	}

	zero := make([]acctScopeStats, ebpf.MustPossibleCPU())
	for try, pause := 0, trackBackoff; ; try, pause = try+1, 2*pause {
		s.mu.Lock()
		err := s.insert(id, zero)
		if err == nil {
			break // s.mu held
		}
		if errors.Is(err, unix.ENOMEM) && try < trackRetries {
			s.retried++
		}
		s.mu.Unlock()
		if !errors.Is(err, unix.ENOMEM) || try == trackRetries {
			return err
		}
		time.Sleep(pause)
	}
	defer s.mu.Unlock()
	t := &trackedScope{}
	for _, a := range []struct {
		at   ebpf.AttachType
		prog *ebpf.Program
	}{
		{ebpf.AttachCGroupInetIngress, s.objs.AcctSkbIn},
		{ebpf.AttachCGroupInetEgress, s.objs.AcctSkbOut},
	} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: dir, Attach: a.at, Program: a.prog})
		if err != nil {
			err = fmt.Errorf("track scope %d: attach %s to %s: %w", id, a.at, dir, err)
			return errors.Join(err, s.forget(id, t))
		}
		t.links = append(t.links, l)
	}
	s.scopes[id] = t
	return nil
}

// insert creates id's acct_scopes entry. Call with s.mu held.
func (s *ebpfSource) insert(id uint64, zero []acctScopeStats) error {
	switch {
	case s.closed:
		return ErrClosed
	case s.scopes[id] != nil:
		return fmt.Errorf("%w: %d", ErrTracked, id)
	case len(s.scopes) >= s.opts.MaxScopes:
		return fmt.Errorf("%w: %d", ErrFull, s.opts.MaxScopes)
	}
	if _, ok := s.gone[id]; ok {
		// Tracked again before its old pairs were swept: sweep them
		// now, or they would count as the new tracking's.
		if err := s.readPairs(); err != nil {
			return fmt.Errorf("track scope %d: %w", id, err)
		}
	}
	update := func(id uint64, zero []acctScopeStats) error {
		return s.objs.AcctScopes.Update(id, zero, ebpf.UpdateNoExist)
	}
	if s.update != nil {
		update = s.update
	}
	if err := update(id, zero); err != nil {
		return fmt.Errorf("track scope %d: %w", id, err)
	}
	return nil
}

func (s *ebpfSource) Untrack(id uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.scopes[id]
	switch {
	case s.closed:
		return ErrClosed
	case t == nil:
		return fmt.Errorf("%w: %d", ErrNotTracked, id)
	}
	delete(s.scopes, id)
	if err := s.forget(id, t); err != nil {
		return fmt.Errorf("untrack scope %d: %w", id, err)
	}
	return nil
}

// forget detaches t's programs and deletes id's acct_scopes entry, after
// which the programs add no entry naming id (but for one still running
// then). Its acct_pairs entries go at the next sweep (see gone): its cost
// does not grow with the number of scopes or pairs. Call with s.mu held.
func (s *ebpfSource) forget(id uint64, t *trackedScope) error {
	var errs []error
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	if err := s.objs.AcctScopes.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, err)
	}
	s.gone[id] = struct{}{}
	return errors.Join(errs...)
}

// readPairs refreshes the pair cache and deletes the pairs that name a
// scope not tracked (those of the scopes in gone, and any that a program
// still running at an Untrack added). Call with s.mu held.
func (s *ebpfSource) readPairs() error {
	c := pairCache{at: time.Now(), by: make(map[uint64]map[uint64]uint64), sums: make(map[uint64]uint64)}
	var (
		k     acctPairKey
		v     uint64
		stale []acctPairKey
	)
	it := s.objs.AcctPairs.Iterate()
	for it.Next(&k, &v) {
		if s.scopes[k.Victim] == nil || s.scopes[k.Preemptor] == nil {
			stale = append(stale, k)
			continue
		}
		m := c.by[k.Victim]
		if m == nil {
			m = make(map[uint64]uint64)
			c.by[k.Victim] = m
		}
		m[k.Preemptor] = v
		c.sums[k.Victim] += v
		c.entries++
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read preemption pairs: %w", err)
	}
	for _, k := range stale {
		if err := s.objs.AcctPairs.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete preemption pair: %w", err)
		}
	}
	s.pairs = c
	clear(s.gone)
	return nil
}

func (s *ebpfSource) Read(id uint64) (Counters, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return Counters{}, ErrClosed
	case s.scopes[id] == nil:
		return Counters{}, fmt.Errorf("%w: %d", ErrNotTracked, id)
	}
	// The scope's tasks running now have not been charged since they were
	// switched in: add that from acct_cpus. A switch between reading the
	// two maps would count a slice twice or not at all, so read acct_cpus
	// before and after, and again if a CPU running the scope switched.
	var (
		vals     []acctScopeStats
		pre, cur []acctCpuState
		now      uint64
	)
	for try := 0; ; try++ {
		if err := s.objs.AcctCpus.Lookup(uint32(0), &pre); err != nil {
			return Counters{}, fmt.Errorf("read scope %d: %w", id, err)
		}
		if err := s.objs.AcctScopes.Lookup(id, &vals); err != nil {
			return Counters{}, fmt.Errorf("read scope %d: %w", id, err)
		}
		if err := s.objs.AcctCpus.Lookup(uint32(0), &cur); err != nil {
			return Counters{}, fmt.Errorf("read scope %d: %w", id, err)
		}
		now = monotonic()
		if try == 4 || stable(pre, cur, id) {
			break
		}
	}
	var c Counters
	for _, v := range vals {
		c.CPU += time.Duration(v.CpuNs)
		c.RunqDelay.Count += v.RunqCount
		c.RunqDelay.Sum += time.Duration(v.RunqSumNs)
		for i, n := range v.RunqHist {
			c.RunqDelay.Buckets[i] += n
		}
		c.Preemptions += v.Preempted
		c.NetRxBytes += v.RxBytes
		c.NetRxPackets += v.RxPackets
		c.NetTxBytes += v.TxBytes
		c.NetTxPackets += v.TxPackets
	}
	for _, cpu := range cur {
		if cpu.Scope == id && cpu.SwitchTs != 0 && now > cpu.SwitchTs {
			c.CPU += time.Duration(now - cpu.SwitchTs)
		}
	}
	if (s.pairs.sums[id] != c.Preemptions || len(s.gone) > 0) && time.Since(s.pairs.at) >= pairRefresh {
		if err := s.readPairs(); err != nil {
			return Counters{}, fmt.Errorf("read scope %d: %w", id, err)
		}
	}
	c.PreemptedBy = s.trackedPairs(id)
	// The pairs may have been read after the scope's entry: keep their sum
	// within the total (the programs count the total first).
	c.Preemptions = max(c.Preemptions, s.pairs.sums[id])
	return c, nil
}

// trackedPairs is a copy of the cached pairs of victim id whose preemptor
// is still tracked. Call with s.mu held.
func (s *ebpfSource) trackedPairs(id uint64) map[uint64]uint64 {
	m := clonePairs(s.pairs.by[id])
	for p := range m {
		if s.scopes[p] == nil {
			delete(m, p)
		}
	}
	return m
}

// stable reports whether no CPU that ran scope id in either read switched
// between them.
func stable(pre, cur []acctCpuState, id uint64) bool {
	for i := range cur {
		if (pre[i].Scope == id || cur[i].Scope == id) && pre[i] != cur[i] {
			return false
		}
	}
	return true
}

// monotonic is CLOCK_MONOTONIC in ns, the clock of bpf_ktime_get_ns.
func monotonic() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// programIDs lists the kernel's ids of the loaded programs, comma
// separated and sorted ("" where the kernel gives none): what an operator
// finds again in bpftool, and what a test checks is gone after Close.
func (s *ebpfSource) programIDs() string {
	var ids []int
	for _, p := range s.programs() {
		if info, err := p.Info(); err == nil {
			if id, ok := info.ID(); ok {
				ids = append(ids, int(id))
			}
		}
	}
	slices.Sort(ids)
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = strconv.Itoa(id)
	}
	return strings.Join(out, ",")
}

func (s *ebpfSource) programs() map[string]*ebpf.Program {
	return map[string]*ebpf.Program{
		"acct_switch":  s.objs.AcctSwitch,
		"acct_skb_in":  s.objs.AcctSkbIn,
		"acct_skb_out": s.objs.AcctSkbOut,
	}
}

func (s *ebpfSource) Stats() SourceStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SourceStats{Source: SourceEBPF, Scopes: len(s.scopes)}
	if s.closed {
		return st
	}
	if s.statsFD != nil {
		st.Programs = make(map[string]ProgramStats)
	}
	for name, p := range s.programs() {
		if st.Programs == nil {
			break
		}
		var ps ProgramStats
		if info, err := p.Info(); err == nil {
			ps.RunTime, _ = info.Runtime()
			ps.RunCount, _ = info.RunCount()
		}
		st.Programs[name] = ps
	}
	if time.Since(s.pairs.at) >= pairRefresh {
		_ = s.readPairs() // keeps the last count on error
	}
	st.Maps = map[string]MapStats{
		"acct_scopes": {Entries: len(s.scopes), MaxEntries: s.opts.MaxScopes},
		"acct_pairs":  {Entries: s.pairs.entries, MaxEntries: s.opts.MaxPairs},
	}
	for i := uint32(0); i < dropMax; i++ {
		var per []uint64
		if err := s.objs.AcctDrops.Lookup(i, &per); err == nil {
			for _, n := range per {
				st.Dropped += n
			}
		}
	}
	return st
}

func (s *ebpfSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.closeAll()
}

// closeAll releases every kernel object: links first, so that nothing runs
// while the maps go. Call with s.mu held (or before s is shared).
func (s *ebpfSource) closeAll() error {
	var errs []error
	for id, t := range s.scopes {
		for _, l := range t.links {
			errs = append(errs, l.Close())
		}
		delete(s.scopes, id)
	}
	for _, l := range s.tps {
		errs = append(errs, l.Close())
	}
	s.tps = nil
	for _, c := range []io.Closer{
		s.objs.AcctSwitch, s.objs.AcctSkbIn, s.objs.AcctSkbOut,
		s.objs.AcctScopes, s.objs.AcctPairs, s.objs.AcctCpus, s.objs.AcctTasks, s.objs.AcctDrops,
		s.statsFD,
	} {
		if c != nil && !isNilPointer(c) {
			errs = append(errs, c.Close())
		}
	}
	s.statsFD = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close accounting: %w", err)
	}
	return nil
}

// isNilPointer reports whether c is a typed nil (a program or map that was
// never loaded).
func isNilPointer(c io.Closer) bool {
	switch v := c.(type) {
	case *ebpf.Program:
		return v == nil
	case *ebpf.Map:
		return v == nil
	}
	return false
}
