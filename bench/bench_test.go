package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheckWhoami(t *testing.T) {
	if err := CheckWhoami([]byte(`{"payload":"hi"}`), "hi"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{`{"payload":"ho"}`, `{"payload":"hi","errors":["x"]}`, `nope`} {
		if CheckWhoami([]byte(bad), "hi") == nil {
			t.Errorf("%s passed", bad)
		}
	}
}

func TestBwrapArgs(t *testing.T) {
	l := HostLayout{Symlinks: [][2]string{{"usr/bin", "/bin"}}, Binds: []string{"/lib64"}}
	got := l.BwrapArgs("/usr/bin/true")
	want := []string{"--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
		"--ro-bind", "/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--", "/usr/bin/true"}
	if !slices.Equal(got, want) {
		t.Errorf("BwrapArgs = %q, want %q", got, want)
	}
	if _, err := ReadHostLayout(); err != nil {
		t.Error(err)
	}
}

func TestFormats(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Ms(1250 * time.Microsecond), "1.25 ms"},
		{MsP(1250*time.Microsecond, 1), "1.2 ms"},
		{Us(1250 * time.Microsecond), "1250 µs"},
		{Secs(1500 * time.Millisecond), "1.5 s"},
		{DRatio(3*time.Second, 2*time.Second), "1.50"},
		{DRatio(time.Second, 0), "–"},
		{MiB(3 << 20), "3.0 MiB"},
		{KiB(2048), "2 KiB"},
		{Plural(1, "round"), "round"},
		{Plural(0, "round"), "rounds"},
		{Pcts([]time.Duration{time.Millisecond, 3 * time.Millisecond}, 1), "2.0 ms / 3.0 ms / 3.0 ms"},
		{ModuleVersion("", "no/such/module"), "unknown"},
		{ModuleVersion("/no/such/binary", "x"), "unknown"},
		{ToolVersion("/no/such/tool"), "tool (version unknown)"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestMachine(t *testing.T) {
	m := Machine()
	if !strings.HasPrefix(m, "Kernel: ") || !strings.Contains(m, "; cgroup mode: ") ||
		!strings.Contains(m, fmt.Sprintf("; CPUs: %d", runtime.NumCPU())) {
		t.Errorf("Machine() = %q", m)
	}
}

func TestCPUModel(t *testing.T) {
	info := "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 85\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.00GHz\n\nprocessor\t: 1\nmodel name\t: other\n"
	if got, want := cpuModel(info), " (Intel(R) Xeon(R) CPU @ 2.00GHz)"; got != want {
		t.Errorf("cpuModel = %q, want %q", got, want)
	}
	// arm64 names no model.
	if got := cpuModel("processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n"); got != "" {
		t.Errorf("cpuModel without a model name = %q, want \"\"", got)
	}
}

func TestLoadAvg(t *testing.T) {
	if got, want := loadAvg("0.52 0.58 0.59 1/467 12345\n"), "0.52 0.58 0.59"; got != want {
		t.Errorf("loadAvg = %q, want %q", got, want)
	}
	if got := loadAvg("0.52 0.58\n"); got != "unknown" {
		t.Errorf("loadAvg of two fields = %q, want unknown", got)
	}
	if got := LoadAvg(); got == "" {
		t.Error("LoadAvg() is empty")
	}
}

func TestQuoteArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"-o", "my file.md", "-n", "5"}, "-o 'my file.md' -n 5"},
		{[]string{"-o", ""}, "-o ''"},
		{[]string{"-scenarios", "it's"}, `-scenarios 'it'\''s'`},
		{[]string{"-x", "$HOME"}, "-x '$HOME'"},
	} {
		if got := QuoteArgs(tc.args); got != tc.want {
			t.Errorf("QuoteArgs(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestCommand(t *testing.T) {
	const base = "go run ./bench/cmd/xbench"
	for _, tc := range []struct{ args, want string }{
		{"-o BENCHMARKS.md", "Command: `sudo make bench`, which runs `go run ./bench/cmd/xbench -o BENCHMARKS.md`"},
		{"", "Command: `go run ./bench/cmd/xbench`, as root"},
		{"-n 5", "Command: `go run ./bench/cmd/xbench -n 5`, as root"},
	} {
		if got := Command(base, tc.args); got != tc.want {
			t.Errorf("Command(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestFacts(t *testing.T) {
	f := Facts("go run ./bench/cmd/x", "-n 1")
	if !strings.HasPrefix(f, "- Command: `go run ./bench/cmd/x -n 1`, as root\n- Date: ") || !strings.Contains(f, "\n- Kernel: ") || !strings.HasSuffix(f, "\n") {
		t.Errorf("Facts = %q", f)
	}
}

func TestWriteSection(t *testing.T) {
	const markStart, markEnd = "<!-- testbench:start -->", "<!-- testbench:end -->"
	section := func(body string) string { return markStart + "\n" + body + "\n" + markEnd + "\n" }
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	read := func() string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	// Missing file: created with the intro.
	if err := WriteSection(path, markStart, markEnd, section("one")); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), intro+"\n"+section("one"); got != want {
		t.Fatalf("new file:\n%s\nwant:\n%s", got, want)
	}

	// Other sections around ours are kept; ours is replaced.
	other := "\n## Other benchmark\n\nkeep me\n"
	if err := os.WriteFile(path, []byte(read()+other), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteSection(path, markStart, markEnd, section("two")); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), intro+"\n"+section("two")+other; got != want {
		t.Fatalf("replaced:\n%s\nwant:\n%s", got, want)
	}

	// A file without our markers gets the section appended.
	if err := os.WriteFile(path, []byte("# Benchmarks\n\nhand written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteSection(path, markStart, markEnd, section("three")); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), "# Benchmarks\n\nhand written\n\n"+section("three"); got != want {
		t.Fatalf("appended:\n%s\nwant:\n%s", got, want)
	}

	// A lone marker is an error, and the file is left alone.
	broken := "# Benchmarks\n\n" + markStart + "\n"
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteSection(path, markStart, markEnd, section("four")); err == nil || !strings.Contains(err.Error(), "unmatched") {
		t.Fatalf("lone marker: err = %v", err)
	}
	if read() != broken {
		t.Fatal("lone marker: file changed")
	}
}

func TestStats(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var ds []time.Duration
		for _, n := range ns {
			ds = append(ds, time.Duration(n)*time.Millisecond)
		}
		return ds
	}
	odd, even := ms(5, 1, 3, 2, 4), ms(4, 1, 3, 2)
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{
		{"empty percentile", Percentile(nil, 90), 0},
		{"empty median", Median(nil), 0},
		{"empty mean", Mean(nil), 0},
		{"odd median", Median(odd), 3 * time.Millisecond},
		{"even median", Median(even), 2500 * time.Microsecond},
		{"p90 nearest rank", Percentile(odd, 90), 5 * time.Millisecond},
		{"p40 nearest rank", Percentile(odd, 40), 2 * time.Millisecond},
		{"p1 is the smallest", Percentile(odd, 1), 1 * time.Millisecond},
		{"p100 is the largest", Percentile(even, 100), 4 * time.Millisecond},
		{"mean", Mean(even), 2500 * time.Microsecond},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
	if odd[0] != 5*time.Millisecond {
		t.Errorf("Percentile sorted its argument: %v", odd)
	}
}

func TestRoundRobin(t *testing.T) {
	var order []string
	vs := []Variant{{"a", nil}, {"b", nil}}
	for i := range vs {
		name := vs[i].Name
		vs[i].Run = func(_ context.Context, rec func(string, time.Duration)) error {
			order = append(order, name)
			rec(name, time.Duration(len(order)))
			return nil
		}
	}
	res, err := RoundRobin(context.Background(), "", 1, 2, 0, vs, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, ""); got != "abbaab" {
		t.Errorf("order %s, want abbaab", got)
	}
	// The warm-up round (1, 2) is left out.
	if !slices.Equal(res["a"], []time.Duration{4, 5}) || !slices.Equal(res["b"], []time.Duration{3, 6}) {
		t.Errorf("series %v", res)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := RoundRobin(ctx, "", 0, 1, 0, vs, t.Logf); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestReportOutput(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	a, b := NewReport("a", "## A"), NewReport("b", "## B")
	a.P("x %d\n", 1)
	if got, want := a.End(), "<!-- a:start -->\n## A\n\nx 1\n<!-- a:end -->\n"; got != want {
		t.Fatalf("report %q, want %q", got, want)
	}
	if err := Output(path, t.Logf, a.String(), b.End()); err != nil {
		t.Fatal(err)
	}
	a2 := NewReport("a", "## A2")
	if err := Output(path, t.Logf, a2.End()); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if want := intro + "\n" + a2.String() + "\n" + b.String(); string(got) != want {
		t.Errorf("file:\n%s\nwant:\n%s", got, want)
	}
}

func TestParallel(t *testing.T) {
	var sum atomic.Int64
	if err := Parallel(context.Background(), 3, 100, func(_ context.Context, i int) error { sum.Add(int64(i)); return nil }); err != nil || sum.Load() != 4950 {
		t.Errorf("Parallel: sum %d, %v", sum.Load(), err)
	}
	boom := errors.New("boom")
	err := Parallel(context.Background(), 2, 1000, func(ctx context.Context, i int) error {
		if i == 5 {
			return boom
		}
		return ctx.Err()
	})
	if !errors.Is(err, boom) {
		t.Errorf("Parallel failing: %v", err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	var wg sync.WaitGroup
	var calls atomic.Int64
	Keep(ctx, cancel, &wg, 2, func(context.Context) error {
		if calls.Add(1) == 10 {
			return boom
		}
		return nil
	})
	wg.Wait()
	if !errors.Is(context.Cause(ctx), boom) {
		t.Errorf("Keep: cause %v", context.Cause(ctx))
	}
}

func TestProc(t *testing.T) {
	if !ProcAlive(os.Getpid()) || ProcAlive(1<<30) {
		t.Error("ProcAlive")
	}
	for deadline := time.Now().Add(5 * time.Second); ProcCPU(os.Getpid()) == 0 && time.Now().Before(deadline); { // burn a clock tick
	}
	if c, s := ProcCPU(os.Getpid()), SelfCPU(false); c <= 0 || s <= 0 || ProcCPU(1<<30) != 0 {
		t.Errorf("ProcCPU %v, SelfCPU %v", c, s)
	}
}

func TestKitPrebuilt(t *testing.T) {
	pre := t.TempDir()
	t.Setenv(PrebuiltEnv, pre)
	if _, err := NewKit("scoped-bench-kittest", t.Logf); err == nil || !strings.Contains(err.Error(), PrebuiltEnv) {
		t.Fatalf("NewKit without the prebuilt daemon: %v", err)
	}
	files := map[string]string{"scoped": "daemon", "scoped-exec": "exec", "bundles/spin/manifest.toml": "name = \"spin\"\n", "bundles/spin/spin": "worker"}
	for f, content := range files {
		p := filepath.Join(pre, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	k, err := NewKit("scoped-bench-kittest", t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if k.Scoped != filepath.Join(pre, "scoped") || k.Bin != pre {
		t.Errorf("daemon %s in %s, want the prebuilt one in %s", k.Scoped, k.Bin, pre)
	}
	b, err := k.Bundle("./examples/spin") // read as it is, not built
	if err != nil {
		t.Fatal(err)
	}
	if fs := b.GetFiles(); len(fs) != 2 || string(fs[0].GetContent()) != files["bundles/spin/manifest.toml"] || string(fs[1].GetContent()) != "worker" {
		t.Errorf("bundle %v", fs)
	}
	if _, err := k.Bundle("./examples/whoami"); err == nil {
		t.Error("a bundle missing from the prebuilt directory: no error")
	}
	if err := k.Close(); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(pre, "scoped")); err != nil {
		t.Errorf("Close removed the prebuilt binaries: %v", err)
	}
}
