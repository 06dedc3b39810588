package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// traceSource serves a trace's snapshots, one per call, from a script of
// uses; past its end it repeats the last one.
type traceSource struct {
	tr     *trace
	script []map[string]use
	calls  int
	err    error
}

func (s *traceSource) Snapshot() (Snapshot, error) {
	if s.err != nil {
		return Snapshot{}, s.err
	}
	u := s.script[min(s.calls, len(s.script)-1)]
	s.calls++
	return s.tr.snap(s.tr.cfg.Interval.Duration, u), nil
}

func script(n int, u map[string]use) []map[string]use {
	out := make([]map[string]use, n)
	for i := range out {
		out[i] = u
	}
	return out
}

// fakeActuator records what it is asked to set; fail makes the next calls
// for a scope fail (-1: always).
type fakeActuator struct {
	mu    sync.Mutex
	calls []string
	fail  map[string]int
	set   chan string // if not nil, gets every call
}

func (a *fakeActuator) SetCPU(key string, weight uint64, cpuMax float64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	call := fmt.Sprintf("%s %d %g", key, weight, cpuMax)
	a.calls = append(a.calls, call)
	if a.set != nil {
		select {
		case a.set <- call:
		default:
		}
	}
	if n := a.fail[key]; n != 0 {
		a.fail[key] = n - 1
		return errors.New("cgroup write failed")
	}
	return nil
}

func (a *fakeActuator) SetTenantCPU(tenant string, cpuMax float64, idle bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	call := fmt.Sprintf("tenant %s %g", tenant, cpuMax)
	if idle {
		call += " idle"
	}
	a.calls = append(a.calls, call)
	if a.set != nil {
		select {
		case a.set <- call:
		default:
		}
	}
	if n := a.fail["tenant "+tenant]; n != 0 {
		a.fail["tenant "+tenant] = n - 1
		return errors.New("cgroup write failed")
	}
	return nil
}

func (a *fakeActuator) got() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

func newTestController(t *testing.T, cfg Config, src Source, act Actuator) (*Controller, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	c, err := New(cfg, src, act, log)
	if err != nil {
		t.Fatal(err)
	}
	return c, &buf
}

func TestController(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxEvents = 2
	src := &traceSource{tr: newTrace(t, cfg), script: script(14, cast(hurt, noisy))}
	act := &fakeActuator{}
	c, logs := newTestController(t, cfg, src, act)
	for range 14 {
		if err := c.Tick(); err != nil {
			t.Fatal(err)
		}
		if c.Throttled()[antagonist] == LevelWeight && len(c.Events(time.Time{})) != 2 {
			t.Errorf("events %v", c.Events(time.Time{}))
		}
	}
	if got, want := act.got(), []string{"evil.prod 10 0", "evil.prod 10 0.9"}; !slices.Equal(got, want) {
		t.Errorf("set %v, want %v", got, want)
	}
	evs := c.Events(time.Time{})
	if k := kinds(evs); !slices.Equal(k, []string{"stepped_down evil.prod", "capped evil.prod"}) {
		t.Errorf("kept events %v", k)
	}
	if k := kinds(c.Events(evs[0].At)); !slices.Equal(k, []string{"capped evil.prod"}) {
		t.Errorf("events since the step-down: %v", k)
	}
	evs[1].Victims[0] = "changed"
	if v := c.Events(time.Time{})[1].Victims[0]; v != victim {
		t.Errorf("Events shares its victims: %q", v)
	}
	if got, want := c.Counts(), map[string]uint64{EventDetected: 1, EventSteppedDown: 1, EventCapped: 1}; !countsEqual(got, want) {
		t.Errorf("counts %v, want %v", got, want)
	}
	if got := c.Throttled(); !mapsEqual(got, map[string]int{antagonist: LevelCapped}) {
		t.Errorf("throttled %v", got)
	}
	for _, s := range []string{
		`msg="noisy neighbour: stepped_down" component=control tenant=evil scope=evil.prod victims=[acme.prod] level=1 reason="weight 100 → 10: victim acme.prod: run-queue p99 27.96ms`,
		`msg="noisy neighbour: capped"`,
	} {
		if !strings.Contains(logs.String(), s) {
			t.Errorf("log lacks %s:\n%s", s, logs)
		}
	}

	// Close restores, once.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := act.got(); got[len(got)-1] != "evil.prod 100 0" {
		t.Errorf("set %v, want the base restored last", got)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if len(act.got()) != 3 {
		t.Errorf("set %v after two Closes", act.got())
	}
	if k := kinds(c.Events(time.Time{})); k[len(k)-1] != "restored evil.prod" {
		t.Errorf("events %v", k)
	}
	if len(c.Throttled()) != 0 {
		t.Errorf("throttled %v after Close", c.Throttled())
	}
	if err := c.Tick(); !errors.Is(err, ErrClosed) {
		t.Errorf("Tick after Close: %v", err)
	}
}

// A failed action is retried at the next tick and logged once; one for a
// scope that went away is dropped.
func TestControllerRetry(t *testing.T) {
	cfg := DefaultConfig()
	sc := script(6, cast(hurt, noisy))
	sc = append(sc, map[string]use{victim: fine}, map[string]use{victim: fine})
	src := &traceSource{tr: newTrace(t, cfg), script: sc}
	act := &fakeActuator{fail: map[string]int{antagonist: -1}}
	c, logs := newTestController(t, cfg, src, act)
	for range 8 {
		if err := c.Tick(); err != nil {
			t.Fatal(err)
		}
	}
	// Ticks 4, 5 and 6 try; 7 finds the scope gone.
	if got := act.got(); !slices.Equal(got, []string{"evil.prod 10 0", "evil.prod 10 0", "evil.prod 10 0"}) {
		t.Errorf("set %v", got)
	}
	if n := strings.Count(logs.String(), "cpu settings not applied"); n != 1 {
		t.Errorf("%d failure lines:\n%s", n, logs)
	}
	if k := kinds(c.Events(time.Time{})); k[len(k)-1] != "released evil.prod" {
		t.Errorf("events %v", k)
	}

	// Failing twice, then working.
	src = &traceSource{tr: newTrace(t, cfg), script: script(8, cast(hurt, noisy))}
	act = &fakeActuator{fail: map[string]int{antagonist: 2}}
	c, _ = newTestController(t, cfg, src, act)
	for range 8 {
		_ = c.Tick()
	}
	if got := act.got(); len(got) != 3 {
		t.Errorf("set %v, want 3 tries", got)
	}
	// Close restores even when the step-down never went through.
	act.fail[antagonist] = 1
	if err := c.Close(); err == nil || !strings.Contains(err.Error(), "restore evil.prod: cgroup write failed") {
		t.Errorf("Close: %v", err)
	}
}

func TestControllerSourceError(t *testing.T) {
	src := &traceSource{tr: newTrace(t, DefaultConfig()), err: errors.New("map read failed")}
	c, logs := newTestController(t, DefaultConfig(), src, &fakeActuator{})
	for range 3 {
		if err := c.Tick(); err == nil || !errors.Is(err, src.err) {
			t.Errorf("Tick: %v", err)
		}
	}
	if n := strings.Count(logs.String(), "snapshot failed"); n != 1 {
		t.Errorf("%d lines:\n%s", n, logs)
	}
}

// Run ticks until its context is done, then restores.
func TestControllerRun(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Interval.Duration = time.Millisecond
	// The trace's snapshots are a second apart, whatever Run's interval.
	src := &traceSource{tr: newTrace(t, DefaultConfig()), script: script(1, cast(hurt, noisy))}
	act := &fakeActuator{set: make(chan string, 1)}
	c, _ := newTestController(t, cfg, src, act)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	select {
	case call := <-act.set:
		if call != "evil.prod 10 0" {
			t.Errorf("first set %q", call)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no step-down")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := act.got(); got[len(got)-1] != "evil.prod 100 0" {
		t.Errorf("set %v, want the base restored last", got)
	}

	// Close stops Run too.
	c, _ = newTestController(t, cfg, &traceSource{tr: newTrace(t, cfg), script: script(1, cast(fine, idle))}, &fakeActuator{})
	go func() { done <- c.Run(context.Background()) }()
	time.Sleep(5 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}

func TestControllerDisabled(t *testing.T) {
	c, err := New(Config{}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Tick(); err != nil {
		t.Error(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Run(ctx); err != nil {
		t.Error(err)
	}
	if len(c.Throttled()) != 0 || len(c.Events(time.Time{})) != 0 {
		t.Error("a disabled controller did something")
	}
}

func TestNewInvalid(t *testing.T) {
	bad := DefaultConfig()
	bad.Interval.Duration = 0
	if _, err := New(bad, SourceFunc(nil), Actuators{}, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("invalid config: %v", err)
	}
	if _, err := New(DefaultConfig(), nil, Actuators{}, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("no source: %v", err)
	}
}

func countsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
