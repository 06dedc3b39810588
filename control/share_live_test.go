package control

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scoped-io/scoped/cgroups"
)

// shareRecordEnv names the file TestRecordShareTrace writes; unset, it is
// skipped.
//
//	sudo SCOPED_CONTROL_SHARE_RECORD=$PWD/control/testdata/share-trace-$(uname -r)-$(date +%F).json \
//	    go test -tags seccomp -run TestRecordShareTrace -v ./control/
const shareRecordEnv = "SCOPED_CONTROL_SHARE_RECORD"

// goSpin is a load like a Go worker busy in an invocation: one goroutine
// spinning, and a ticker that wakes the runtime every millisecond (threads
// that sleep periodically, which is what makes the 6.18 kernel's split of
// equal group weights drift). It is not pinned. It says "ready", waits for
// a line on stdin, then runs until killed or for two minutes at most.
func goSpin() int {
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return 0
	}
	go func() {
		t := time.NewTicker(time.Millisecond)
		for range t.C {
		}
	}()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		for i := 0; i < 1<<20; i++ {
		}
	}
	return 0
}

// shareRecorded is the file TestRecordShareTrace writes and
// TestReplayShareTrace reads.
type shareRecorded struct {
	Note      string
	Config    Config
	Snapshots []Snapshot
	Decisions []string // as shareLog has them
}

// shareLog is what DecideShares decided over a trace: "tick kind tenant
// victims" and "tick cap tenant cpumax".
func shareLog(t testing.TB, cfg Config, snaps []Snapshot) []string {
	t.Helper()
	var st ShareState
	var log []string
	for i, snap := range snaps {
		next, acts, evs := DecideShares(cfg, st, snap)
		checkShareInvariants(t, st, snap, next, acts, evs)
		st = next
		for _, e := range evs {
			log = append(log, fmt.Sprintf("%d %s %s %v", i+1, e.Kind, e.Tenant, e.Victims))
		}
		for _, a := range acts {
			log = append(log, fmt.Sprintf("%d cap %s %.3f", i+1, a.Tenant, a.CPUMax))
		}
	}
	return log
}

// TestRecordShareTrace runs fairbench's "8 scopes against 1" by hand under
// a live Controller and records what it saw and did: tenant many with 8
// scopes of two Go-like spinners each, tenant one with 1 scope of two,
// equal weights, on all CPUs, for 20 s; then one stops and many runs alone
// for 3 s. Where the kernel's split drifts, the controller must cap many at
// its share; the run is written with ".fair" appended when it never did
// (the kernel was fair that time: run it again). Root, eBPF accounting and
// a unified hierarchy are needed; it runs only when
// SCOPED_CONTROL_SHARE_RECORD names the file to write.
func TestRecordShareTrace(t *testing.T) {
	file := os.Getenv(shareRecordEnv)
	if file == "" {
		t.Skip("records a trace only when " + shareRecordEnv + " names the file")
	}
	tree, acct, log := openLive(t)

	tenants := map[string]*cgroups.Node{}
	scopes := map[string]*cgroups.Node{}
	var infos []ScopeInfo
	for tenant, n := range map[string]int{"many": 8, "one": 1} {
		tn, err := tree.Node(cgroups.Limits{CPUWeight: 100, CPUMax: -1}, "standard", tenant)
		if err != nil {
			t.Fatal(err)
		}
		tenants[tenant] = tn
		for i := range n {
			key := fmt.Sprintf("%s.s%d", tenant, i)
			sn, err := tree.Node(cgroups.Limits{CPUWeight: 100, CPUMax: -1}, "standard", tenant, fmt.Sprintf("s%d", i))
			if err != nil {
				t.Fatal(err)
			}
			id, err := sn.ID()
			if err != nil {
				t.Fatal(err)
			}
			if err := acct.Track(id, sn); err != nil {
				t.Fatal(err)
			}
			defer acct.Untrack(id)
			scopes[key] = sn
			infos = append(infos, ScopeInfo{Key: key, Tenant: tenant, ID: id, UnifiedDir: sn.UnifiedDir(), Weight: 100, TenantWeight: 100})
		}
	}
	slices.SortFunc(infos, func(a, b ScopeInfo) int { return strings.Compare(a.Key, b.Key) })

	cfg := DefaultConfig()
	rec := shareRecorded{
		Note: fmt.Sprintf("recorded by TestRecordShareTrace on %s, kernel %s, %d CPUs, cgroup mode %s: tenant many 8 scopes × 2 Go-like spinners, tenant one 1 scope × 2, equal weights, 20 s; then one stops",
			time.Now().UTC().Format(time.DateOnly), kernelRelease(), runtime.NumCPU(), tree.Mode()),
		Config: cfg,
	}
	var mu sync.Mutex
	var present []ScopeInfo
	setPresent := func(p []ScopeInfo) { mu.Lock(); present = p; mu.Unlock() }
	setPresent(infos)
	live := AccountingSource(acct, func() []ScopeInfo { mu.Lock(); defer mu.Unlock(); return slices.Clone(present) })
	src := SourceFunc(func() (Snapshot, error) {
		snap, err := live.Snapshot()
		snap.At = snap.At.Round(0)
		mu.Lock()
		rec.Snapshots = append(rec.Snapshots, snap)
		mu.Unlock()
		return snap, err
	})
	var applied []string
	act := Actuators{
		Scope: func(key string, weight uint64, cpuMax float64) error { return nil }, // the scope rule's steps are not recorded
		Tenant: func(tenant string, cpuMax float64, idle bool) error {
			mu.Lock()
			applied = append(applied, fmt.Sprintf("%d cap %s %.3f idle %t", len(rec.Snapshots), tenant, cpuMax, idle))
			mu.Unlock()
			l := cgroups.Limits{CPUMax: cpuMax, CPUPeriod: cfg.SharePeriod.Duration, CPUIdle: -1}
			if idle {
				l.CPUIdle = 1
			}
			if cpuMax <= 0 {
				l = cgroups.Limits{CPUMax: -1, CPUIdle: -1}
			}
			return tenants[tenant].Set(l)
		},
	}
	c, err := New(cfg, src, act, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	var ones []*load
	for key, n := range scopes {
		if strings.HasPrefix(key, "one.") {
			ones = append(ones, startLoad(t, "gospin", n), startLoad(t, "gospin", n))
		} else {
			startLoad(t, "gospin", n)
			startLoad(t, "gospin", n)
		}
	}
	time.Sleep(20 * time.Second)
	for _, l := range ones {
		l.stop()
	}
	// The one-scope tenant's scope goes too, as an idle scope would.
	var many []ScopeInfo
	for _, s := range infos {
		if s.Tenant == "many" {
			many = append(many, s)
		}
	}
	setPresent(many)
	time.Sleep(3 * time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, e := range c.Events(time.Time{}) {
		t.Logf("%s %s %s victims %v: %s", e.At.Format("15:04:05.000"), e.Kind, e.Tenant, e.Victims, e.Reason)
	}
	mu.Lock()
	defer mu.Unlock()
	rec.Decisions = shareLog(t, rec.Config, rec.Snapshots)
	var set []string
	for _, l := range rec.Decisions {
		if strings.Contains(l, " cap ") {
			set = append(set, l)
		}
	}
	// Close's lift is the live controller's own, not a decision.
	if n := len(applied); n > 0 && strings.HasSuffix(applied[n-1], " 0.000") && len(set) < n {
		applied = applied[:n-1]
	}
	if !slices.Equal(set, applied) {
		t.Errorf("the replay sets %v, the live controller set %v", set, applied)
	}
	b, err := json.MarshalIndent(rec, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(rec.Decisions, func(l string) bool { return strings.Contains(l, "share_capped many") }) {
		file += ".fair"
	}
	if t.Failed() {
		file += ".failed"
	}
	if err := os.WriteFile(file, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d snapshots written to %s", len(rec.Snapshots), file)
}
