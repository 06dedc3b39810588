package metrics

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	vm "github.com/VictoriaMetrics/metrics"
)

// Series names.
const (
	mCPU                = "scoped_scope_cpu_seconds_total"
	mThrottled          = "scoped_scope_cpu_throttled_seconds_total"
	mRunq               = "scoped_scope_runqueue_delay_seconds"
	mPreemptions        = "scoped_scope_preemptions_total"
	mNetBytes           = "scoped_scope_net_bytes_total"
	mNetPackets         = "scoped_scope_net_packets_total"
	mMemory             = "scoped_scope_memory_bytes"
	mMemoryPeak         = "scoped_scope_memory_peak_bytes"
	mOOMKills           = "scoped_scope_oom_kills_total"
	mPids               = "scoped_scope_pids"
	mScopeWorkers       = "scoped_scope_workers"
	mInvocations        = "scoped_invocations_total"
	mInvocationDuration = "scoped_invocation_duration_seconds"
	mColdStarts         = "scoped_cold_starts_total"

	mScopes         = "scoped_scopes"
	mWorkers        = "scoped_workers"
	mSource         = "scoped_accounting_source"
	mBPFRunSeconds  = "scoped_accounting_bpf_run_seconds_total"
	mBPFRuns        = "scoped_accounting_bpf_runs_total"
	mErrors         = "scoped_errors_total"
	mRefused        = "scoped_admission_refused_total"
	mControlEvents  = "scoped_control_events_total"
	mThrottledNow   = "scoped_control_throttled_scopes"
	mCappedTenants  = "scoped_control_capped_tenants"
	mAPIPanics      = "scoped_api_panics_total"
	mReclaimed      = "scoped_scopes_reclaimed_total"
	mFleetDegraded  = "scoped_fleet_degraded"
	familyHistogram = "histogram"
)

// family is one metric family of the exposition, in the order written.
type family struct{ name, typ, help string }

var families = []family{
	{mScopes, "gauge", "Scopes the supervisor knows."},
	{mWorkers, "gauge", "Live worker processes, all scopes."},
	{mSource, "gauge", "Where per-scope accounting comes from: 1 for the source in use."},
	{mBPFRunSeconds, "counter", "Kernel-measured run time of accounting's BPF programs (only with [accounting] bpf_stats = true)."},
	{mBPFRuns, "counter", "Kernel-counted runs of accounting's BPF programs (only with [accounting] bpf_stats = true)."},
	{mErrors, "counter", "Daemon errors by kind."},
	{mRefused, "counter", "Invocations refused by admission (rate, concurrency, suspended tenant, cpu time, max_scopes), by tier and reason."},
	{mControlEvents, "counter", "Noisy-neighbour controller events, by kind."},
	{mThrottledNow, "gauge", "Scopes the noisy-neighbour controller holds stepped down now."},
	{mCappedTenants, "gauge", "Tenants the controller's fair-share rule caps at their entitled share now."},
	{mAPIPanics, "counter", "API calls whose handler panicked (answered INTERNAL), by gRPC method."},
	{mReclaimed, "counter", "Idle scopes removed early to free a scope slot for a new scope, by the removed scope's tier."},
	{mFleetDegraded, "gauge", "1 while this fleet node cannot reach etcd (serving the last fleet state, refusing deploys and tier changes)."},

	{mCPU, "counter", "CPU time used by the scope's tasks."},
	{mThrottled, "counter", "Time the scope's tasks were throttled by their CPU limit."},
	{mRunq, familyHistogram, "Time the scope's tasks waited runnable on a run queue before running."},
	{mPreemptions, "counter", "Times a task of the scope was preempted by a task of another scope, the one in label by."},
	{mNetBytes, "counter", "Network bytes of the scope, by direction."},
	{mNetPackets, "counter", "Network packets of the scope, by direction."},
	{mMemory, "gauge", "Memory charged to the scope's cgroup."},
	{mMemoryPeak, "gauge", "Peak memory charged to the scope's cgroup."},
	{mOOMKills, "counter", "Processes of the scope killed by the OOM killer."},
	{mPids, "gauge", "Tasks in the scope's cgroup."},
	{mScopeWorkers, "gauge", "Live worker processes of the scope."},
	{mInvocations, "counter", "Invocations by extension and result."},
	{mInvocationDuration, familyHistogram, "Duration of invocations as the supervisor saw them, by extension."},
	{mColdStarts, "counter", "Invocations that had to start a worker first, by extension."},
}

// familyIndex maps every series name (a histogram's _bucket, _sum and
// _count too) to its index in families.
var familyIndex = func() map[string]int {
	m := make(map[string]int, 2*len(families))
	for i, f := range families {
		m[f.name] = i
		if f.typ == familyHistogram {
			m[f.name+"_bucket"] = i
			m[f.name+"_sum"] = i
			m[f.name+"_count"] = i
		}
	}
	return m
}()

// invocationBuckets are the le bounds of scoped_invocation_duration_seconds,
// in seconds: from a warm call (~200 µs) to the longest deadlines.
var invocationBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
}

// The run-queue histogram exposes the log2 buckets of accounting as
// cumulative le buckets 2^runqMinLog2 … 2^runqMaxLog2 ns (1.024 µs …
// 4.29 s); shorter waits are all in the first, longer ones only in +Inf.
const (
	runqMinLog2 = 10
	runqMaxLog2 = 32
	runqBounds  = runqMaxLog2 - runqMinLog2 + 1
)

var runqLE = func() (le [runqBounds]string) {
	for j := range le {
		secs := math.Ldexp(1, runqMinLog2+j) / 1e9
		le[j] = pair("le", strconv.FormatFloat(secs, 'g', -1, 64))
	}
	return le
}()

type runqSnapshot struct {
	have  bool
	cum   [runqBounds]uint64
	count uint64
	sum   float64
}

// set turns log2 buckets (bucket i = [2^i, 2^(i+1)) ns) into cumulative
// counts: le=2^k ns holds buckets 0…k-1. The count is at least the sum of
// the buckets, so that +Inf == _count ≥ every finite bucket even when the
// snapshot was read while counters moved.
func (h *runqSnapshot) set(b []uint64, count uint64, sum time.Duration) {
	if b == nil && count == 0 {
		*h = runqSnapshot{} // the source does not measure run-queue delay
		return
	}
	h.have = true
	var acc uint64
	next := 0
	for j := range h.cum {
		for limit := runqMinLog2 + j; next < limit && next < len(b); next++ {
			acc += b[next]
		}
		h.cum[j] = acc
	}
	for ; next < len(b); next++ {
		acc += b[next]
	}
	h.count = max(count, acc)
	h.sum = sum.Seconds()
}

// writeCustom writes the scope's series that are snapshots rather than
// VictoriaMetrics metrics: the run-queue histogram and the preemptions.
func (e *scopeEntry) writeCustom(w io.Writer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.removed {
		return
	}
	if e.runq.have {
		prefix := mRunq + "_bucket{" + e.base + ","
		for j, le := range runqLE {
			vm.WriteCounterUint64(w, prefix+le+"}", e.runq.cum[j])
		}
		vm.WriteCounterUint64(w, prefix+`le="+Inf"}`, e.runq.count)
		vm.WriteCounterFloat64(w, mRunq+"_sum{"+e.base+"}", e.runq.sum)
		vm.WriteCounterUint64(w, mRunq+"_count{"+e.base+"}", e.runq.count)
	}
	for _, p := range e.peers {
		vm.WriteCounterUint64(w, p.line, p.count)
	}
}

// writeDaemon writes the daemon-wide snapshot series.
func (r *Registry) writeDaemon(w io.Writer) {
	r.dmu.Lock()
	defer r.dmu.Unlock()
	if r.source != "" {
		known := false
		for _, s := range []string{SourceEBPF, SourceCgroupfs} {
			v := uint64(0)
			if s == r.source {
				v, known = 1, true
			}
			vm.WriteGaugeUint64(w, mSource+"{"+pair("source", s)+"}", v)
		}
		if !known {
			vm.WriteGaugeUint64(w, mSource+"{"+pair("source", r.source)+"}", 1)
		}
	}
	for _, p := range r.progs {
		vm.WriteCounterFloat64(w, mBPFRunSeconds+"{"+p.label+"}", p.seconds)
		vm.WriteCounterUint64(w, mBPFRuns+"{"+p.label+"}", p.runs)
	}
}

// WritePrometheus writes every series of r in the Prometheus text format
// (version 0.0.4), followed by the daemon's own process_* and go_* series.
// Each scope's set writes its own block; the blocks are regrouped here so
// that every family is one group under a single HELP and TYPE, as the
// format requires.
func (r *Registry) WritePrometheus(w io.Writer) {
	r.mu.RLock()
	entries := make([]*scopeEntry, 0, len(r.scopes))
	for _, e := range r.scopes {
		entries = append(entries, e)
	}
	r.mu.RUnlock()
	slices.SortFunc(entries, func(a, b *scopeEntry) int { return strings.Compare(a.labels.Scope, b.labels.Scope) })

	var raw bytes.Buffer
	raw.Grow(int(r.lastSize.Load()) + 4096) // grow once, not log2(size) times
	r.daemon.WritePrometheus(&raw)
	for _, e := range entries {
		e.set.WritePrometheus(&raw)
	}

	r.lastSize.Store(int64(raw.Len()))

	groups := make([][][]byte, len(families)+1) // the last: names not in families
	for data := raw.Bytes(); len(data) > 0; {
		n := bytes.IndexByte(data, '\n') + 1
		if n == 0 {
			n = len(data)
		}
		line := data[:n]
		data = data[n:]
		if line[0] == '#' || line[0] == '\n' {
			continue // VictoriaMetrics' metadata, if enabled globally: ours is below
		}
		end := bytes.IndexAny(line, "{ ")
		if end < 0 {
			continue
		}
		i, ok := familyIndex[string(line[:end])]
		if !ok {
			i = len(families)
		}
		groups[i] = append(groups[i], line)
	}

	bw := bufio.NewWriterSize(w, 64<<10)
	for i, g := range groups {
		if len(g) == 0 {
			continue
		}
		if i < len(families) {
			f := families[i]
			bw.WriteString("# HELP " + f.name + " " + f.help + "\n# TYPE " + f.name + " " + f.typ + "\n")
		}
		for _, line := range g {
			bw.Write(line)
			if line[len(line)-1] != '\n' {
				bw.WriteByte('\n')
			}
		}
	}
	vm.WriteProcessMetrics(bw)
	bw.Flush()
}

// Handler serves WritePrometheus over HTTP GET, gzipped when the client
// accepts it.
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		if req.Method == http.MethodHead {
			return
		}
		if acceptsGzip(req.Header.Get("Accept-Encoding")) {
			h.Set("Content-Encoding", "gzip")
			h.Add("Vary", "Accept-Encoding")
			gz := gzip.NewWriter(w)
			r.WritePrometheus(gz)
			gz.Close()
			return
		}
		r.WritePrometheus(w)
	})
}

func acceptsGzip(header string) bool {
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		if q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q="); ok {
			if v, err := strconv.ParseFloat(q, 64); err == nil && v == 0 {
				return false
			}
		}
		return true
	}
	return false
}

// pair formats name="value" with the value escaped for the Prometheus text
// format: backslash, double quote and line feed are escaped, bytes that are
// not UTF-8 become U+FFFD. VictoriaMetrics has no exported helper for this
// (its examples use %q, whose \t, \x00 and \u escapes Prometheus rejects).
func pair(name, value string) string {
	return name + `="` + escapeLabelValue(value) + `"`
}

func escapeLabelValue(s string) string {
	if !strings.ContainsAny(s, "\\\"\n") && utf8.ValidString(s) {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
