package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/metering"
	"github.com/scoped-io/scoped/metering/export"
)

func TestUnitUsageDeltas(t *testing.T) {
	sc := &scope{id: ScopeID{Tenant: "acme", Name: "production", Environment: "production"}}
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	prev := &meterState{CPU: time.Second, Rx: 100, Tx: 10, At: t0, Mem: 1 << 30,
		Ext: map[string][3]int64{"hook": {2, 1, 500000}}}
	cur := &meterState{CPU: 3500 * time.Millisecond, Rx: 1100, Tx: 10, At: t0.Add(10 * time.Second), Mem: 3 << 30,
		Ext: map[string][3]int64{"hook": {5, 1, 2000000}, "other": {1, 1, 100000}}}
	got := map[string]float64{}
	for _, d := range usageDeltas(sc, prev, cur, cur.At) {
		if d.Tenant != "acme" || d.Dims.Scope != "acme.production" || d.Dims.Environment != "production" {
			t.Errorf("delta %+v: wrong tenant or dimensions", d)
		}
		got[d.Meter+"/"+d.Dims.Extension] += d.Value
	}
	want := map[string]float64{
		metering.CPUSeconds + "/":             2.5,
		metering.MemoryGiBSeconds + "/":       20, // mean of 1 and 3 GiB over 10 s
		metering.NetBytesIn + "/":             1000,
		metering.Invocations + "/hook":        3,
		metering.InvocationSeconds + "/hook":  1.5,
		metering.Invocations + "/other":       1,
		metering.ColdStarts + "/other":        1,
		metering.InvocationSeconds + "/other": 0.1,
	}
	for k, v := range want {
		if math.Abs(got[k]-v) > 1e-9 {
			t.Errorf("%s = %g, want %g", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected delta %s = %g (zero deltas must be left out)", k, got[k])
		}
	}
}

func TestUnitMeteringConfig(t *testing.T) {
	for name, m := range map[string]MeteringConfig{
		"window 7s":        {Enabled: true, Window: Duration{Duration: 7 * time.Second}, Flush: Duration{Duration: time.Second}},
		"retention 1h":     {Enabled: true, Window: Duration{Duration: time.Minute}, Flush: Duration{Duration: time.Second}, Retention: Duration{Duration: time.Hour}},
		"flush > window":   {Enabled: true, Window: Duration{Duration: time.Minute}, Flush: Duration{Duration: 2 * time.Minute}},
		"flush 1ms":        {Enabled: true, Window: Duration{Duration: time.Minute}, Flush: Duration{Duration: time.Millisecond}},
		"window 1.5s":      {Enabled: true, Window: Duration{Duration: 1500 * time.Millisecond}, Flush: Duration{Duration: time.Second}},
		"export bad url":   {Enabled: true, Window: Duration{Duration: time.Minute}, Flush: Duration{Duration: time.Second}, Retention: Duration{Duration: 2160 * time.Hour}, Exports: []export.Config{{Name: "x", Format: "cloudevents", URL: "ftp://x", Source: "s"}}},
		"export twice":     {Enabled: true, Window: Duration{Duration: time.Minute}, Flush: Duration{Duration: time.Second}, Retention: Duration{Duration: 2160 * time.Hour}, Exports: []export.Config{{Name: "x", Format: "cloudevents", URL: "http://127.0.0.1:1/e", Source: "s"}, {Name: "x", Format: "cloudevents", URL: "http://127.0.0.1:1/e", Source: "s"}}},
		"on_error maybe":   {Enabled: true, Window: Duration{Duration: time.Minute}, Flush: Duration{Duration: time.Second}, Retention: Duration{Duration: 2160 * time.Hour}, OnError: "maybe"},
		"on_error off":     {OnError: "ignore"},
		"token and a file": {Enabled: true, Window: Duration{Duration: time.Minute}, Flush: Duration{Duration: time.Second}, Retention: Duration{Duration: 2160 * time.Hour}, Exports: []export.Config{{Name: "x", Format: "cloudevents", URL: "http://127.0.0.1:1/e", Source: "s", Token: "t", TokenFile: "/nonexistent"}}},
	} {
		if err := m.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if d := DefaultConfig().Metering; d.Validate() != nil {
		t.Errorf("defaults: %v", d.Validate())
	}
	if got := DefaultConfig().Metering.OnError; got != CapsRefuse {
		t.Errorf("default on_error %q, want %q", got, CapsRefuse)
	}
}

// TestUnitCapsLedgerError: when the ledger cannot sum a capped tenant's
// usage, on_error = "refuse" refuses with UNAVAILABLE and a retry hint and
// counts the refusal as reason "ledger"; "allow" admits the invocation and
// counts it as unchecked. A tier without caps never asks the ledger. The
// log has one line however many invocations fail.
func TestUnitCapsLedgerError(t *testing.T) {
	for _, mode := range []string{CapsRefuse, CapsAllow} {
		t.Run(mode, func(t *testing.T) {
			s := unitSupervisor(t)
			var logBuf bytes.Buffer
			s.log = slog.New(slog.NewTextHandler(&logBuf, nil))
			cfg := *s.conf()
			cfg.Metering.OnError = mode
			capped := BaseTier()
			capped.DailyCaps = map[string]float64{metering.CPUSeconds: 10}
			cfg.Tiers = Tiers{"standard": BaseTier(), "capped": capped}
			s.cfg.Store(&cfg)
			l, err := metering.Open(t.TempDir(), cfg.Metering.Window.Duration)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil { // every Sum now fails
				t.Fatal(err)
			}
			s.meter.log = s.log
			s.meter.useLedger(l)
			for _, tenant := range []string{"acme", "globex"} {
				if _, _, err := s.store.Deploy(tenant, "production", "hook", unitBundle("w")); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.tenants.assign("acme", "capped", nil, time.Now()); err != nil {
				t.Fatal(err)
			}
			s.scopes.stop() // admitted calls then end without a scope
			req := func(tenant ident.Tenant) InvokeRequest {
				return InvokeRequest{Target: Target{tenant: tenant, environment: "production", extension: "hook"}}
			}
			if _, err := s.Invoke(context.Background(), req("globex")); !errors.Is(err, ErrStopping) {
				t.Fatalf("uncapped tenant: %v, want admitted (ErrStopping)", err)
			}
			const calls = 5
			for range calls {
				_, err := s.Invoke(context.Background(), req("acme"))
				if mode == CapsAllow {
					if !errors.Is(err, ErrStopping) {
						t.Fatalf("on_error allow: %v, want admitted (ErrStopping)", err)
					}
					continue
				}
				if !errors.Is(err, ErrLedger) {
					t.Fatalf("on_error refuse: %v, want ErrLedger", err)
				}
				if strings.Contains(err.Error(), "closed") {
					t.Errorf("the caller sees the ledger's own error: %v", err)
				}
				// The edge makes it UNAVAILABLE with a RetryInfo (api's tests).
				if ra := (*RetryAfterError)(nil); !errors.As(err, &ra) || ra.After <= 0 {
					t.Errorf("%v has no retry hint", err)
				}
			}
			var m bytes.Buffer
			s.metrics.WritePrometheus(&m)
			want := map[string]string{
				CapsRefuse: `scoped_admission_refused_total{tier="capped",reason="ledger"} 5`,
				CapsAllow:  `scoped_errors_total{kind="caps_unchecked"} 5`,
			}[mode]
			for _, line := range []string{want, `scoped_errors_total{kind="metering_caps"} 5`} {
				if !strings.Contains(m.String(), line) {
					t.Errorf("metrics lack %s:\n%s", line, m.String())
				}
			}
			if n := strings.Count(logBuf.String(), "spend caps cannot be checked"); n != 1 {
				t.Errorf("%d log lines for %d failed checks, want 1:\n%s", n, calls, logBuf.String())
			}
			if !strings.Contains(logBuf.String(), "on_error="+mode) || !strings.Contains(logBuf.String(), "closed") {
				t.Errorf("the log line lacks the mode or the ledger's error:\n%s", logBuf.String())
			}
		})
	}
}

// fakeCgroups is a cgroupProbe over a map of path → CPU counter and id.
type fakeCgroups map[string]struct {
	cpu time.Duration
	id  uint64
}

func (f fakeCgroups) probe(p string) (time.Duration, uint64, bool) {
	c, ok := f[p]
	return c.cpu, c.id, ok
}

// recoverUsage charges each scope cgroup a dead daemon left what it used
// after its cursor: all of it when it had no cursor (killed before its
// first flush) or its cursor is of an earlier cgroup of the same path;
// cursors of cgroups gone are dropped, the others settled at the reading.
func TestUnitRecoverUsage(t *testing.T) {
	const root = "/scoped"
	cursor := func(tenant, name string, cpu time.Duration, cgid uint64) []byte {
		b, err := json.Marshal(meterState{ID: ScopeID{Tenant: tenant, Name: name, Environment: name},
			Cgroup: root + "/standard/" + tenant + "/" + name, CPU: cpu, CgID: cgid})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cursors := map[string][]byte{
		root + "/standard/acme/production":   cursor("acme", "production", 2*time.Second, 11),
		root + "/standard/globex/production": cursor("globex", "production", time.Second, 12),
		root + "/standard/initech/staging":   cursor("initech", "staging", time.Second, 13), // gone
		root + "/standard/umbrella/dev":      cursor("umbrella", "dev", 5*time.Second, 14),  // made again
		root + "/standard/bad/x":             []byte("{not json"),
	}
	cg := fakeCgroups{
		root + "/standard/acme/production":   {3 * time.Second, 11},
		root + "/standard/globex/production": {time.Second, 12}, // nothing since
		root + "/standard/umbrella/dev":      {1500 * time.Millisecond, 24},
		root + "/free/hooli/staging":         {700 * time.Millisecond, 25}, // never flushed
	}
	present := []string{root + "/standard/acme/production", root + "/standard/globex/production",
		root + "/standard/umbrella/dev", root + "/free/hooli/staging"}
	idOf := func(p string) (ScopeID, bool) {
		e := strings.Split(strings.TrimPrefix(p, root+"/"), "/")
		return Isolation{By: []string{"environment"}}.idOf(e[1], e[2]), true
	}
	now := time.Now()
	deltas, next, unflushed := recoverUsage(cursors, present, idOf, cg.probe, now)
	got := map[string]float64{}
	for _, d := range deltas {
		if d.Meter != metering.CPUSeconds || !d.At.Equal(now) {
			t.Errorf("delta %+v", d)
		}
		got[d.Tenant+"/"+d.Dims.Scope+"/"+d.Dims.Environment] += d.Value
	}
	want := map[string]float64{
		"acme/acme.production/production": 1,
		"umbrella/umbrella.dev/dev":       1.5,
		"hooli/hooli.staging/staging":     0.7,
	}
	if len(got) != len(want) {
		t.Errorf("deltas %v, want %v", got, want)
	}
	for k, v := range want {
		if math.Abs(got[k]-v) > 1e-9 {
			t.Errorf("%s = %g, want %g", k, got[k], v)
		}
	}
	if unflushed != 1 {
		t.Errorf("unflushed = %d, want 1", unflushed)
	}
	for _, gone := range []string{root + "/standard/initech/staging", root + "/standard/bad/x"} {
		if b, ok := next[gone]; !ok || b != nil {
			t.Errorf("cursor of %s: %q, %v; want dropped", gone, b, ok)
		}
	}
	for p, c := range cg {
		var st meterState
		if err := json.Unmarshal(next[p], &st); err != nil {
			t.Errorf("settled cursor of %s: %v", p, err)
			continue
		}
		if st.CPU != c.cpu || st.CgID != c.id || st.Cgroup != p {
			t.Errorf("settled cursor of %s = %+v, want CPU %s id %d", p, st, c.cpu, c.id)
		}
	}
	// Settled again by a daemon that dies at once: nothing more to charge.
	again, _, unflushed := recoverUsage(next, present, idOf, cg.probe, now)
	if len(again) != 0 || unflushed != 0 {
		t.Errorf("second recovery charged %+v (%d never flushed), want nothing", again, unflushed)
	}
}

// A settled cursor stays in the ledger while its cgroup is there, and goes
// with the first flush after it is gone or made again.
func TestUnitSettledCursorsGoWithTheirCgroups(t *testing.T) {
	s := unitSupervisor(t)
	l, err := metering.Open(t.TempDir(), s.conf().Metering.Window.Duration)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cg := fakeCgroups{"/scoped/standard/acme/production": {time.Second, 7}, "/scoped/standard/acme/staging": {time.Second, 8}}
	s.meter.useLedger(l)
	s.meter.probe = cg.probe
	cursors := map[string][]byte{}
	for p, c := range cg {
		b, _ := json.Marshal(meterState{ID: ScopeID{Tenant: "acme", Name: "x"}, Cgroup: p, CPU: c.cpu, CgID: c.id})
		cursors[p] = b
		s.meter.settled[p] = c.id
	}
	if err := l.Commit(nil, cursors); err != nil {
		t.Fatal(err)
	}
	left := func() []string {
		t.Helper()
		if err := s.meter.flush(); err != nil {
			t.Fatal(err)
		}
		c, err := l.Cursors()
		if err != nil {
			t.Fatal(err)
		}
		return slices.Sorted(maps.Keys(c))
	}
	if got := left(); len(got) != 2 {
		t.Fatalf("cursors %v, want both while their cgroups are there", got)
	}
	delete(cg, "/scoped/standard/acme/production")
	cg["/scoped/standard/acme/staging"] = struct {
		cpu time.Duration
		id  uint64
	}{0, 9}
	if got := left(); len(got) != 0 {
		t.Errorf("cursors %v, want none once the cgroups are gone or made again", got)
	}
	if len(s.meter.settled) != 0 {
		t.Errorf("settled %v, want empty", s.meter.settled)
	}
}

// TestUnitMeterLifecycle: with metering off the meter opens no ledger,
// starts no loop and reports usage as not found, and the exporters start
// none; with it on, open settles the cursors of a previous life even
// without a cgroup tree (a Detached supervisor's), dropping those whose
// cgroups are gone, and the loop beats from Start until Stop.
func TestUnitMeterLifecycle(t *testing.T) {
	s := unitSupervisor(t)
	cfg := *s.conf()
	cfg.Metering.Enabled = false
	s.cfg.Store(&cfg)
	if err := s.meter.open(); err != nil || s.meter.ledger != nil {
		t.Fatalf("metering off: open = %v, ledger %v", err, s.meter.ledger)
	}
	if err := s.meter.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.health.meter.Load() != 0 {
		t.Error("metering off: the loop runs")
	}
	if _, err := s.TenantUsage(UsageQuery{Tenant: "acme"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("metering off: usage %v, want ErrNotFound", err)
	}
	x := newExporters(s.cfg.Load, s.meter, s.log)
	if err := errors.Join(x.Start(context.Background()), x.Stop(), s.meter.Stop(), s.meter.close()); err != nil {
		t.Fatal(err)
	}

	cfg.Metering.Enabled = true
	s.cfg.Store(&cfg)
	l, err := metering.Open(filepath.Join(cfg.StateDir, "metering"), cfg.Metering.Window.Duration)
	if err != nil {
		t.Fatal(err)
	}
	gone := "/scoped-unit-absent/standard/acme/production"
	b, _ := json.Marshal(meterState{ID: ScopeID{Tenant: "acme", Name: "production"}, Cgroup: gone, CPU: time.Second, CgID: 7})
	if err := errors.Join(l.Commit(nil, map[string][]byte{gone: b}), l.Close()); err != nil {
		t.Fatal(err)
	}
	if err := s.meter.open(); err != nil || s.meter.ledger == nil {
		t.Fatalf("metering on: open = %v, ledger %v", err, s.meter.ledger)
	}
	if c, err := s.meter.ledger.Cursors(); err != nil || len(c) != 0 {
		t.Errorf("cursors after open: %v, %v; want the gone cgroup's dropped", c, err)
	}
	if err := s.meter.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for s.health.meter.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := s.meter.Start(context.Background()); err == nil {
		t.Error("second Start of a running loop accepted")
	}
	if err := s.meter.Stop(); err != nil {
		t.Fatal(err)
	}
	if s.health.meter.Load() != 0 {
		t.Error("the loop's heartbeat stays after Stop")
	}
	if _, err := s.TenantUsage(UsageQuery{Tenant: "acme", From: time.Now().Add(-time.Hour), To: time.Now()}); err != nil {
		t.Errorf("usage: %v", err)
	}
	if err := s.meter.close(); err != nil {
		t.Fatal(err)
	}
}
