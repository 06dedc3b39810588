package supervisor

import (
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/metering"
	"github.com/scoped-io/scoped/metrics"
)

func journalTestMeter() *meter {
	return &meter{meterDeps: meterDeps{log: slog.New(slog.NewTextHandler(io.Discard, nil)), metrics: metrics.New()},
		last: map[string]*meterState{}, settled: map[string]uint64{}}
}

func journalTestScope(t testing.TB, tenant string) *scope {
	node, err := cgroups.Load(filepath.Join("/scoped-test-absent/standard", tenant, tenant+".production"))
	if err != nil {
		t.Fatal(err)
	}
	return &scope{id: ScopeID{Tenant: tenant, Name: "production", Environment: "production"}, node: node, nodeID: 7}
}

// TestReplayJournal: the journal's counters are charged beyond the cursor
// of the same cgroup, in full for a cgroup still there without a cursor,
// not at all for a scope whose cgroup and cursor are gone; the settled
// cursors then carry them, so a second replay charges nothing.
func TestReplayJournal(t *testing.T) {
	dir := t.TempDir()
	j, err := metering.OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	flushed, fresh, gone := journalTestScope(t, "acme"), journalTestScope(t, "globex"), journalTestScope(t, "initech")
	for range 5 {
		for _, sc := range []*scope{flushed, fresh, gone} {
			if err := sc.countInvocation("spin", 2*time.Millisecond, false, j); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = flushed.countInvocation("other", time.Millisecond, true, j)
	j.Close()

	m := journalTestMeter()
	cursor := func(sc *scope, ext map[string][3]int64) []byte {
		b, _ := json.Marshal(meterState{ID: sc.id, Cgroup: sc.node.Path(), CgID: sc.nodeID, Ext: ext})
		return b
	}
	old := map[string][]byte{flushed.node.Path(): cursor(flushed, map[string][3]int64{"spin": {3, 0, 6000}})}
	// What recoverUsage leaves: the cgroups still there get a settled
	// cursor without counters; initech's is gone.
	next := map[string][]byte{flushed.node.Path(): cursor(flushed, nil), fresh.node.Path(): cursor(fresh, nil)}
	j2, err := metering.OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	got := map[string]float64{}
	deltas, upTo := m.replayJournal(j2, old, next, time.Now())
	for _, d := range deltas {
		got[d.Tenant+"/"+d.Dims.Extension+"/"+d.Meter] += d.Value
	}
	want := map[string]float64{
		"acme/spin/invocations": 2, "acme/spin/invocation_seconds": 0.004,
		"acme/other/invocations": 1, "acme/other/cold_starts": 1, "acme/other/invocation_seconds": 0.001,
		"globex/spin/invocations": 5, "globex/spin/invocation_seconds": 0.010,
	}
	if len(got) != len(want) {
		t.Errorf("deltas %v, want %v", got, want)
	}
	for k, v := range want {
		if d := got[k] - v; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if upTo == 0 {
		t.Error("no file replayed")
	}
	// Replayed again against the cursors it settled: nothing.
	if again, _ := m.replayJournal(j2, next, next, time.Now()); len(again) != 0 {
		t.Errorf("second replay charged %v", again)
	}
	if err := j2.Release(upTo); err != nil {
		t.Fatal(err)
	}
	if again, _ := m.replayJournal(j2, nil, next, time.Now()); len(again) != 0 {
		t.Errorf("replay after release charged %v", again)
	}
}

// BenchmarkCountInvocationJournal is the hot path's cost of counting one
// invocation with the journal on.
func BenchmarkCountInvocationJournal(b *testing.B) {
	j, err := metering.OpenJournal(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	m := journalTestMeter()
	m.journal.j.Store(j)
	sc := journalTestScope(b, "acme")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m.countInvocation(sc, "spin", time.Millisecond, false)
	}
}

// TestJournalRotateUnderLoad: scopes counting concurrently while flushes
// rotate and release the journal (none committing them: a scope being
// removed) leave the journal holding each scope's final counters.
func TestJournalRotateUnderLoad(t *testing.T) {
	dir := t.TempDir()
	j, err := metering.OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := journalTestMeter()
	m.probe = func(string) (time.Duration, uint64, bool) { return 0, 7, true }
	m.journal.j.Store(j)
	scopes := []*scope{journalTestScope(t, "acme"), journalTestScope(t, "globex")}
	stop := make(chan struct{})
	rotated := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				rotated <- n
				return
			default:
			}
			m.mu.Lock()
			if upTo, appended, ok := m.rotateJournal(); ok {
				m.releaseJournal(upTo, appended, nil)
				n++
			}
			m.mu.Unlock()
		}
	}()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 300 {
				m.countInvocation(scopes[i%2], "spin", time.Microsecond, false)
			}
		}()
	}
	wg.Wait()
	close(stop)
	t.Logf("%d rotations", <-rotated)
	j.Close()
	j2, err := metering.OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	last := map[string]int64{}
	if _, err := j2.Replay(func(e metering.JournalEntry) error { last[e.Tenant] = e.Invocations; return nil },
		func(f string, err error) { t.Errorf("%s: %v", f, err) }); err != nil {
		t.Fatal(err)
	}
	for _, tn := range []string{"acme", "globex"} {
		if last[tn] != 600 {
			t.Errorf("%s: the journal's last counter %d, want 600", tn, last[tn])
		}
	}
}
