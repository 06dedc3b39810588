package metrics

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
)

var acme = ScopeLabels{Tenant: "acme", Scope: "acme.production", Tier: "pro", Environment: "production"}

func labelsOf(l ScopeLabels) map[string]string {
	return map[string]string{"tenant": l.Tenant, "scope": l.Scope, "tier": l.Tier, "environment": l.Environment}
}

// fullSample sets every field to a distinct value.
func fullSample() ScopeSample {
	b := make([]uint64, 40)
	b[3] = 7  // [8, 16) ns: below the first bound
	b[12] = 5 // [4096, 8192) ns
	b[20] = 2 // [~1 ms, ~2 ms)
	b[35] = 1 // ~34 s: only in +Inf
	return ScopeSample{
		CPU:           1500 * time.Millisecond,
		CPUThrottled:  250 * time.Millisecond,
		MemoryCurrent: 64 << 20,
		MemoryPeak:    80 << 20,
		OOMKills:      2,
		Pids:          9,
		Workers:       3,
		RunqBuckets:   b,
		RunqCount:     15,
		RunqSum:       3 * time.Millisecond,
		PreemptedBy:   map[string]uint64{"globex.production": 11, "initech.staging": 4},
		NetRxBytes:    1000,
		NetTxBytes:    2000,
		NetRxPackets:  10,
		NetTxPackets:  20,
	}
}

// populate fills every series the package has.
func populate(r *Registry) {
	r.SetDaemon(DaemonSample{
		Scopes: 1, Workers: 3, AccountingSource: SourceEBPF,
		BPFPrograms: map[string]BPFProgramStats{
			"sched_switch": {RunTime: 2 * time.Second, RunCount: 1000},
			"skb_ingress":  {RunTime: time.Second / 2, RunCount: 300},
		},
	})
	r.IncError("worker_start")
	r.IncRefused("free", "rate")
	r.IncReclaimed("free")
	r.SetControlEvents("stepped_down", 1)
	r.SetThrottled(1)
	r.SetCappedTenants(2)
	r.SetFleetDegraded(true)
	r.IncAPIPanic("/scoped.v1.Scoped/Invoke")
	r.UpdateScope(acme, fullSample())
	r.ObserveInvocation(acme, "hook", ResultOK, 2*time.Millisecond, true)
	r.ObserveInvocation(acme, "hook", ResultOK, 300*time.Microsecond, false)
	r.ObserveInvocation(acme, "hook", ResultDeadline, 2*time.Second, false)
}

func TestScopeSeries(t *testing.T) {
	r := New()
	populate(r)
	ex := scrape(t, r)
	l := labelsOf(acme)

	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{mCPU, l, 1.5},
		{mThrottled, l, 0.25},
		{mMemory, l, 64 << 20},
		{mMemoryPeak, l, 80 << 20},
		{mOOMKills, l, 2},
		{mPids, l, 9},
		{mScopeWorkers, l, 3},
		{mNetBytes, with(l, "direction", "in"), 1000},
		{mNetBytes, with(l, "direction", "out"), 2000},
		{mNetPackets, with(l, "direction", "in"), 10},
		{mNetPackets, with(l, "direction", "out"), 20},
		{mPreemptions, with(l, "by", "globex.production"), 11},
		{mPreemptions, with(l, "by", "initech.staging"), 4},
		{mRunq + "_count", l, 15},
		{mRunq + "_sum", l, 0.003},
		{mInvocations, with(l, "extension", "hook", "result", "ok"), 2},
		{mInvocations, with(l, "extension", "hook", "result", "deadline"), 1},
		{mInvocationDuration + "_count", with(l, "extension", "hook"), 3},
		{mColdStarts, with(l, "extension", "hook"), 1},
		{mScopes, map[string]string{}, 1},
		{mWorkers, map[string]string{}, 3},
		{mSource, map[string]string{"source": "ebpf"}, 1},
		{mSource, map[string]string{"source": "cgroupfs"}, 0},
		{mBPFRunSeconds, map[string]string{"program": "sched_switch"}, 2},
		{mBPFRuns, map[string]string{"program": "sched_switch"}, 1000},
		{mBPFRunSeconds, map[string]string{"program": "skb_ingress"}, 0.5},
		{mBPFRuns, map[string]string{"program": "skb_ingress"}, 300},
		{mErrors, map[string]string{"kind": "worker_start"}, 1},
		{mRefused, map[string]string{"tier": "free", "reason": "rate"}, 1},
		{mReclaimed, map[string]string{"tier": "free"}, 1},
		{mControlEvents, map[string]string{"kind": "stepped_down"}, 1},
		{mThrottledNow, map[string]string{}, 1},
		{mCappedTenants, map[string]string{}, 2},
		{mFleetDegraded, map[string]string{}, 1},
	}
	for _, c := range checks {
		if got := ex.one(t, c.name, c.labels); math.Abs(got-c.want) > 1e-9*math.Max(1, c.want) {
			t.Errorf("%s%v = %g, want %g", c.name, c.labels, got, c.want)
		}
	}
	// Every result exists from the first invocation on.
	for _, res := range results {
		ex.one(t, mInvocations, with(l, "extension", "hook", "result", res))
	}
	// Every family of the catalogue is present, typed and documented once.
	for _, f := range families {
		if ex.typ[f.name] != f.typ || ex.help[f.name] == "" {
			t.Errorf("%s: TYPE %q HELP %q", f.name, ex.typ[f.name], ex.help[f.name])
		}
		if !slices.Contains(ex.order, f.name) {
			t.Errorf("family %s has no series", f.name)
		}
	}
	// Every per-scope series carries the four scope labels.
	for _, s := range ex.samples {
		if strings.HasPrefix(s.name, "scoped_scope_") || strings.HasPrefix(s.name, "scoped_invocation") || strings.HasPrefix(s.name, "scoped_cold") {
			for k, v := range l {
				if s.labels[k] != v {
					t.Errorf("%v: label %s = %q, want %q", s, k, s.labels[k], v)
				}
			}
		}
	}
}

// histogram collects the _bucket series of one histogram.
type histogram struct {
	les   []float64 // in exposition order
	cum   []float64
	sum   float64
	count float64
}

func (ex *exposition) histogram(t *testing.T, name string, labels map[string]string) histogram {
	t.Helper()
	var h histogram
	for _, s := range ex.find(name+"_bucket", labels) {
		le, err := strconv.ParseFloat(s.labels["le"], 64)
		if err != nil {
			t.Fatalf("%v: le: %v", s, err)
		}
		h.les = append(h.les, le)
		h.cum = append(h.cum, s.value)
	}
	h.sum = ex.one(t, name+"_sum", labels)
	h.count = ex.one(t, name+"_count", labels)
	if len(h.les) == 0 || !math.IsInf(h.les[len(h.les)-1], 1) {
		t.Fatalf("%s%v: last le is not +Inf: %v", name, labels, h.les)
	}
	if !slices.IsSorted(h.les) || len(slices.Compact(slices.Clone(h.les))) != len(h.les) {
		t.Fatalf("%s: le not strictly increasing: %v", name, h.les)
	}
	if !slices.IsSorted(h.cum) {
		t.Fatalf("%s: buckets not cumulative: %v", name, h.cum)
	}
	if h.cum[len(h.cum)-1] != h.count {
		t.Fatalf("%s: +Inf %g != count %g", name, h.cum[len(h.cum)-1], h.count)
	}
	return h
}

func (h histogram) at(le float64) float64 {
	for i, b := range h.les {
		if math.IsInf(b, 1) != math.IsInf(le, 1) {
			continue
		}
		if b == le || math.Abs(b-le) <= 1e-12*le {
			return h.cum[i]
		}
	}
	return math.NaN()
}

func TestRunqHistogram(t *testing.T) {
	r := New()
	r.UpdateScope(acme, fullSample())
	ex := scrape(t, r)
	h := ex.histogram(t, mRunq, labelsOf(acme))
	if len(h.les) != runqBounds+1 {
		t.Fatalf("%d buckets, want %d", len(h.les), runqBounds+1)
	}
	ns := func(k int) float64 { return math.Ldexp(1, k) / 1e9 }
	for _, c := range []struct {
		le   float64
		want float64
	}{
		{ns(10), 7},  // bucket 3
		{ns(12), 7},  // bucket 12 = [2^12, 2^13) is not ≤ 2^12
		{ns(13), 12}, // … but is ≤ 2^13
		{ns(20), 12},
		{ns(21), 14}, // bucket 20
		{ns(32), 14}, // bucket 35 is beyond the last finite bound
		{math.Inf(1), 15},
	} {
		if got := h.at(c.le); got != c.want {
			t.Errorf("le=%g: %g, want %g (all: %v)", c.le, got, c.want, h.cum)
		}
	}
	if h.sum != 0.003 {
		t.Errorf("sum %g", h.sum)
	}

	// A count below the buckets' total (a torn read) is raised to it.
	s := fullSample()
	s.RunqCount = 3
	r.UpdateScope(acme, s)
	if h := scrape(t, r).histogram(t, mRunq, labelsOf(acme)); h.count != 15 {
		t.Errorf("count %g, want 15", h.count)
	}
	// The cgroupfs source measures no run-queue delay: no histogram at all.
	s.RunqBuckets, s.RunqCount, s.RunqSum = nil, 0, 0
	r.UpdateScope(acme, s)
	if got := scrape(t, r).find(mRunq+"_bucket", nil); len(got) != 0 {
		t.Errorf("histogram without data: %v", got)
	}
}

func TestInvocationHistogram(t *testing.T) {
	r := New()
	durations := []time.Duration{50 * time.Microsecond, 200 * time.Microsecond, 3 * time.Millisecond, 3 * time.Millisecond, 700 * time.Millisecond, 2 * time.Minute}
	var sum float64
	for _, d := range durations {
		r.ObserveInvocation(acme, "hook", ResultOK, d, false)
		sum += d.Seconds()
	}
	h := scrape(t, r).histogram(t, mInvocationDuration, with(labelsOf(acme), "extension", "hook"))
	if h.count != float64(len(durations)) || math.Abs(h.sum-sum) > 1e-9 {
		t.Errorf("count %g sum %g, want %d %g", h.count, h.sum, len(durations), sum)
	}
	for le, want := range map[float64]float64{0.0001: 1, 0.00025: 2, 0.0025: 2, 0.005: 4, 0.5: 4, 1: 5, 60: 5, math.Inf(1): 6} {
		if got := h.at(le); got != want {
			t.Errorf("le=%g: %g, want %g", le, got, want)
		}
	}
	if len(h.les) != len(invocationBuckets)+1 {
		t.Errorf("%d buckets", len(h.les))
	}
}

func TestResults(t *testing.T) {
	r := New()
	r.ObserveInvocation(acme, "hook", "no-such-result", time.Millisecond, false)
	r.ObserveInvocation(ScopeLabels{Tenant: "x"}, "hook", ResultOK, time.Millisecond, false)
	r.UpdateScope(ScopeLabels{Tenant: "x"}, fullSample())
	ex := scrape(t, r)
	if got := ex.one(t, mInvocations, with(labelsOf(acme), "extension", "hook", "result", ResultError)); got != 1 {
		t.Errorf("unknown result counted as error %g times", got)
	}
	if got := ex.one(t, mErrors, map[string]string{"kind": "metrics_no_scope"}); got != 2 {
		t.Errorf("empty scope key: %g errors, want 2", got)
	}
	if n := len(ex.find(mInvocations, map[string]string{"tenant": "x"})); n != 0 {
		t.Errorf("%d series for an empty scope key", n)
	}
}

// The exposition is one group per family under one HELP and TYPE, even
// with many scopes and with VictoriaMetrics' own metadata turned on.
func TestFamiliesGrouped(t *testing.T) {
	for _, meta := range []bool{false, true} {
		t.Run(fmt.Sprintf("ExposeMetadata=%v", meta), func(t *testing.T) {
			vm.ExposeMetadata(meta)
			defer vm.ExposeMetadata(false)
			r := New()
			populate(r)
			for i := range 5 {
				l := ScopeLabels{Tenant: fmt.Sprintf("t%d", i), Scope: fmt.Sprintf("t%d.production", i), Tier: "free", Environment: "production"}
				r.UpdateScope(l, fullSample())
				r.ObserveInvocation(l, "a", ResultOK, time.Millisecond, false)
				r.ObserveInvocation(l, "b", ResultOK, time.Millisecond, true)
			}
			ex := scrape(t, r) // fails on a second HELP or TYPE
			seen := map[string]bool{}
			for i, f := range ex.order {
				if i > 0 && ex.order[i-1] == f {
					continue
				}
				if seen[f] {
					t.Fatalf("family %s appears in two groups", f)
				}
				seen[f] = true
			}
			if n := len(ex.find(mCPU, nil)); n != 6 {
				t.Fatalf("%d cpu series, want 6", n)
			}
		})
	}
}

func TestRemoveScopeCardinality(t *testing.T) {
	r := New()
	populate(r)
	const n = 1000
	key := func(i int) string { return fmt.Sprintf("tenant%04d.production", i) }
	held := make([]*scopeEntry, 0, n)
	for i := range n {
		l := ScopeLabels{Tenant: fmt.Sprintf("tenant%04d", i), Scope: key(i), Tier: "free", Environment: "production"}
		s := fullSample()
		s.PreemptedBy = map[string]uint64{key((i + 1) % n): 1, acme.Scope: 2}
		r.UpdateScope(l, s)
		r.ObserveInvocation(l, "hook", ResultOK, time.Millisecond, i%2 == 0)
		r.ObserveInvocation(l, fmt.Sprintf("ext%d", i%3), ResultCrash, time.Second, false)
		held = append(held, r.scopes[key(i)])
	}
	before := scrape(t, r)
	if got := len(before.find(mCPU, nil)); got != n+1 {
		t.Fatalf("%d cpu series before, want %d", got, n+1)
	}
	for i := range n {
		r.RemoveScope(key(i))
	}
	r.RemoveScope("never-existed")

	ex := scrape(t, r)
	for _, s := range ex.samples {
		if sc, ok := s.labels["scope"]; ok && sc != acme.Scope {
			t.Fatalf("series of a removed scope: %v", s)
		}
		if by, ok := s.labels["by"]; ok && by != "globex.production" && by != "initech.staging" {
			t.Fatalf("preemption by a removed scope: %v", s)
		}
	}
	if len(r.scopes) != 1 || r.scopes[acme.Scope] == nil {
		t.Fatalf("registry holds %d scopes, want only %s", len(r.scopes), acme.Scope)
	}
	for _, e := range held {
		if names := e.set.ListMetricNames(); len(names) != 0 || e.exts != nil || e.peers != nil || e.acct != nil {
			t.Fatalf("removed scope %s keeps %d metrics", e.labels.Scope, len(names))
		}
		var buf bytes.Buffer
		e.set.WritePrometheus(&buf)
		if buf.Len() != 0 {
			t.Fatalf("removed set still writes %q", buf.String())
		}
	}
	r.RemoveScope(acme.Scope)
	if len(r.scopes) != 0 {
		t.Fatalf("registry keeps %d scopes", len(r.scopes))
	}
	for _, s := range scrape(t, r).samples {
		if strings.HasPrefix(s.name, "scoped_") && (s.labels["scope"] != "" || s.labels["tenant"] != "") {
			t.Fatalf("left over: %v", s)
		}
	}
	// The same key may come back, with fresh series.
	r.ObserveInvocation(acme, "hook", ResultOK, time.Millisecond, false)
	if got := scrape(t, r).one(t, mInvocations, with(labelsOf(acme), "extension", "hook", "result", "ok")); got != 1 {
		t.Fatalf("recreated scope counts %g", got)
	}
}

// A scope whose tier changes gets new series; the old ones go.
func TestLabelsChange(t *testing.T) {
	r := New()
	r.UpdateScope(acme, fullSample())
	r.ObserveInvocation(acme, "hook", ResultOK, time.Millisecond, false)
	up := acme
	up.Tier = "enterprise"
	r.UpdateScope(up, fullSample())
	ex := scrape(t, r)
	if got := ex.find(mCPU, map[string]string{"tier": "pro"}); len(got) != 0 {
		t.Fatalf("old tier's series remain: %v", got)
	}
	if ex.one(t, mCPU, labelsOf(up)) != 1.5 {
		t.Fatal("new tier's cpu")
	}
	if len(ex.find(mInvocations, nil)) != 0 {
		t.Fatal("invocations of the old labels remain")
	}
	if len(r.scopes) != 1 {
		t.Fatalf("%d entries", len(r.scopes))
	}
	// An invocation that still carries the old labels counts under the
	// scope's current ones, and brings no old series back.
	r.ObserveInvocation(acme, "hook", ResultOK, time.Millisecond, false)
	ex = scrape(t, r)
	if got := ex.find(mInvocations, map[string]string{"tier": "pro"}); len(got) != 0 {
		t.Fatalf("old labels came back: %v", got)
	}
	if ex.one(t, mInvocations, with(labelsOf(up), "extension", "hook", "result", "ok")) != 1 {
		t.Fatal("invocation under the new labels")
	}
	if ex.one(t, mCPU, labelsOf(up)) != 1.5 {
		t.Fatal("accounting series were dropped")
	}
}

func TestPreemptionPeersFollowSample(t *testing.T) {
	r := New()
	s := fullSample()
	r.UpdateScope(acme, s)
	s.PreemptedBy = map[string]uint64{"initech.staging": 9}
	r.UpdateScope(acme, s)
	got := scrape(t, r).find(mPreemptions, nil)
	if len(got) != 1 || got[0].labels["by"] != "initech.staging" || got[0].value != 9 {
		t.Fatalf("preemptions %v", got)
	}
}

func TestDaemonSeries(t *testing.T) {
	r := New()
	ex := scrape(t, r)
	if len(ex.find(mSource, nil)) != 0 || ex.one(t, mScopes, map[string]string{}) != 0 {
		t.Fatal("unset daemon sample")
	}
	populate(r)
	r.SetDaemon(DaemonSample{Scopes: 4, Workers: 7, AccountingSource: SourceCgroupfs})
	r.IncError("accounting_read")
	r.IncError("accounting_read")
	r.IncError("")
	ex = scrape(t, r)
	for name, want := range map[string]float64{mScopes: 4, mWorkers: 7} {
		if got := ex.one(t, name, map[string]string{}); got != want {
			t.Errorf("%s = %g", name, got)
		}
	}
	if ex.one(t, mSource, map[string]string{"source": "cgroupfs"}) != 1 || ex.one(t, mSource, map[string]string{"source": "ebpf"}) != 0 {
		t.Error("accounting source")
	}
	if got := ex.find(mBPFRuns, nil); len(got) != 0 {
		t.Errorf("programs of an older sample remain: %v", got)
	}
	if ex.one(t, mErrors, map[string]string{"kind": "accounting_read"}) != 2 || ex.one(t, mErrors, map[string]string{"kind": "unknown"}) != 1 {
		t.Error("errors")
	}
	r.SetDaemon(DaemonSample{AccountingSource: "perf"})
	ex = scrape(t, r)
	if ex.one(t, mSource, map[string]string{"source": "perf"}) != 1 || ex.one(t, mSource, map[string]string{"source": "ebpf"}) != 0 {
		t.Error("unknown accounting source")
	}
}

// Odd label values round-trip through escaping and the text format.
func TestLabelEscaping(t *testing.T) {
	odd := []string{
		`quote"inside`, `back\slash`, "line\nfeed", `trailing\`, `\"`, `\\n`,
		`a,b=c}{`, `ünïcödé ✓`, "tab\there", "nul\x00byte", "", "cr\rlf",
	}
	r := New()
	for i, v := range odd {
		l := ScopeLabels{Tenant: v, Scope: fmt.Sprintf("s%d-%s", i, v), Tier: v, Environment: v}
		r.UpdateScope(l, fullSample())
		r.ObserveInvocation(l, v, ResultOK, time.Millisecond, true)
		r.IncError(v + "x")
	}
	bad := ScopeLabels{Tenant: "bad\xffutf8", Scope: "bad\xfe", Tier: "t", Environment: "e"}
	r.UpdateScope(bad, fullSample())
	ex := scrape(t, r)
	for i, v := range odd {
		l := ScopeLabels{Tenant: v, Scope: fmt.Sprintf("s%d-%s", i, v), Tier: v, Environment: v}
		if ex.one(t, mCPU, labelsOf(l)) != 1.5 {
			t.Errorf("%q: cpu", v)
		}
		ex.one(t, mInvocations, with(labelsOf(l), "extension", v, "result", "ok"))
		ex.one(t, mErrors, map[string]string{"kind": v + "x"})
	}
	ex.one(t, mCPU, map[string]string{"tenant": "bad\uFFFDutf8", "scope": "bad\uFFFD", "tier": "t", "environment": "e"})
}

func FuzzEscapeLabelValue(f *testing.F) {
	for _, s := range []string{"", "plain", `"`, `\`, "\n", `\n`, "\xff", "a\"b\\c\nd", "}{,=", "\r\t\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		line := "m{" + pair("a", v) + "," + pair("b", v) + "} 1"
		if strings.Contains(line[:len(line)-2], "\n") {
			t.Fatalf("raw line feed in %q", line)
		}
		if err := vm.ValidateMetric(line[:len(line)-2]); err != nil {
			t.Fatalf("VictoriaMetrics rejects %q: %v", line, err)
		}
		s, err := parseLine(line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		want := strings.ToValidUTF8(v, "\uFFFD")
		if s.labels["a"] != want || s.labels["b"] != want || len(s.labels) != 2 {
			t.Fatalf("%q → %q → %q", v, line, s.labels)
		}
		// VictoriaMetrics accepts it as a metric name too.
		set := vm.NewSet()
		set.NewCounter(line[:len(line)-2]).Inc()
		var buf bytes.Buffer
		set.WritePrometheus(&buf)
		if got := strings.TrimSuffix(buf.String(), "\n"); got != line {
			t.Fatalf("set writes %q, want %q", got, line)
		}
	})
}

func TestHandlerGzipAndMethods(t *testing.T) {
	r := New()
	populate(r)
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()

	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	parseExposition(t, string(body)).one(t, mCPU, labelsOf(acme))

	resp, err = http.Post(srv.URL, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %s", resp.Status)
	}
	for h, want := range map[string]bool{"gzip": true, "deflate, gzip;q=0.5": true, "gzip;q=0": false, "identity": false, "": false, "GZIP": true} {
		if acceptsGzip(h) != want {
			t.Errorf("acceptsGzip(%q) != %v", h, want)
		}
	}
}

// Updates, invocations, removals and scrapes at once (run with -race).
func TestConcurrent(t *testing.T) {
	r := New()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				l := ScopeLabels{Tenant: "t", Scope: fmt.Sprintf("t.%d", (g*7+i)%20), Tier: []string{"free", "pro"}[i%2], Environment: "production"}
				switch i % 4 {
				case 0:
					r.UpdateScope(l, fullSample())
				case 1:
					r.ObserveInvocation(l, "hook", ResultOK, time.Millisecond, true)
				case 2:
					r.RemoveScope(l.Scope)
				case 3:
					r.IncError("x")
					r.SetDaemon(DaemonSample{Scopes: i, AccountingSource: SourceEBPF})
				}
			}
		})
	}
	for range 20 {
		scrape(t, r)
	}
	close(stop)
	wg.Wait()
	for i := range 20 {
		r.RemoveScope(fmt.Sprintf("t.%d", i))
	}
	for _, s := range scrape(t, r).samples {
		if s.labels["scope"] != "" {
			t.Fatalf("left over: %v", s)
		}
	}
}

func BenchmarkObserveInvocation(b *testing.B) {
	r := New()
	for b.Loop() {
		r.ObserveInvocation(acme, "hook", ResultOK, time.Millisecond, false)
	}
}

func BenchmarkScrape1000Scopes(b *testing.B) {
	r := New()
	for i := range 1000 {
		l := ScopeLabels{Tenant: fmt.Sprintf("t%d", i), Scope: fmt.Sprintf("t%d.production", i), Tier: "free", Environment: "production"}
		r.UpdateScope(l, fullSample())
		r.ObserveInvocation(l, "hook", ResultOK, time.Millisecond, false)
	}
	var buf bytes.Buffer
	for b.Loop() {
		buf.Reset()
		r.WritePrometheus(&buf)
	}
	b.ReportMetric(float64(buf.Len()), "bytes/scrape")
}
