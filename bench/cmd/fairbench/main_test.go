package main

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

type floatCase struct {
	xs   []float64
	want float64
}

func TestGoals(t *testing.T) {
	for _, c := range []floatCase{{[]float64{1, 1, 1, 1}, 1}, {[]float64{1, 0, 0, 0}, 0.25}, {[]float64{2, 1}, 0.9}, {[]float64{0, 0}, 0}} {
		if got := jain(c.xs); !near(got, c.want) {
			t.Errorf("jain(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
	for _, c := range []struct {
		j, dev float64
		want   bool
	}{{1, 0, true}, {0.99, 0.05, true}, {0.9899, 0, false}, {1, 0.0501, false}} {
		if got := meetsGoals(c.j, c.dev); got != c.want {
			t.Errorf("meetsGoals(%v, %v) = %v", c.j, c.dev, got)
		}
	}
	// 30/20/25/25 % against 25 % each: 5 points off, on the line.
	if j, dev := judge([]float64{0.30, 0.20, 0.25, 0.25}, []float64{0.25, 0.25, 0.25, 0.25}); !near(dev, 0.05) || !near(j, jain([]float64{1.2, 0.8, 1, 1})) {
		t.Errorf("judge: %v %v", j, dev)
	}
	for _, c := range []floatCase{{nil, 0}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.xs); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
}

// mkRun is a computed run of tenants with weights w that used cpu[k][i] in
// slice k (the window is the sum of the slices).
func mkRun(n int, w []float64, cpu [][]time.Duration) *result {
	r := &result{run: n, perSlice: cpu}
	for i := range w {
		tr := tenantResult{spec: tenantSpec{weight: w[i], scopes: 1}}
		for _, row := range cpu {
			tr.cpu += row[i]
		}
		r.ten = append(r.ten, tr)
	}
	r.compute()
	return r
}

func TestSlices(t *testing.T) {
	r := mkRun(1, []float64{100, 200, 400}, [][]time.Duration{{1, 2, 4}})
	for i, want := range []float64{1.0 / 7, 2.0 / 7, 4.0 / 7} {
		if !near(r.ten[i].share, want) || !near(r.ten[i].entitled, want) {
			t.Errorf("tenant %d: share %v, entitled %v, want %v", i, r.ten[i].share, r.ten[i].entitled, want)
		}
	}
	// One slice only: nothing after the first, the window alone decides.
	if _, _, ok := r.worstSlice(); ok || !near(r.jain, 1) || !r.meets() {
		t.Errorf("one slice: worst slice ok %v, Jain %v, meets %v", ok, r.jain, r.meets())
	}
	// The first slice starves tenant 1; the others are even: the run
	// meets the goals, and the spread ignores the first slice.
	r = mkRun(2, []float64{100, 100}, [][]time.Duration{{10, 0}, {50, 50}, {51, 49}, {49, 51}})
	if len(r.slices) != 4 || r.slices[0] != (sliceStat{0.5, 0.5}) {
		t.Fatalf("slices %v", r.slices)
	}
	if j, dev, ok := r.worstSlice(); !ok || !near(j, jain([]float64{1.02, 0.98})) || !near(dev, 0.01) {
		t.Errorf("worst slice %v %v %v, want Jain of 1.02/0.98 and 0.01", j, dev, ok)
	}
	if tr := r.ten[1]; !near(tr.sliceLo, 0.49) || !near(tr.sliceHi, 0.51) {
		t.Errorf("tenant 1: slices %v..%v, want 0.49..0.51", tr.sliceLo, tr.sliceHi)
	}
	if want := 160.0/310 - 0.5; !near(r.dev, want) || !r.meets() {
		t.Errorf("window deviation %v (want %v), meets %v", r.dev, want, r.meets())
	}
	// A later slice 6 points off misses, however good the window.
	r = mkRun(3, []float64{100, 100}, [][]time.Duration{{50, 50}, {56, 44}, {44, 56}})
	if _, dev, _ := r.worstSlice(); !near(dev, 0.06) || r.dev > 1e-12 || r.meets() {
		t.Errorf("worst slice deviation %v (want 0.06), window %v, meets %v", dev, r.dev, r.meets())
	}
	// A slice in which nobody ran: Jain 0, a miss.
	if r = mkRun(4, []float64{100, 100}, [][]time.Duration{{1, 1}, {0, 0}}); r.meets() {
		t.Errorf("run with an empty slice meets the goals: %v", r.slices)
	}
}

func TestScenarioRunsStats(t *testing.T) {
	w := []float64{100, 100}
	sr := &scenarioRuns{sc: scenarios[2], runs: []*result{
		mkRun(1, w, [][]time.Duration{{50, 50}, {50, 50}, {50, 50}}), // perfect
		mkRun(2, w, [][]time.Duration{{90, 10}, {52, 48}, {77, 23}}), // a slice 27 points off
		mkRun(3, w, [][]time.Duration{{50, 50}, {53, 47}, {50, 50}}), // 3 points off in a slice
		mkRun(4, w, [][]time.Duration{{50, 50}, {60, 40}, {40, 60}}), // even window, 10 points off in slices
		mkRun(5, w, [][]time.Duration{{40, 60}, {49, 51}, {50, 50}}), // only the first slice off
	}}
	dev, sj, sdev, ok, passed := sr.stats()
	if passed != 3 || !ok || !near(sdev, 0.27) || sj != sr.runs[1].slices[2].jain || dev != sr.runs[1].dev {
		t.Errorf("stats: dev %v, slice %v / %v, ok %v, passed %d; want run 2's and 3 passed", dev, sj, sdev, ok, passed)
	}
	// By window Jain: run 2, 5, 3, then 1 and 4 (perfect).
	if m := medianBy(sr.runs, func(r *result) float64 { return r.jain }); m.run != 3 {
		t.Errorf("median run %d, want 3", m.run)
	}
	if m := medianBy(sr.runs[:2], func(r *result) float64 { return r.jain }); m.run != 2 {
		t.Errorf("of two runs the median run is %d, want the lower one (2)", m.run)
	}
}

func TestNoisyGoal(t *testing.T) {
	ms := func(d ...int) (out []time.Duration) {
		for _, x := range d {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	mk := func(rep int, alone, on int) *noisyResult {
		r := &noisyResult{rep: rep}
		for _, p := range noisyPhases {
			ph := &phaseResult{ph: p, lat: ms(2, 3, 10)}
			if p.ant == nil {
				ph.lat = ms(2, alone)
			} else if p.ant == antCPU && p.control {
				ph.lat = ms(2, on)
			}
			r.phases = append(r.phases, ph)
		}
		return r
	}
	rs := []*noisyResult{mk(1, 10, 20), mk(2, 10, 15), mk(3, 10, 12)}
	if x := rs[0].p99Ratio(antCPU, true); !near(x, 2) {
		t.Errorf("ratio %v, want 2", x)
	}
	if rs[0].meetsNoisyGoal() || !rs[1].meetsNoisyGoal() || !rs[2].meetsNoisyGoal() || (&noisyResult{}).meetsNoisyGoal() {
		t.Error("goal: want 2.0 and no phases a miss, 1.5 and 1.2 met")
	}
	b := &bench{o: options{duration: 2 * time.Second, settle: 4 * time.Second, noisyRepeat: 3}}
	w := &benchmd.Report{}
	b.reportNoisy(w, rs)
	for _, want := range []string{"| 1 | 10.0 ms | 10.0 ms (1.00) | 20.0 ms (2.00) |", "1.20 / 1.50 / 2.00 against the goal ≤ 1.5×: **MISS**. Repeat 2 in detail"} {
		if !strings.Contains(w.String(), want) {
			t.Errorf("noisy report lacks %q:\n%s", want, w.String())
		}
	}
	evs := []*scopedv1.Event{{Kind: "detected"}, {Kind: "capped", Level: 2}, {Kind: "stepped_up", Level: 1}, {Kind: "capped", Level: 2}}
	if got, want := eventKinds(evs), "detected (level 0), 2× capped (level 2), stepped_up (level 1)"; got != want {
		t.Errorf("eventKinds = %q, want %q", got, want)
	}
}

func TestLabels(t *testing.T) {
	for w, want := range map[where]string{{kernel: "6.18.4"}: "", {vm: true, kernel: "6.1.0-41-amd64"}: "vm-6.1",
		{vm: true, tcg: true, kernel: "6.12.48+deb12-amd64"}: "vm-6.12", {vm: true, kernel: "weird"}: "vm-weird"} {
		if got := autoLabel(w); got != want {
			t.Errorf("autoLabel(%v) = %q, want %q", w, got, want)
		}
	}
	for l, ok := range map[string]bool{"": true, "vm-6.12": true, "host2": true, "-x": false, "VM": false, "a b": false, "vm-6.1:end": false} {
		if validLabel(l) != ok {
			t.Errorf("validLabel(%q) = %v", l, !ok)
		}
	}
	if !emulated("processor\t: 0\nmodel name\t: QEMU TCG CPU version 2.5+\n") || emulated("model name\t: AMD EPYC\nflags: hypervisor\n") || emulated("") {
		t.Error("emulated: want TCG only from the model name")
	}
}

func TestSectionsSideBySide(t *testing.T) {
	md := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	if err := os.WriteFile(md, []byte("# Benchmarks\n\n<!-- fairbench:start -->\nhost 1\n<!-- fairbench:end -->\n\n<!-- ledgerbench:start -->\nledger\n<!-- ledgerbench:end -->\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vm := func(label, body string) string {
		m := sectionMark(label)
		return "<!-- " + m + ":start -->\n" + body + "\n<!-- " + m + ":end -->\n"
	}
	write := func(label, section string) {
		t.Helper()
		if err := placeSection(md, sectionMark(label)); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(section, "\n"), "\n")
		if err := benchmd.WriteSection(md, lines[0], lines[len(lines)-1], section); err != nil {
			t.Fatal(err)
		}
	}
	// A VM run's file as fairbench -o writes it, merged.
	vmFile := filepath.Join(t.TempDir(), "fairbench-6.1.md")
	if err := os.WriteFile(vmFile, []byte("# Benchmarks\n\nintro\n\n"+vm("vm-6.1", "six one")), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := merge(vmFile, md)
	if err != nil || len(got) != 1 || got[0] != vm("vm-6.1", "six one") {
		t.Fatalf("merge: %q, %v", got, err)
	}
	write("vm-6.1", got[0])
	write("vm-6.12", vm("vm-6.12", "six twelve"))
	write("", "<!-- fairbench:start -->\nhost 2\n<!-- fairbench:end -->\n") // a later host run
	write("vm-6.1", vm("vm-6.1", "six one again"))
	b, err := os.ReadFile(md)
	want := "# Benchmarks\n\n<!-- fairbench:start -->\nhost 2\n<!-- fairbench:end -->\n\n" + vm("vm-6.1", "six one again") + "\n" +
		vm("vm-6.12", "six twelve") + "\n<!-- ledgerbench:start -->\nledger\n<!-- ledgerbench:end -->\n"
	if err != nil || string(b) != want {
		t.Errorf("BENCHMARKS.md (%v):\n%s\nwant:\n%s", err, b, want)
	}
	// Bad input: no labelled section, mismatched markers, no file.
	for _, doc := range []string{"<!-- fairbench:start -->\nx\n<!-- fairbench:end -->\n", "<!-- fairbench-vm-6.1:start -->\nx\n<!-- fairbench-vm-6.12:end -->\n"} {
		if err := os.WriteFile(vmFile, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := merge(vmFile, md); err == nil {
			t.Errorf("merge of %q: no error", doc)
		}
	}
	if _, err := merge(filepath.Join(t.TempDir(), "missing.md"), md); err == nil {
		t.Error("merge of a missing file: no error")
	}
	if b2, _ := os.ReadFile(md); string(b2) != want {
		t.Errorf("a failed merge changed BENCHMARKS.md:\n%s", b2)
	}
}

func TestReportLabelled(t *testing.T) {
	b := &bench{o: options{duration: 6 * time.Second, settle: 4 * time.Second, repeat: 2, noisyRepeat: 1, spinners: 2, control: true,
		label: "vm-6.12", where: where{vm: true, tcg: true, kernel: "6.12.48+deb12-amd64"}}, kit: &benchmd.Kit{LoadAvg: "0.1 0.2 0.3"}}
	sc := scenarios[2]
	mk := func(n int, cpu [][]time.Duration) *result {
		r := mkRun(n, []float64{100, 100}, cpu)
		r.window = 6 * time.Second
		for i := range r.ten {
			r.ten[i].spec = sc.ten[i]
		}
		return r
	}
	sr := &scenarioRuns{sc: sc, runs: []*result{mk(1, [][]time.Duration{{5, 5}, {5, 5}, {5, 5}}), mk(2, [][]time.Duration{{5, 5}, {8, 2}, {5, 5}})}}
	out := b.report("-repeat 2", []*scenarioRuns{sr}, nil)
	for _, want := range []string{
		"<!-- fairbench-vm-6.12:start -->\n## Fair shares between tenants (issues 5, 16): VM, kernel 6.12.48+deb12-amd64 (TCG emulation)\n",
		"software emulation: the figures are for the split", "run on the host only", "`sudo make bench-v2`", "| 1 of 2 | **MISS** |",
		"| 2 | 0.9615 | 10.0 points | 0.7353 | 30.0 points | MISS |", "| many | standard | 8 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if !strings.HasSuffix(out, "<!-- fairbench-vm-6.12:end -->\n") {
		t.Errorf("report does not end with its marker:\n%s", out)
	}
	b.o.label, b.o.where = "", where{kernel: "6.18.4"}
	if out := b.report("", []*scenarioRuns{sr}, nil); !strings.HasPrefix(out, "<!-- fairbench:start -->\n## Fair shares between tenants (issues 5, 16): host, kernel 6.18.4\n") ||
		strings.Contains(out, "emulation") {
		t.Errorf("host report:\n%s", out)
	}
}

func TestForkstorm(t *testing.T) {
	b, err := forkstormBundle()
	if err != nil || len(b.GetFiles()) != 2 || !strings.Contains(string(b.GetFiles()[0].GetContent()), `entrypoint = "forkstorm.sh"`) || b.GetFiles()[1].GetMode() != 0o755 {
		t.Fatalf("bundle %v, %v", b, err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for payload, want := range map[string]string{"3": "3", "1": "1", "x": ""} {
		cmd := exec.Command(sh, "forkstorm/forkstorm.sh")
		cmd.Stdin = strings.NewReader(payload)
		out, err := cmd.Output()
		if (err != nil) != (want == "") || strings.TrimSpace(string(out)) != want {
			t.Errorf("payload %q: %q, %v; want %q", payload, out, err, want)
		}
	}
}
