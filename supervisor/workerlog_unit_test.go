package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/scoped-io/scoped/internal/testutil"
)

// records is a slog handler that keeps every record at or above level.
type records struct {
	level slog.Level
	mu    sync.Mutex
	got   []slog.Record
}

func (h *records) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *records) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	h.mu.Lock()
	h.got = append(h.got, r)
	h.mu.Unlock()
	return nil
}
func (h *records) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordsView{h: h, attrs: as}
}
func (h *records) WithGroup(string) slog.Handler { return h }

func (h *records) all() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.got...)
}

// recordsView is records with attributes added (slog.Logger.With).
type recordsView struct {
	h     *records
	attrs []slog.Attr
}

func (v *recordsView) Enabled(ctx context.Context, l slog.Level) bool { return v.h.Enabled(ctx, l) }
func (v *recordsView) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(v.attrs...)
	v.h.mu.Lock()
	v.h.got = append(v.h.got, r)
	v.h.mu.Unlock()
	return nil
}
func (v *recordsView) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordsView{h: v.h, attrs: append(append([]slog.Attr(nil), v.attrs...), as...)}
}
func (v *recordsView) WithGroup(string) slog.Handler { return v }

func recordAttr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

// TestUnitWorkerOutputFixedLevelAndRate: a flood of lines that claim to be
// errors (hclog's "[ERROR]" prefix and JSON "@level") reaches the daemon's
// log only as "worker output" at the fixed level, at most the burst at
// once and the rate after, with one "suppressed" line counting the rest;
// the ring keeps every line.
func TestUnitWorkerOutputFixedLevelAndRate(t *testing.T) {
	h := &records{level: slog.LevelDebug}
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	f := newRingWriterFixture(5000)
	out := f.ring.workerLog(slog.New(h), "acme", "acme.production")
	out.now = func() time.Time { return now }
	f.w.out = out

	const flood = 3000
	var b strings.Builder
	for i := range flood {
		switch i % 3 {
		case 0:
			fmt.Fprintf(&b, `{"@level":"error","@message":"x%d","@timestamp":"2026-12-06T12:00:00.000000Z"}`+"\n", i)
		case 1:
			fmt.Fprintf(&b, "[ERROR] y%d\n", i)
		default:
			fmt.Fprintf(&b, "panic: z%d %s\n", i, strings.Repeat("é", 2000))
		}
	}
	f.write(t, b.String())

	if n := len(f.lines()); n != flood {
		t.Fatalf("ring has %d lines, want all %d", n, flood)
	}
	got := h.all()
	if len(got) != int(workerLogBurst) {
		t.Fatalf("daemon log has %d lines of a flood at one instant, want the burst %d", len(got), int(workerLogBurst))
	}
	for _, r := range got {
		if r.Level != workerOutputLevel || r.Message != "worker output" {
			t.Fatalf("worker line logged as %v %q", r.Level, r.Message)
		}
		for _, k := range []string{"tenant", "scope", "worker", "extension", "stream"} {
			if recordAttr(r, k) == "" {
				t.Fatalf("worker line without %s: %v", k, r)
			}
		}
		if l := recordAttr(r, "line"); len(l) > workerLogLineMax+len("…") || !strings.HasPrefix(l, "{") && !strings.HasPrefix(l, "[ERROR]") && !strings.HasPrefix(l, "panic:") {
			t.Fatalf("line attr of %d bytes: %.60q", len(l), l)
		}
	}
	if l := recordAttr(got[2], "line"); !strings.HasSuffix(l, "…") || !strings.HasPrefix(l, "panic: z2 é") || strings.ContainsRune(l, '\uFFFD') {
		t.Fatalf("a long line is not cut at a rune boundary: %.40q … %q", l, l[len(l)-8:])
	}

	// A second later the bucket has refilled by the rate.
	now = now.Add(time.Second)
	f.write(t, strings.Repeat("[ERROR] more\n", 100))
	if n := len(h.all()) - len(got); n != int(workerLogRate) {
		t.Fatalf("%d lines logged one second later, want the rate %d", n, int(workerLogRate))
	}
	// The report counts every suppressed line, once.
	out.report()
	out.report()
	all := h.all()
	last := all[len(all)-1]
	if last.Message != "worker output suppressed" || recordAttr(last, "lines") != fmt.Sprint(flood+100-int(workerLogBurst+workerLogRate)) {
		t.Fatalf("last record %q lines=%s", last.Message, recordAttr(last, "lines"))
	}
	if n := len(all) - int(workerLogBurst+workerLogRate); n != 1 {
		t.Fatalf("%d suppressed reports, want 1", n)
	}
	for _, r := range all {
		if r.Level != workerOutputLevel {
			t.Fatalf("record at %v: %q", r.Level, r.Message)
		}
	}
}

// TestUnitWorkerOutputOffAtInfo: at the daemon's usual level worker output
// does not reach its log at all, and costs no more than the level check.
func TestUnitWorkerOutputOffAtInfo(t *testing.T) {
	h := &records{level: slog.LevelInfo}
	f := newRingWriterFixture(100)
	f.w.out = f.ring.workerLog(slog.New(h), "acme", "acme.production")
	f.write(t, strings.Repeat("[ERROR] y\n{\"@level\":\"error\",\"@message\":\"x\"}\n", 200))
	if n := len(h.all()); n != 0 {
		t.Fatalf("%d records at info level", n)
	}
	if f.w.out.pending || f.w.out.suppressed != 0 {
		t.Fatalf("suppression tracked while the level is off")
	}
	if n := len(f.lines()); n != 100 {
		t.Fatalf("ring has %d lines, want its size 100", n)
	}
}

// TestUnitPluginLoggerDropsWorkerStderr runs go-plugin's own stderr
// reader over a process that writes error-looking lines: the lines reach
// the ring (the Stderr writer) and never the daemon's hclog output, while
// go-plugin's own messages still do.
func TestUnitPluginLoggerDropsWorkerStderr(t *testing.T) {
	var daemonLog testutil.SyncBuffer
	base := hclog.New(&hclog.LoggerOptions{Name: "go-plugin", Level: hclog.Trace, Output: &daemonLog})
	f := newRingWriterFixture(1000)
	// The words are put together at run time: go-plugin logs the command.
	script := `f=forg; for i in 1 2 3 4 5 6 7 8 9 10; do
  echo "{\"@level\":\"error\",\"@message\":\"${f}ed-json\",\"@timestamp\":\"2026-12-06T12:00:00.000000Z\"}" >&2
  echo "[ERROR] ${f}ed-prefix" >&2
  echo "panic: ${f}ed-panic" >&2
done`
	c := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  plugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: "K", MagicCookieValue: "V"},
		Plugins:          plugin.PluginSet{},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Cmd:              exec.Command("/bin/sh", "-c", script),
		StartTimeout:     time.Minute,
		Logger:           newPluginLogger(base, "sh"),
		Stderr:           f.w,
	})
	defer c.Kill()
	if _, err := c.Start(); err == nil {
		t.Fatal("a shell passed go-plugin's handshake")
	}
	// Start fails once the process exited, after go-plugin read its stderr.
	for deadline := time.Now().Add(time.Minute); len(f.lines()) < 30 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(f.lines()); n != 30 || !strings.Contains(f.lines()[0].Line, `"forged-json"`) {
		t.Fatalf("ring has %d lines (%q), want 30", n, ringLines(f.lines()))
	}
	out := daemonLog.String()
	if strings.Contains(out, "forged") {
		t.Fatalf("worker stderr reached the daemon's log:\n%s", out)
	}
	if !strings.Contains(out, "starting plugin") {
		t.Fatalf("go-plugin's own messages are missing:\n%s", out)
	}
}

func TestUnitPluginLoggerNames(t *testing.T) {
	base := hclog.New(&hclog.LoggerOptions{Name: "go-plugin", Level: hclog.Debug, Output: &bytes.Buffer{}})
	l := newPluginLogger(base, "hook")
	for _, sub := range []hclog.Logger{l.Named("hook"), l.ResetNamed("hook"), l.With("k", "v").Named("hook"), l.Named("stdio").Named("hook")} {
		if sub.GetLevel() != hclog.Off {
			t.Errorf("the worker's sub-logger is at %v, want Off (go-plugin then skips the lines)", sub.GetLevel())
		}
	}
	if l.Named("stdio").GetLevel() != hclog.Debug || l.Named("stdio").Name() != "go-plugin.stdio" {
		t.Errorf("go-plugin's own sub-logger changed: %v %q", l.Named("stdio").GetLevel(), l.Named("stdio").Name())
	}
}

func TestUnitLogEvery(t *testing.T) {
	var e logEvery
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	if ok, n := e.allow(t0, 10*time.Second); !ok || n != 0 {
		t.Fatalf("first: %v %d", ok, n)
	}
	for i := range 5 {
		if ok, _ := e.allow(t0.Add(time.Duration(i)*time.Second), 10*time.Second); ok {
			t.Fatalf("allowed within the interval")
		}
	}
	if ok, n := e.allow(t0.Add(10*time.Second), 10*time.Second); !ok || n != 5 {
		t.Fatalf("after the interval: %v %d, want true 5", ok, n)
	}
}
