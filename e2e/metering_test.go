package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/metering"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// TestMeteringLedger: invocations of a CPU-bound extension show up in the
// ledger as the tenant's cpu_seconds (close to the kernel's figure for the
// tenant's cgroup), invocations, invocation_seconds and cold_starts, by
// extension; scopectl usage prints them; they survive a restart.
func TestMeteringLedger(t *testing.T) {
	d := startDaemon(t, options{extra: "\n[metering]\nwindow = \"60s\"\nflush = \"200ms\"\n"})
	c := d.client()
	ctx := context.Background()
	deploy(t, c, "acme", "production", "spin", bins.spin)
	deploy(t, c, "globex", "production", "spin", bins.spin)
	start := time.Now().Add(-time.Minute)
	for range 3 {
		if _, err := invokeSpin(c, "acme", 300, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := invokeSpin(c, "globex", 100, 0); err != nil {
		t.Fatal(err)
	}
	kernel, err := cgroups.CPUUsage(filepath.Join(d.root, "standard", "acme"))
	if err != nil {
		t.Fatal(err)
	}
	usage := func(tenant, by string) map[string]float64 {
		t.Helper()
		r, err := c.GetUsage(ctx, &scopedv1.GetUsageRequest{Tenant: tenant, From: timestamppb.New(start),
			To: timestamppb.New(time.Now().Add(time.Minute)), By: by})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, row := range r.GetRows() {
			out[row.GetMeter()+"/"+row.GetGroup()] += row.GetValue()
		}
		return out
	}
	u := usage("acme", "")
	t.Logf("acme: %v; kernel CPU of its cgroup %s", u, kernel)
	if u["invocations/"] != 3 || u["cold_starts/"] != 1 {
		t.Errorf("invocations %v, cold starts %v: want 3 and 1", u["invocations/"], u["cold_starts/"])
	}
	if u["invocation_seconds/"] < 0.9 {
		t.Errorf("invocation_seconds %v: want at least the 0.9 s of CPU spun", u["invocation_seconds/"])
	}
	// The ledger's CPU was read at least as late as the kernel's figure
	// above (GetUsage flushes first); the worker idles in between.
	if cpu := u["cpu_seconds/"]; cpu < kernel.Seconds()*0.99 || cpu > kernel.Seconds()*1.05+0.05 {
		t.Errorf("ledger cpu_seconds %.3f, kernel %.3f: not within 1 %% (+ idle)", cpu, kernel.Seconds())
	}
	if u["memory_gib_seconds/"] <= 0 {
		t.Errorf("memory_gib_seconds %v, want > 0", u["memory_gib_seconds/"])
	}
	if g := usage("globex", ""); g["invocations/"] != 1 {
		t.Errorf("globex invocations %v, want 1 (tenants apart)", g["invocations/"])
	}
	if byExt := usage("acme", "extension"); byExt["invocations/spin"] != 3 {
		t.Errorf("by extension: %v", byExt)
	}
	out, err := exec.Command(bins.scopectl, "--socket", d.socket, "usage", "--tenant", "acme", "--from", "-10m", "--by", "scope", "-o", "csv").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "acme,invocations,acme.production,,3") {
		t.Errorf("scopectl usage -o csv: %v:\n%s", err, out)
	}
	if _, err := c.GetUsage(ctx, &scopedv1.GetUsageRequest{Tenant: "../x", From: timestamppb.Now(), To: timestamppb.Now()}); err == nil {
		t.Error("GetUsage for ../x accepted")
	}

	// A clean restart keeps the records.
	d.stop()
	d.start()
	c = d.client()
	after := usage("acme", "")
	if after["invocations/"] != 3 || math.Abs(after["cpu_seconds/"]-u["cpu_seconds/"]) > 0.05 {
		t.Errorf("after a restart: %v, before %v", after, u)
	}
}

// TestSpendCap: a tenant whose tier caps its daily invocations is refused
// with RESOURCE_EXHAUSTED "quota exceeded" once the ledger has them, with
// a retry hint of the rest of the UTC day; another tenant is not.
func TestSpendCap(t *testing.T) {
	d := startDaemon(t, options{extra: `
[metering]
flush = "200ms"
[tiers.capped]
daily_caps = { invocations = 3.0 }
`})
	c := d.client()
	ctx := context.Background()
	deploy(t, c, "acme", "production", "spin", bins.spin)
	deploy(t, c, "globex", "production", "spin", bins.spin)
	if _, err := c.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "acme", Tier: "capped"}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := invokeSpin(c, "acme", 1, 0); err != nil {
			t.Fatalf("invocation %d within the cap: %v", i+1, err)
		}
	}
	var err error
	waitFor(t, 10*time.Second, "the cap to bite", func() bool {
		_, err = invokeSpin(c, "acme", 1, 0)
		return err != nil
	})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "quota exceeded") {
		t.Fatalf("past the cap: %v, want ResourceExhausted quota exceeded", err)
	}
	if h := retryHint(err); h <= 0 || h > 24*time.Hour {
		t.Errorf("retry hint %s, want the rest of the day", h)
	}
	if _, err := invokeSpin(c, "globex", 1, 0); err != nil {
		t.Errorf("another tenant: %v", err)
	}
	if !strings.Contains(d.logs.String(), "spend cap reached") {
		t.Error("no log line for the cap")
	}
}

// TestMeteringExport: sealed records reach a CloudEvents endpoint (a local
// server that fails its first request), each with its record id, the
// invocations adding up.
func TestMeteringExport(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]float64{} // id → value of invocations events for acme
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			http.Error(w, "try again", http.StatusInternalServerError)
			return
		}
		var events []struct {
			ID, Type, Subject string
			Data              struct{ Value float64 }
		}
		if err := json.NewDecoder(r.Body).Decode(&events); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, e := range events {
			if e.Type == "invocations" && e.Subject == "acme" {
				seen[e.ID] = e.Data.Value
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	d := startDaemon(t, options{extra: fmt.Sprintf(`
[metering]
window = "1s"
flush = "200ms"
[[metering.export]]
name = "om"
format = "cloudevents"
url = %q
source = "scoped://e2e"
interval = "200ms"
batch = 10
`, srv.URL+"/api/v1/events")})
	c := d.client()
	deploy(t, c, "acme", "production", "spin", bins.spin)
	for range 2 {
		if _, err := invokeSpin(c, "acme", 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "2 invocations exported", func() bool {
		mu.Lock()
		defer mu.Unlock()
		total := 0.0
		for _, v := range seen {
			total += v
		}
		return total == 2
	})
	mu.Lock()
	t.Logf("%d requests; invocation events %v", calls, seen)
	mu.Unlock()
}

// TestMeteringSurvivesKill9: the daemon is killed with SIGKILL at random
// moments while two tenants keep it busy, and restarted each time; the
// ledger's cpu_seconds per tenant then agree with what the kernel counted
// in the tenants' cgroups within 1 % (the CPU used after each life's last
// flush is recovered from the dead scopes' cgroups at the next start), and
// no record id repeats.
func TestMeteringSurvivesKill9(t *testing.T) {
	d := startDaemon(t, options{poolExtra: "max_workers = 2\nidle_timeout = \"10m\"",
		extra: "\n[metering]\nwindow = \"1s\"\nflush = \"300ms\"\n"})
	tenants := []string{"acme", "globex"}
	c := d.client()
	for _, tn := range tenants {
		deploy(t, c, tn, "production", "spin", bins.spin)
	}
	kernel := map[string]time.Duration{}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for life := range 3 {
		c := d.client()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, tn := range tenants {
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := invokeSpin(c, tn, 150, 0); err != nil {
							return // the daemon is gone
						}
					}
				}()
			}
		}
		time.Sleep(time.Duration(800+rng.IntN(1500)) * time.Millisecond)
		d.kill9()
		close(stop)
		wg.Wait()
		c.Close()
		countKilled(t, d, tenants, kernel)
		t.Logf("life %d: killed; kernel CPU so far %v", life+1, kernel)
		d.start()
	}
	ledgerMatchesKernel(t, d, tenants, kernel)
	d.stop()
	l, err := metering.OpenReadOnly(filepath.Join(d.state, "metering"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	recs, err := l.Sealed(0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, r := range recs {
		if ids[r.ID] {
			t.Errorf("record id %s twice", r.ID)
		}
		ids[r.ID] = true
	}
	if len(recs) == 0 {
		t.Error("no sealed records")
	}
}

// countKilled kills what is left of a killed daemon's workers (as the next
// start's cleanup would, so that what the kernel counted is final) and adds
// each tenant's CPU time, as its tier node counted it, to kernel.
func countKilled(t *testing.T, d *daemon, tenants []string, kernel map[string]time.Duration) {
	t.Helper()
	killWorkersLeft(t, d)
	for _, tn := range tenants {
		n, err := cgroups.Load(filepath.Join(d.root, "standard", tn))
		if err != nil {
			t.Fatal(err)
		}
		st, err := n.Stats()
		if err != nil {
			t.Fatal(err)
		}
		kernel[tn] += st.CPUUsage
	}
}

// killWorkersLeft kills the workers a killed daemon left under its root
// and waits until none is left.
func killWorkersLeft(t *testing.T, d *daemon) {
	t.Helper()
	waitFor(t, 15*time.Second, "the workers to die", func() bool {
		left := processesIn(d.root)
		for _, p := range left {
			if pid, err := strconv.Atoi(strings.Split(p, "/")[2]); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		return len(left) == 0
	})
}

// ledgerMatchesKernel checks that each tenant's cpu_seconds in the ledger
// are what the kernel counted, within 1 %.
func ledgerMatchesKernel(t *testing.T, d *daemon, tenants []string, kernel map[string]time.Duration) {
	t.Helper()
	c := d.client()
	defer c.Close()
	for _, tn := range tenants {
		r, err := c.GetUsage(context.Background(), &scopedv1.GetUsageRequest{Tenant: tn, Meter: "cpu_seconds",
			From: timestamppb.New(time.Now().Add(-time.Hour)), To: timestamppb.New(time.Now().Add(time.Hour))})
		if err != nil {
			t.Fatal(err)
		}
		var ledger float64
		for _, row := range r.GetRows() {
			ledger += row.GetValue()
		}
		k := kernel[tn].Seconds()
		t.Logf("%s: ledger %.3f cpu_seconds, kernel %.3f", tn, ledger, k)
		if k < 0.1 || math.Abs(ledger-k) > 0.01*k {
			t.Errorf("%s: ledger %.3f cpu_seconds, kernel %.3f: not within 1 %%", tn, ledger, k)
		}
	}
}

// TestMeteringCountsScopesNeverFlushed: a daemon killed before its scopes'
// first flush (here the flush is an hour away) loses none of their CPU
// time: the next start charges it from the cgroups they left.
func TestMeteringCountsScopesNeverFlushed(t *testing.T) {
	d := startDaemon(t, options{poolExtra: "max_workers = 2\nidle_timeout = \"10m\"",
		extra: "\n[metering]\nwindow = \"1h\"\nflush = \"1h\"\n"})
	tenants := []string{"acme", "globex"}
	c := d.client()
	for _, tn := range tenants {
		deploy(t, c, tn, "production", "spin", bins.spin)
		for range 3 {
			if _, err := invokeSpin(c, tn, 100, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.Close()
	d.kill9()
	kernel := map[string]time.Duration{}
	countKilled(t, d, tenants, kernel)
	d.start()
	ledgerMatchesKernel(t, d, tenants, kernel)
	// A clean stop leaves no cursor for the next start to settle, not
	// even of the scopes it removed.
	c = d.client()
	if _, err := invokeSpin(c, "acme", 10, 0); err != nil {
		t.Fatal(err)
	}
	c.Close()
	d.stop()
	l, err := metering.OpenReadOnly(filepath.Join(d.state, "metering"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if c, err := l.Cursors(); err != nil || len(c) != 0 {
		t.Errorf("cursors after a clean stop: %d, %v; want none", len(c), err)
	}
}

// TestMeteringJournalKill9: the invocations counted since the last flush
// survive a kill -9 of the daemon (the invocation journal): invoked before
// and after a flush (a usage report) with the next flush an hour away,
// sequentially and concurrently, the ledger after the restart holds exactly
// the invocations that succeeded and the cold starts; a second kill -9
// charges nothing twice, and a clean stop leaves an empty journal.
func TestMeteringJournalKill9(t *testing.T) {
	d := startDaemon(t, options{poolExtra: "max_workers = 2\nidle_timeout = \"10m\"",
		extra: "\n[metering]\nwindow = \"1h\"\nflush = \"1h\"\n"})
	c := d.client()
	ctx := context.Background()
	for _, tn := range []string{"acme", "globex"} {
		deploy(t, c, tn, "production", "spin", bins.spin)
	}
	usage := func(tenant string) map[string]float64 {
		t.Helper()
		c := d.client()
		defer c.Close()
		r, err := c.GetUsage(ctx, &scopedv1.GetUsageRequest{Tenant: tenant,
			From: timestamppb.New(time.Now().Add(-2 * time.Hour)), To: timestamppb.New(time.Now().Add(2 * time.Hour))})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, row := range r.GetRows() {
			out[row.GetMeter()] += row.GetValue()
		}
		return out
	}
	call := func(tn string) {
		t.Helper()
		if _, err := invokeSpin(c, tn, 5, 0); err != nil {
			t.Fatal(err)
		}
	}
	// acme: 3 calls, a flush (the usage report), 4 more; globex: 12 calls
	// from 4 goroutines, none flushed.
	for range 3 {
		call("acme")
	}
	if u := usage("acme"); u["invocations"] != 3 {
		t.Fatalf("acme before the kill: %v invocations, want 3", u["invocations"])
	}
	for range 4 {
		call("acme")
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				if _, err := invokeSpin(c, "globex", 5, 0); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	c.Close()
	d.kill9()
	killWorkersLeft(t, d)
	d.start()
	check := func(when string) {
		t.Helper()
		a, g := usage("acme"), usage("globex")
		t.Logf("%s: acme %v; globex %v", when, a, g)
		if a["invocations"] != 7 || a["cold_starts"] != 1 {
			t.Errorf("%s: acme %v invocations, %v cold starts; want 7 and 1", when, a["invocations"], a["cold_starts"])
		}
		if g["invocations"] != 12 || g["cold_starts"] < 1 || g["cold_starts"] > 2 {
			t.Errorf("%s: globex %v invocations, %v cold starts; want 12 and 1 or 2", when, g["invocations"], g["cold_starts"])
		}
		if a["invocation_seconds"] <= 0 || g["invocation_seconds"] <= 0 {
			t.Errorf("%s: invocation_seconds acme %v, globex %v; want > 0", when, a["invocation_seconds"], g["invocation_seconds"])
		}
	}
	check("after a kill -9")
	// Killed again at once: what the journal held is charged once.
	d.kill9()
	killWorkersLeft(t, d)
	d.start()
	check("after a second kill -9")
	c = d.client()
	call("acme")
	c.Close()
	d.stop()
	names, err := filepath.Glob(filepath.Join(d.state, "metering", "invocations-*.journal"))
	if err != nil || len(names) != 0 {
		t.Errorf("journal files after a clean stop: %v, %v; want none", names, err)
	}
	d.start()
	if a := usage("acme"); a["invocations"] != 8 {
		t.Errorf("after a clean stop: acme %v invocations, want 8", a["invocations"])
	}
}
