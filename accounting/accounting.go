package accounting

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/cgroups"
)

// Names of the sources, as Source.Name returns them.
const (
	SourceEBPF     = "ebpf"
	SourceCgroupfs = "cgroupfs"
)

// Defaults of Options.
const (
	DefaultMaxScopes = 4096
	DefaultMaxPairs  = 16384
)

// maxEntries bounds MaxScopes and MaxPairs: a typo must not pin gigabytes of
// kernel memory.
const maxEntries = 1 << 20

// maxRootToScope is how far the programs climb from a scope to the root
// (MAX_ROOT_TO_SCOPE in bpf/accounting.c).
const maxRootToScope = 16

// Options configure Open.
type Options struct {
	// RootID is the unified cgroup id of scoped's root (cgroups Node.ID).
	// Zero (a pure cgroup v1 host) means eBPF accounting is not possible.
	RootID uint64
	// RootLevel is the root's depth in the unified hierarchy (the root
	// cgroup is level 0; see Level). Zero means ScopeLevel-3, scoped's
	// layout <root>/<tier>/<tenant>/<scope>.
	RootLevel int
	// ScopeLevel is the depth of scope cgroups, at most 16 below the root.
	// Tasks in cgroups below a scope (up to 16 levels) are charged to
	// their ancestor at this level.
	ScopeLevel int
	// MaxScopes bounds how many scopes can be tracked at once, MaxPairs how
	// many (preempted scope, preempting scope) pairs are kept. Zero means
	// DefaultMaxScopes, DefaultMaxPairs.
	MaxScopes, MaxPairs int
	// ForceFallback uses the cgroupfs source even where eBPF would load.
	ForceFallback bool
	// BPFStats turns the kernel's BPF run-time statistics on while the
	// source is open (BPF_ENABLE_STATS: host-wide, every BPF program then
	// pays for its timing); SourceStats.Programs is filled only then.
	BPFStats bool
	// Logger gets the line that says which source is used and why; nil
	// means slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxScopes == 0 {
		o.MaxScopes = DefaultMaxScopes
	}
	if o.MaxPairs == 0 {
		o.MaxPairs = DefaultMaxPairs
	}
	if o.MaxScopes < 0 || o.MaxScopes > maxEntries || o.MaxPairs < 0 || o.MaxPairs > maxEntries {
		return o, fmt.Errorf("%w: MaxScopes %d, MaxPairs %d: want 1..%d", ErrInvalidOptions, o.MaxScopes, o.MaxPairs, maxEntries)
	}
	if o.RootID == 0 {
		return o, nil // only the fallback is possible; Open says why
	}
	if o.RootLevel == 0 {
		o.RootLevel = o.ScopeLevel - 3
	}
	if o.RootLevel < 1 || o.ScopeLevel <= o.RootLevel || o.ScopeLevel-o.RootLevel > maxRootToScope {
		return o, fmt.Errorf("%w: root level %d, scope level %d: want 1 <= root < scope <= root+%d",
			ErrInvalidOptions, o.RootLevel, o.ScopeLevel, maxRootToScope)
	}
	return o, nil
}

// Scope is the cgroup of a tracked scope, as the sources need it.
// *cgroups.Node satisfies it.
type Scope interface {
	// UnifiedDir is the scope's directory in the unified hierarchy, where
	// the eBPF source attaches its network programs; "" on cgroup v1.
	UnifiedDir() string
	// Stats reads the cgroup's own figures; the fallback reports their CPU.
	Stats() (cgroups.Stats, error)
}

var _ Scope = (*cgroups.Node)(nil)

// Source is where per-scope counters come from. Its methods are safe for
// concurrent use.
type Source interface {
	// Name is SourceEBPF or SourceCgroupfs.
	Name() string
	// Track starts counting the scope whose unified cgroup id is id; its
	// counters start at zero. It fails with ErrTracked if the scope is
	// tracked already; the eBPF source also with ErrFull beyond
	// Options.MaxScopes, and with ErrInvalidScope if scope's directory is
	// not at Options.ScopeLevel below the root or its id is not id.
	Track(id uint64, scope Scope) error
	// Untrack stops counting the scope: it detaches the scope's programs and
	// deletes its map entries; its cost does not grow with the number of
	// scopes, so the eBPF source leaves the preemption pairs that name the
	// scope to its next sweep of the pair map (the next Read or Stats that
	// re-reads the pairs), and no reader sees them meanwhile.
	// ErrNotTracked if it was not.
	Untrack(id uint64) error
	// Read returns the scope's counters since Track. ErrNotTracked if it is
	// not tracked.
	Read(id uint64) (Counters, error)
	// Stats reports the source itself: what it costs and how full it is.
	Stats() SourceStats
	// Close detaches and frees everything the source holds in the kernel;
	// nothing of it remains afterwards. Closing twice is a no-op; other
	// methods then fail with ErrClosed.
	Close() error
}

// HistogramBuckets is the number of log2 buckets of a Histogram.
const HistogramBuckets = 32

// Histogram is a log2 histogram of durations, as the kernel keeps it.
type Histogram struct {
	// Buckets[i] counts durations in [2^i, 2^(i+1)) ns (bucket 0 also holds
	// 0 ns); the last bucket also holds everything longer.
	Buckets [HistogramBuckets]uint64
	Count   uint64        // durations counted
	Sum     time.Duration // their total
}

// Quantile estimates the q-quantile (0 ≤ q ≤ 1) by linear interpolation
// inside the bucket it falls into; 0 when the histogram is empty. Its
// resolution is that of the buckets: a factor of two.
func (h Histogram) Quantile(q float64) time.Duration {
	var total uint64
	for _, n := range h.Buckets {
		total += n
	}
	if total == 0 || math.IsNaN(q) {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := q * float64(total)
	var cum float64
	for i, n := range h.Buckets {
		if n == 0 {
			continue
		}
		if cum+float64(n) >= rank {
			lo, hi := math.Ldexp(1, i), math.Ldexp(1, i+1)
			if i == 0 {
				lo = 0
			}
			return time.Duration(lo + (hi-lo)*(rank-cum)/float64(n))
		}
		cum += float64(n)
	}
	return time.Duration(math.Ldexp(1, HistogramBuckets))
}

// Mean is Sum/Count, 0 when empty.
func (h Histogram) Mean() time.Duration {
	if h.Count == 0 {
		return 0
	}
	return h.Sum / time.Duration(h.Count)
}

// Sub returns h - prev, bucket by bucket (see Counters.Sub for resets).
func (h Histogram) Sub(prev Histogram) Histogram {
	if h.Count < prev.Count {
		return h // the source restarted
	}
	d := Histogram{Count: h.Count - prev.Count, Sum: h.Sum - prev.Sum}
	for i := range h.Buckets {
		d.Buckets[i] = sub(h.Buckets[i], prev.Buckets[i])
	}
	return d
}

// Counters are what a scope used since it was tracked. The eBPF source
// fills every field; the cgroupfs source only CPU.
type Counters struct {
	// CPU is the on-CPU time of the scope's tasks as the scheduler charges
	// it (the sum_exec_runtime that cgroup CPU usage also adds up; no
	// steal time), plus, for the eBPF source, the slices running now.
	CPU       time.Duration
	RunqDelay Histogram // waits from wake-up or preemption to running
	// Preemptions counts how often a task of the scope was switched out
	// while runnable in favour of a task of another tracked scope;
	// PreemptedBy splits it by that other scope's id (bounded by
	// Options.MaxPairs). Its sum can be smaller than Preemptions: pairs
	// that did not fit, pairs of scopes untracked since, and PreemptedBy
	// can be up to a quarter of a second older than Preemptions.
	Preemptions  uint64
	PreemptedBy  map[uint64]uint64
	NetRxBytes   uint64 // received by the scope's sockets, from the IP header
	NetTxBytes   uint64 // sent by the scope's sockets, from the IP header
	NetRxPackets uint64 // packets as the stack sees them (GRO/GSO: several on the wire)
	NetTxPackets uint64
}

// Sub returns the counters' growth since prev, an earlier Read of the same
// scope. A counter that shrank (the source restarted) counts from zero.
func (c Counters) Sub(prev Counters) Counters {
	d := Counters{
		CPU:          time.Duration(sub(uint64(c.CPU), uint64(prev.CPU))),
		RunqDelay:    c.RunqDelay.Sub(prev.RunqDelay),
		Preemptions:  sub(c.Preemptions, prev.Preemptions),
		NetRxBytes:   sub(c.NetRxBytes, prev.NetRxBytes),
		NetTxBytes:   sub(c.NetTxBytes, prev.NetTxBytes),
		NetRxPackets: sub(c.NetRxPackets, prev.NetRxPackets),
		NetTxPackets: sub(c.NetTxPackets, prev.NetTxPackets),
	}
	for id, n := range c.PreemptedBy {
		if dn := sub(n, prev.PreemptedBy[id]); dn > 0 {
			if d.PreemptedBy == nil {
				d.PreemptedBy = make(map[uint64]uint64)
			}
			d.PreemptedBy[id] = dn
		}
	}
	return d
}

func sub(a, b uint64) uint64 {
	if a < b {
		return a
	}
	return a - b
}

// SourceStats describe a source itself.
type SourceStats struct {
	Source string // Name()
	// Reason says why the cgroupfs source is used (it wraps
	// ErrNotSupported); nil for eBPF.
	Reason error
	Scopes int // tracked now
	// Programs is the kernel's own cost of each eBPF program, by name;
	// nil unless Options.BPFStats turned the statistics on.
	Programs map[string]ProgramStats
	// Maps are the entry counts of the bounded maps, by name.
	Maps map[string]MapStats
	// Dropped counts events the maps could not hold: preemptions whose
	// pair did not fit, run-queue waits without task storage.
	Dropped uint64
}

// ProgramStats is the kernel's cumulative cost of one BPF program.
type ProgramStats struct {
	RunTime  time.Duration
	RunCount uint64
}

// MapStats is how full one BPF map is.
type MapStats struct {
	Entries, MaxEntries int
}

// Open returns the eBPF source where its programs load and attach, else the
// cgroupfs source; it logs which one it uses and why (Stats().Reason holds
// the ErrNotSupported error). It fails only for invalid options.
func Open(opts Options) (Source, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	var reason error
	if opts.ForceFallback {
		reason = notSupported("cgroupfs source forced by configuration", nil)
	} else {
		s, err := openEBPF(opts)
		if err == nil {
			opts.Logger.Info("accounting source", "source", SourceEBPF,
				"root_id", opts.RootID, "root_level", opts.RootLevel, "scope_level", opts.ScopeLevel,
				"bpf_stats", s.statsFD != nil, "program_ids", s.programIDs())
			return s, nil
		}
		if !errors.Is(err, ErrNotSupported) {
			return nil, err
		}
		reason = err
	}
	opts.Logger.Warn("accounting source", "source", SourceCgroupfs, "reason", reason)
	return newCgroupfs(reason), nil
}

// Level is the depth of the cgroup directory dir in its cgroup2 hierarchy
// (the mount's root is level 0), as the kernel's cgroup->level counts it
// when the hierarchy is mounted from its root (the host's cgroup namespace).
func Level(dir string) (int, error) {
	chain, err := ancestors(dir)
	if err != nil {
		return 0, err
	}
	return len(chain) - 1, nil
}

// ancestors returns the inode numbers (= cgroup ids) of dir's cgroup2
// ancestors, from the mount's root (index 0 = level 0) down to dir itself.
func ancestors(dir string) ([]uint64, error) {
	dir = filepath.Clean(dir)
	var inos []uint64
	for {
		var fs unix.Statfs_t
		if err := unix.Statfs(dir, &fs); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidScope, dir, err)
		}
		if fs.Type != unix.CGROUP2_SUPER_MAGIC {
			break
		}
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidScope, dir, err)
		}
		inos = append(inos, st.Ino)
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	if len(inos) == 0 {
		return nil, fmt.Errorf("%w: %s is not in a cgroup2 hierarchy", ErrInvalidScope, dir)
	}
	for i, j := 0, len(inos)-1; i < j; i, j = i+1, j-1 {
		inos[i], inos[j] = inos[j], inos[i]
	}
	return inos, nil
}

// cgroupfsSource reads the scopes' own cgroup files: CPU time only.
type cgroupfsSource struct {
	reason error
	mu     sync.Mutex
	closed bool
	scopes map[uint64]Scope
	// base is the cgroup's CPU usage at Track: counters start at zero.
	base map[uint64]time.Duration
}

var _ Source = (*cgroupfsSource)(nil)

func newCgroupfs(reason error) *cgroupfsSource {
	return &cgroupfsSource{
		reason: reason,
		scopes: make(map[uint64]Scope),
		base:   make(map[uint64]time.Duration),
	}
}

func (s *cgroupfsSource) Name() string { return SourceCgroupfs }

func (s *cgroupfsSource) Track(id uint64, scope Scope) error {
	if scope == nil {
		return fmt.Errorf("%w: nil scope %d", ErrInvalidScope, id)
	}
	st, err := scope.Stats()
	if err != nil {
		return fmt.Errorf("%w: scope %d: %w", ErrInvalidScope, id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.scopes[id] != nil:
		return fmt.Errorf("%w: %d", ErrTracked, id)
	}
	s.scopes[id] = scope
	s.base[id] = st.CPUUsage
	return nil
}

func (s *cgroupfsSource) Untrack(id uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.scopes[id] == nil:
		return fmt.Errorf("%w: %d", ErrNotTracked, id)
	}
	delete(s.scopes, id)
	delete(s.base, id)
	return nil
}

func (s *cgroupfsSource) Read(id uint64) (Counters, error) {
	s.mu.Lock()
	scope, base, closed := s.scopes[id], s.base[id], s.closed
	s.mu.Unlock()
	switch {
	case closed:
		return Counters{}, ErrClosed
	case scope == nil:
		return Counters{}, fmt.Errorf("%w: %d", ErrNotTracked, id)
	}
	st, err := scope.Stats()
	if err != nil {
		return Counters{}, fmt.Errorf("read scope %d: %w", id, err)
	}
	return Counters{CPU: time.Duration(sub(uint64(st.CPUUsage), uint64(base)))}, nil
}

func (s *cgroupfsSource) Stats() SourceStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SourceStats{Source: SourceCgroupfs, Reason: s.reason, Scopes: len(s.scopes)}
}

func (s *cgroupfsSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	clear(s.scopes)
	clear(s.base)
	return nil
}

// clonePairs copies a PreemptedBy map (nil stays nil).
func clonePairs(m map[uint64]uint64) map[uint64]uint64 {
	if m == nil {
		return nil
	}
	return maps.Clone(m)
}
