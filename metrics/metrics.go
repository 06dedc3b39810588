// Package metrics owns scoped's Prometheus series: one VictoriaMetrics
// metrics.Set per scope (labelled tenant, scope, tier, environment) that is
// dropped whole when the scope goes, a daemon-wide set, and the HTTP
// endpoint that exposes them in the Prometheus text format. It knows nothing
// of the kernel or of the supervisor: callers push cumulative samples and
// invocation outcomes in through the small API of Registry.
package metrics

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
)

// ScopeLabels identify a scope's series. Scope is the scope key and the
// identity of the scope in the Registry; the other fields are labels that
// may change over the scope's life (a tenant's tier, say). UpdateScope is
// the authority on them: when it brings other labels, the scope's series
// start again under the new ones (the old ones are dropped), while
// ObserveInvocation uses the labels the scope already has.
type ScopeLabels struct {
	Tenant, Scope, Tier, Environment string
}

// ScopeSample is what accounting measured of one scope. Counters are totals
// since the scope was created (or since accounting restarted), never deltas.
// A nil RunqBuckets with a zero RunqCount (the cgroupfs source, which cannot
// measure run-queue delay) exposes no run-queue histogram; PreemptedBy's
// entries become one series each, so accounting must keep it bounded.
type ScopeSample struct {
	CPU, CPUThrottled          time.Duration
	MemoryCurrent              uint64
	MemoryPeak                 uint64
	OOMKills                   uint64
	Pids                       uint64
	Workers                    int
	RunqBuckets                []uint64          // log2 ns buckets: bucket i = [2^i, 2^(i+1)) ns
	RunqCount                  uint64            // run-queue waits measured
	RunqSum                    time.Duration     // their total
	PreemptedBy                map[string]uint64 // other scope key → times it preempted this scope
	NetRxBytes, NetTxBytes     uint64            // in, out
	NetRxPackets, NetTxPackets uint64            // in, out
}

// DaemonSample holds the daemon-wide figures.
type DaemonSample struct {
	Scopes, Workers int
	// AccountingSource is SourceEBPF or SourceCgroupfs; "" exposes none.
	AccountingSource string
	// BPFPrograms are the kernel's own statistics of accounting's programs
	// (run time and run count, kernel.bpf_stats_enabled), by program name.
	BPFPrograms map[string]BPFProgramStats
}

// BPFProgramStats is the kernel's cumulative cost of one BPF program.
type BPFProgramStats struct {
	RunTime  time.Duration
	RunCount uint64
}

// Accounting sources.
const (
	SourceEBPF     = "ebpf"
	SourceCgroupfs = "cgroupfs"
)

// Invocation results, the values of the result label. ObserveInvocation
// counts any other result as ResultError.
const (
	ResultOK       = "ok"
	ResultError    = "error"
	ResultDeadline = "deadline"
	ResultOOM      = "oom"
	ResultCrash    = "crash"
	ResultBusy     = "busy"
	ResultInvalid  = "invalid"
	ResultCPUTime  = "cpu_time"
)

var results = [...]string{ResultOK, ResultError, ResultDeadline, ResultOOM, ResultCrash, ResultBusy, ResultInvalid, ResultCPUTime}

func resultIndex(s string) int {
	for i, r := range results {
		if r == s {
			return i
		}
	}
	return 1 // ResultError
}

// Registry holds every series of the daemon. Its methods are safe for
// concurrent use. A Registry is self-contained: its sets are never
// registered in the VictoriaMetrics package-global set, so several
// Registries (tests) do not see each other.
type Registry struct {
	daemon  *vm.Set
	scopesG *vm.Gauge
	workers *vm.Gauge

	dmu     sync.Mutex
	source  string
	progs   []progStat             // sorted by name
	errMu   sync.Mutex             // guards errSeen
	errSeen map[string]*vm.Counter // daemon-wide counters by series name

	mu     sync.RWMutex
	scopes map[string]*scopeEntry

	lastSize atomic.Int64 // of the last exposition, to size the next
}

type progStat struct {
	label   string // `program="…"`, escaped
	seconds float64
	runs    uint64
}

// New returns an empty Registry.
func New() *Registry {
	r := &Registry{
		daemon:  vm.NewSet(),
		scopes:  make(map[string]*scopeEntry),
		errSeen: make(map[string]*vm.Counter),
	}
	r.scopesG = r.daemon.NewGauge(mScopes, nil)
	r.workers = r.daemon.NewGauge(mWorkers, nil)
	r.daemon.RegisterMetricsWriter(r.writeDaemon)
	return r
}

// SetDaemon records the daemon-wide figures.
func (r *Registry) SetDaemon(d DaemonSample) {
	r.scopesG.Set(float64(d.Scopes))
	r.workers.Set(float64(d.Workers))
	progs := make([]progStat, 0, len(d.BPFPrograms))
	for name, st := range d.BPFPrograms {
		progs = append(progs, progStat{
			label:   pair("program", name),
			seconds: st.RunTime.Seconds(),
			runs:    st.RunCount,
		})
	}
	slices.SortFunc(progs, func(a, b progStat) int { return strings.Compare(a.label, b.label) })
	r.dmu.Lock()
	r.source = d.AccountingSource
	r.progs = progs
	r.dmu.Unlock()
}

// IncError counts one error of the given kind (a short constant such as
// "worker_start" or "accounting_read"; never a message).
func (r *Registry) IncError(kind string) {
	if kind == "" {
		kind = "unknown"
	}
	r.counter(mErrors + "{" + pair("kind", kind) + "}").Inc()
}

// IncRefused counts one invocation refused by admission; tier and reason
// are configuration names and short constants, never request data.
func (r *Registry) IncRefused(tier, reason string) {
	r.counter(mRefused + "{" + pair("tier", tier) + "," + pair("reason", reason) + "}").Inc()
}

// IncAPIPanic counts one API call whose handler panicked; method is the
// gRPC method name of a registered service (a bounded set).
func (r *Registry) IncAPIPanic(method string) {
	r.counter(mAPIPanics + "{" + pair("method", method) + "}").Inc()
}

// IncReclaimed counts one idle scope of tier removed to free its slot.
func (r *Registry) IncReclaimed(tier string) {
	r.counter(mReclaimed + "{" + pair("tier", tier) + "}").Inc()
}

// SetControlEvents records how many events of a kind the noisy-neighbour
// controller has had (its own cumulative count).
func (r *Registry) SetControlEvents(kind string, n uint64) {
	r.counter(mControlEvents + "{" + pair("kind", kind) + "}").Set(n)
}

// SetThrottled records how many scopes the controller holds stepped down.
func (r *Registry) SetThrottled(n int) {
	r.daemon.GetOrCreateGauge(mThrottledNow, nil).Set(float64(n))
}

// SetCappedTenants records how many tenants the controller's fair-share
// rule caps now.
func (r *Registry) SetCappedTenants(n int) {
	r.daemon.GetOrCreateGauge(mCappedTenants, nil).Set(float64(n))
}

// SetFleetDegraded records whether this fleet node's state is degraded
// (etcd unreachable).
func (r *Registry) SetFleetDegraded(degraded bool) {
	v := 0.0
	if degraded {
		v = 1
	}
	r.daemon.GetOrCreateGauge(mFleetDegraded, nil).Set(v)
}

// counter is the daemon-wide counter of the full series name.
func (r *Registry) counter(name string) *vm.Counter {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	c := r.errSeen[name]
	if c == nil {
		c = r.daemon.GetOrCreateCounter(name)
		r.errSeen[name] = c
	}
	return c
}

// UpdateScope records the latest sample of a scope, creating its series on
// first use.
func (r *Registry) UpdateScope(l ScopeLabels, s ScopeSample) {
	e := r.entry(l, true)
	if e == nil {
		return
	}
	e.update(s)
}

// ObserveInvocation counts one invocation of extension in scope l with its
// result (one of the Result constants), its duration as the supervisor saw
// it, and whether it paid for a cold start.
func (r *Registry) ObserveInvocation(l ScopeLabels, extension, result string, d time.Duration, cold bool) {
	e := r.entry(l, false)
	if e == nil {
		return
	}
	x := e.ext(extension)
	if x == nil {
		return // the scope was removed meanwhile
	}
	x.results[resultIndex(result)].Inc()
	x.duration.Update(d.Seconds())
	if cold {
		x.cold.Inc()
	}
}

// RemoveScope drops every series of the scope with this key, and the
// preemption series of other scopes that name it. Call it after the scope's
// last ObserveInvocation: a later call would create the scope's series again.
func (r *Registry) RemoveScope(scope string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.scopes[scope]
	if e == nil {
		return
	}
	delete(r.scopes, scope)
	e.destroy()
	for _, o := range r.scopes {
		o.forgetPeer(scope)
	}
}

// entry returns the live entry of scope l, creating it, or, with relabel,
// replacing it when its labels changed. It returns nil for an empty key.
func (r *Registry) entry(l ScopeLabels, relabel bool) *scopeEntry {
	if l.Scope == "" {
		r.IncError("metrics_no_scope")
		return nil
	}
	r.mu.RLock()
	e := r.scopes[l.Scope]
	r.mu.RUnlock()
	if e != nil && (e.labels == l || !relabel) {
		return e
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e = r.scopes[l.Scope]
	if e != nil && (e.labels == l || !relabel) {
		return e
	}
	if e != nil {
		e.destroy()
	}
	e = newScopeEntry(l)
	r.scopes[l.Scope] = e
	return e
}

// scopeEntry is one scope's set and what its custom writer exposes.
type scopeEntry struct {
	labels ScopeLabels
	base   string // escaped `tenant="…",scope="…",tier="…",environment="…"`
	set    *vm.Set

	mu      sync.Mutex
	removed bool
	acct    *acctMetrics // nil until the first UpdateScope
	runq    runqSnapshot
	peers   []peer // sorted by key
	exts    map[string]*extMetrics
}

type acctMetrics struct {
	cpu, throttled           *vm.FloatCounter
	mem, peak, pids, workers *vm.Gauge
	oom                      *vm.Counter
	rxB, txB, rxP, txP       *vm.Counter
}

type extMetrics struct {
	results  [len(results)]*vm.Counter
	duration *vm.PrometheusHistogram
	cold     *vm.Counter
}

type peer struct {
	key   string
	line  string // series name with labels, escaped
	count uint64
}

func newScopeEntry(l ScopeLabels) *scopeEntry {
	e := &scopeEntry{
		labels: l,
		base: pair("tenant", l.Tenant) + "," + pair("scope", l.Scope) + "," +
			pair("tier", l.Tier) + "," + pair("environment", l.Environment),
		set:  vm.NewSet(),
		exts: make(map[string]*extMetrics),
	}
	e.set.RegisterMetricsWriter(e.writeCustom)
	return e
}

func (e *scopeEntry) name(metric string, extra ...string) string {
	var b strings.Builder
	b.WriteString(metric)
	b.WriteByte('{')
	b.WriteString(e.base)
	for i := 0; i+1 < len(extra); i += 2 {
		b.WriteByte(',')
		b.WriteString(pair(extra[i], extra[i+1]))
	}
	b.WriteByte('}')
	return b.String()
}

func (e *scopeEntry) update(s ScopeSample) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.removed {
		return
	}
	a := e.acct
	if a == nil {
		st := e.set
		a = &acctMetrics{
			cpu:       st.NewFloatCounter(e.name(mCPU)),
			throttled: st.NewFloatCounter(e.name(mThrottled)),
			mem:       st.NewGauge(e.name(mMemory), nil),
			peak:      st.NewGauge(e.name(mMemoryPeak), nil),
			pids:      st.NewGauge(e.name(mPids), nil),
			workers:   st.NewGauge(e.name(mScopeWorkers), nil),
			oom:       st.NewCounter(e.name(mOOMKills)),
			rxB:       st.NewCounter(e.name(mNetBytes, "direction", "in")),
			txB:       st.NewCounter(e.name(mNetBytes, "direction", "out")),
			rxP:       st.NewCounter(e.name(mNetPackets, "direction", "in")),
			txP:       st.NewCounter(e.name(mNetPackets, "direction", "out")),
		}
		e.acct = a
	}
	a.cpu.Set(s.CPU.Seconds())
	a.throttled.Set(s.CPUThrottled.Seconds())
	a.mem.Set(float64(s.MemoryCurrent))
	a.peak.Set(float64(s.MemoryPeak))
	a.pids.Set(float64(s.Pids))
	a.workers.Set(float64(s.Workers))
	a.oom.Set(s.OOMKills)
	a.rxB.Set(s.NetRxBytes)
	a.txB.Set(s.NetTxBytes)
	a.rxP.Set(s.NetRxPackets)
	a.txP.Set(s.NetTxPackets)

	e.runq.set(s.RunqBuckets, s.RunqCount, s.RunqSum)

	// Reuse the escaped series names of peers seen before.
	old := e.peers
	peers := make([]peer, 0, len(s.PreemptedBy))
	for k, n := range s.PreemptedBy {
		p := peer{key: k, count: n}
		if i, ok := slices.BinarySearchFunc(old, k, func(p peer, k string) int { return strings.Compare(p.key, k) }); ok {
			p.line = old[i].line
		} else {
			p.line = e.name(mPreemptions, "by", k)
		}
		peers = append(peers, p)
	}
	slices.SortFunc(peers, func(a, b peer) int { return strings.Compare(a.key, b.key) })
	e.peers = peers
}

func (e *scopeEntry) ext(name string) *extMetrics {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.removed {
		return nil
	}
	x := e.exts[name]
	if x != nil {
		return x
	}
	x = &extMetrics{
		duration: e.set.NewPrometheusHistogramExt(e.name(mInvocationDuration, "extension", name), invocationBuckets),
		cold:     e.set.NewCounter(e.name(mColdStarts, "extension", name)),
	}
	// Every result exists from the first invocation on, so that rate() and
	// increase() see a failure's first 0 → 1.
	for i, res := range results {
		x.results[i] = e.set.NewCounter(e.name(mInvocations, "extension", name, "result", res))
	}
	e.exts[name] = x
	return x
}

func (e *scopeEntry) forgetPeer(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.peers = slices.DeleteFunc(e.peers, func(p peer) bool { return p.key == key })
}

func (e *scopeEntry) destroy() {
	e.mu.Lock()
	e.removed = true
	e.acct = nil
	e.peers = nil
	e.exts = nil
	e.mu.Unlock()
	// Drops every metric and the custom writer.
	e.set.UnregisterAllMetrics()
}
