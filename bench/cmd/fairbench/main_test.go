package main

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

func TestJain(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{
		{[]float64{1, 1, 1, 1}, 1},
		{[]float64{1, 0, 0, 0}, 0.25},
		{[]float64{2, 1}, 0.9},
		{nil, 0},
		{[]float64{0, 0}, 0},
	} {
		if got := jain(c.xs); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("jain(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
}

func TestCompute(t *testing.T) {
	r := &result{ten: []tenantResult{
		{spec: tenantSpec{weight: 100}, cpu: 1 * time.Second},
		{spec: tenantSpec{weight: 200}, cpu: 2 * time.Second},
		{spec: tenantSpec{weight: 400}, cpu: 4 * time.Second},
	}}
	r.compute()
	for i, want := range []float64{1.0 / 7, 2.0 / 7, 4.0 / 7} {
		if got := r.ten[i].share; math.Abs(got-want) > 1e-12 {
			t.Errorf("share %d = %v, want %v", i, got, want)
		}
		if got := r.ten[i].entitled; math.Abs(got-want) > 1e-12 {
			t.Errorf("entitled %d = %v, want %v", i, got, want)
		}
	}
	if math.Abs(r.jain-1) > 1e-12 {
		t.Errorf("jain = %v, want 1", r.jain)
	}
}

func TestScenarios(t *testing.T) {
	for _, name := range []string{"equal", "tiers", "scopes"} {
		s := scenarioByName(name)
		if s == nil || len(s.ten) == 0 {
			t.Fatalf("scenario %s missing", name)
		}
		for _, ten := range s.ten {
			if ten.weight <= 0 || len(ten.envs) == 0 {
				t.Errorf("scenario %s tenant %s: weight %v, %d envs", name, ten.name, ten.weight, len(ten.envs))
			}
		}
	}
	if scenarioByName("nope") != nil {
		t.Error("unknown scenario accepted")
	}
	if n := len(scenarioByName("scopes").ten[0].envs); n != 8 {
		t.Errorf("many has %d scopes, want 8", n)
	}
}

// mkRun is a result of tenants with weights w that used cpu[k][i] in slice
// k (the window is the sum of the slices), computed.
func mkRun(n int, w []float64, cpu [][]time.Duration) *result {
	r := &result{run: n, perSlice: cpu}
	for i := range w {
		tr := tenantResult{spec: tenantSpec{weight: w[i]}}
		for _, row := range cpu {
			tr.cpu += row[i]
		}
		r.ten = append(r.ten, tr)
	}
	r.compute()
	return r
}

func TestSlicesFirstExcluded(t *testing.T) {
	// The first slice starves tenant 1; the others are even: the run
	// meets the goals, and the spread ignores the first slice.
	r := mkRun(1, []float64{100, 100}, [][]time.Duration{{10, 0}, {50, 50}, {51, 49}, {49, 51}})
	if len(r.slices) != 4 || r.slices[0].jain != 0.5 || r.slices[0].dev != 0.5 {
		t.Fatalf("slices %v", r.slices)
	}
	j, dev, ok := r.worstSlice()
	if !ok || math.Abs(j-jain([]float64{1.02, 0.98})) > 1e-12 || math.Abs(dev-0.01) > 1e-12 {
		t.Errorf("worst slice %v %v %v, want Jain of 1.02/0.98 and 0.01", j, dev, ok)
	}
	if tr := r.ten[1]; math.Abs(tr.sliceLo-0.49) > 1e-12 || math.Abs(tr.sliceHi-0.51) > 1e-12 {
		t.Errorf("tenant 1: slices %v..%v, want 0.49..0.51", tr.sliceLo, tr.sliceHi)
	}
	// Over the window: 160/150 against 150/310... the window deviation.
	if want := math.Abs(160.0/310 - 0.5); math.Abs(r.dev-want) > 1e-12 {
		t.Errorf("window deviation %v, want %v", r.dev, want)
	}
	if !r.meets() {
		t.Errorf("run with only the first slice off: MISS (window Jain %v, dev %v)", r.jain, r.dev)
	}
	// A later slice 6 points off misses, however good the window.
	r = mkRun(2, []float64{100, 100}, [][]time.Duration{{50, 50}, {56, 44}, {44, 56}})
	if _, dev, _ := r.worstSlice(); math.Abs(dev-0.06) > 1e-12 {
		t.Errorf("worst slice deviation %v, want 0.06", dev)
	}
	if r.dev > 1e-12 || r.jain < 1-1e-12 {
		t.Errorf("window: Jain %v, deviation %v; want 1, 0", r.jain, r.dev)
	}
	if r.meets() {
		t.Error("run with a slice 6 points off meets the goals")
	}
	// A starved slice (nobody ran): Jain 0, a miss.
	if r = mkRun(3, []float64{100, 100}, [][]time.Duration{{1, 1}, {0, 0}}); r.meets() {
		t.Errorf("run with an empty slice meets the goals: %v", r.slices)
	}
	// One slice only: nothing after the first, the window alone decides.
	r = mkRun(4, []float64{100, 200}, [][]time.Duration{{1, 2}})
	if _, _, ok := r.worstSlice(); ok || len(r.counted()) != 0 || !r.meets() {
		t.Errorf("one slice: worst slice ok %v, counted %d, meets %v", ok, len(r.counted()), r.meets())
	}
}

func TestMeetsGoals(t *testing.T) {
	for _, c := range []struct {
		j, dev float64
		want   bool
	}{
		{1, 0, true}, {0.99, 0.05, true}, {0.9899, 0, false}, {1, 0.0501, false}, {0.995, 0.03, true},
	} {
		if got := meetsGoals(c.j, c.dev); got != c.want {
			t.Errorf("meetsGoals(%v, %v) = %v, want %v", c.j, c.dev, got, c.want)
		}
	}
	// 25 %/25 %/25 %/25 % against 30/20/25/25: 5 points off, on the line.
	j, dev := judge([]float64{0.30, 0.20, 0.25, 0.25}, []float64{0.25, 0.25, 0.25, 0.25})
	if math.Abs(dev-0.05) > 1e-12 || math.Abs(j-jain([]float64{1.2, 0.8, 1, 1})) > 1e-12 {
		t.Errorf("judge: %v %v", j, dev)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{
		{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{0.9, 0.99, 0.95, 0.97, 0.5}, 0.95},
	} {
		if got := median(c.xs); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("median(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
}

func TestScenarioRunsStats(t *testing.T) {
	w := []float64{100, 100}
	sr := &scenarioRuns{sc: scenarioByName("scopes"), runs: []*result{
		mkRun(1, w, [][]time.Duration{{50, 50}, {50, 50}, {50, 50}}), // perfect
		mkRun(2, w, [][]time.Duration{{90, 10}, {52, 48}, {77, 23}}), // a slice 27 points off
		mkRun(3, w, [][]time.Duration{{50, 50}, {53, 47}, {50, 50}}), // 3 points off in a slice
		mkRun(4, w, [][]time.Duration{{50, 50}, {60, 40}, {40, 60}}), // even window, 10 points off in slices
		mkRun(5, w, [][]time.Duration{{40, 60}, {49, 51}, {50, 50}}), // only the first slice off
	}}
	js := sr.jains()
	if len(js) != 5 || slices.Max(js) != 1 {
		t.Fatalf("jains %v", js)
	}
	st := sr.stats()
	if st.passed != 3 || !st.ok {
		t.Errorf("passed %d, ok %v; want 3 (runs 1, 3 and 5)", st.passed, st.ok)
	}
	if st.jRun != 2 || st.devRun != 2 || math.Abs(st.sliceDev-0.27) > 1e-12 {
		t.Errorf("worst slice: Jain in run %d, deviation %v in run %d; want run 2, 0.27", st.jRun, st.sliceDev, st.devRun)
	}
	if want := sr.runs[1].dev; st.dev != want || want < 0.1 {
		t.Errorf("largest window deviation %v, want run 2's %v", st.dev, want)
	}
	// The median run by window Jain: runs 1 and 4 are perfect over the
	// window, 2 is the worst; 3 and 5 in between.
	if m := sr.medianRun(); m.jain != median(js) {
		t.Errorf("median run %d has Jain %v, median %v", m.run, m.jain, median(js))
	}
	sr.runs = sr.runs[:2]
	if m := sr.medianRun(); m.run != 2 {
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
			switch {
			case p.ant == antNone:
				ph.lat = ms(2, alone)
			case p.ant == antCPU && p.control:
				ph.lat = ms(2, on)
			}
			r.phases = append(r.phases, ph)
		}
		return r
	}
	rs := []*noisyResult{mk(1, 10, 20), mk(2, 10, 15), mk(3, 10, 12)}
	if x := rs[0].p99Ratio(antCPU, true); math.Abs(x-2) > 1e-12 {
		t.Errorf("ratio %v, want 2", x)
	}
	if rs[0].meetsNoisyGoal() || !rs[1].meetsNoisyGoal() || !rs[2].meetsNoisyGoal() {
		t.Error("goal: want 2.0 a miss, 1.5 and 1.2 met")
	}
	if m := medianNoisy(rs); m.rep != 2 {
		t.Errorf("median repeat %d, want 2", m.rep)
	}
	if (&noisyResult{}).meetsNoisyGoal() {
		t.Error("no phases meets the goal")
	}
	b := &bench{o: options{duration: 2 * time.Second, settle: 4 * time.Second, noisyRepeat: 3, noisySpin: 4}}
	w := &benchmd.Report{}
	b.reportNoisy(w, rs)
	for _, want := range []string{"| 1 | 10.0 ms | 10.0 ms (1.00) | 20.0 ms (2.00) |", "1.20 / 1.50 / 2.00 against the goal ≤ 1.5×: **MISS**. Repeat 2 in detail"} {
		if !strings.Contains(w.String(), want) {
			t.Errorf("noisy report lacks %q:\n%s", want, w.String())
		}
	}
}

func TestLabels(t *testing.T) {
	for rel, want := range map[string]string{"6.1.0-41-amd64": "6.1", "6.12.48+deb12-amd64": "6.12", "7.2": "7.2", "weird": "weird"} {
		if got := majorMinor(rel); got != want {
			t.Errorf("majorMinor(%q) = %q, want %q", rel, got, want)
		}
	}
	if l := autoLabel(where{kernel: "6.18.4"}); l != "" {
		t.Errorf("host label %q, want none", l)
	}
	if l := autoLabel(where{vm: true, tcg: true, kernel: "6.12.48+deb12-amd64"}); l != "vm-6.12" {
		t.Errorf("VM label %q, want vm-6.12", l)
	}
	for l, ok := range map[string]bool{"": true, "vm-6.12": true, "host2": true, "-x": false, "VM": false, "a b": false, "a/b": false, "vm-6.1:end": false} {
		if validLabel(l) != ok {
			t.Errorf("validLabel(%q) = %v", l, !ok)
		}
	}
	if sectionMark("") != "fairbench" || sectionMark("vm-6.1") != "fairbench-vm-6.1" {
		t.Errorf("marks %q %q", sectionMark(""), sectionMark("vm-6.1"))
	}
	if !emulated("processor\t: 0\nmodel name\t: QEMU TCG CPU version 2.5+\n") || emulated("model name\t: AMD EPYC\nflags: hypervisor\n") || emulated("") {
		t.Error("emulated: want TCG only from the model name")
	}
}

func TestSectionsSideBySide(t *testing.T) {
	md := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	host := "<!-- fairbench:start -->\nhost 1\n<!-- fairbench:end -->\n"
	if err := os.WriteFile(md, []byte("# Benchmarks\n\n"+host+"\n<!-- ledgerbench:start -->\nledger\n<!-- ledgerbench:end -->\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vm := func(label, body string) string {
		m := sectionMark(label)
		return "<!-- " + m + ":start -->\n" + body + "\n<!-- " + m + ":end -->\n"
	}
	write := func(label, section string) {
		t.Helper()
		if label != "" {
			if err := placeSection(md, sectionMark(label)); err != nil {
				t.Fatal(err)
			}
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
	if err != nil {
		t.Fatal(err)
	}
	want := "# Benchmarks\n\n<!-- fairbench:start -->\nhost 2\n<!-- fairbench:end -->\n\n" + vm("vm-6.1", "six one again") + "\n" +
		vm("vm-6.12", "six twelve") + "\n<!-- ledgerbench:start -->\nledger\n<!-- ledgerbench:end -->\n"
	if string(b) != want {
		t.Errorf("BENCHMARKS.md:\n%s\nwant:\n%s", b, want)
	}
	// Bad input: no labelled section, mismatched markers, no file.
	for name, doc := range map[string]string{
		"none":     host,
		"mismatch": "<!-- fairbench-vm-6.1:start -->\nx\n<!-- fairbench-vm-6.12:end -->\n",
	} {
		if _, err := labelled(doc); err == nil {
			t.Errorf("%s: labelled accepted %q", name, doc)
		}
	}
	if _, err := merge(filepath.Join(t.TempDir(), "missing.md"), md); err == nil {
		t.Error("merge of a missing file: no error")
	}
}

func TestReportLabelled(t *testing.T) {
	w := []float64{100, 100}
	b := &bench{o: options{duration: 6 * time.Second, settle: 4 * time.Second, repeat: 2, noisyRepeat: 1, spinners: 2, noisySpin: 4, control: true,
		label: "vm-6.12", where: where{vm: true, tcg: true, kernel: "6.12.48+deb12-amd64"}}, kit: &benchmd.Kit{LoadAvg: "0.1 0.2 0.3"}}
	sc := scenarioByName("scopes")
	mk := func(n int, cpu [][]time.Duration) *result {
		r := mkRun(n, w, cpu)
		r.sc, r.window = sc, 6*time.Second
		for i := range r.ten {
			r.ten[i].spec = sc.ten[i]
		}
		return r
	}
	sr := &scenarioRuns{sc: sc, runs: []*result{mk(1, [][]time.Duration{{5, 5}, {5, 5}, {5, 5}}), mk(2, [][]time.Duration{{5, 5}, {8, 2}, {5, 5}})}}
	out := b.report("-repeat 2", []*scenarioRuns{sr}, nil)
	for _, want := range []string{
		"<!-- fairbench-vm-6.12:start -->\n## Fair shares between tenants (issues 5, 16): VM, kernel 6.12.48+deb12-amd64 (TCG emulation)\n",
		"software emulation: the figures are for the split", "run on the host only", "`sudo make bench-v2`", "| 1 of 2 | **MISS** |", "| 2 | 0.9615 | 10.0 points | 0.7353 | 30.0 points | MISS |",
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

func TestNoisyPhases(t *testing.T) {
	if !slices.Contains(allScenarios, noisyName) || allScenarios[len(allScenarios)-1] != noisyName {
		t.Errorf("scenarios %v: want %s last", allScenarios, noisyName)
	}
	if scenarioByName(noisyName) != nil {
		t.Errorf("%s is not a fair-share scenario", noisyName)
	}
	if p := noisyPhases[0]; p.ant != antNone {
		t.Errorf("first phase %s has an antagonist", p.name)
	}
	for _, ant := range []antagonist{antCPU, antFork} {
		r := &noisyResult{}
		for _, p := range noisyPhases {
			r.phases = append(r.phases, &phaseResult{ph: p})
		}
		if r.find(ant, false) == nil || r.find(ant, true) == nil {
			t.Errorf("antagonist %d: want a phase with the controller off and one with it on", ant)
		}
	}
}

func TestForkstormBundle(t *testing.T) {
	b, err := forkstormBundle()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, f := range b.GetFiles() {
		files[f.GetPath()] = string(f.GetContent())
	}
	if m := files["manifest.toml"]; !strings.Contains(m, `runtime = "exec"`) || !strings.Contains(m, `entrypoint = "forkstorm.sh"`) {
		t.Errorf("manifest:\n%s", m)
	}
	if sh := files["forkstorm.sh"]; !strings.HasPrefix(sh, "#!/bin/sh\n") {
		t.Errorf("forkstorm.sh does not start with #!/bin/sh")
	}
}

func TestForkstormScript(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, c := range []struct {
		payload, want string
		fail          bool
	}{{"3", "3", false}, {"1", "1", false}, {"x", "", true}} {
		cmd := exec.Command(sh, "forkstorm/forkstorm.sh")
		cmd.Stdin = strings.NewReader(c.payload)
		out, err := cmd.Output()
		if c.fail {
			if err == nil {
				t.Errorf("payload %q: no error, output %q", c.payload, out)
			}
			continue
		}
		if err != nil || strings.TrimSpace(string(out)) != c.want {
			t.Errorf("payload %q: %q, %v; want %q", c.payload, out, err, c.want)
		}
	}
}

func TestEventKinds(t *testing.T) {
	evs := []*scopedv1.Event{
		{Kind: "detected", Level: 0}, {Kind: "stepped_down", Level: 1},
		{Kind: "capped", Level: 2}, {Kind: "stepped_up", Level: 1}, {Kind: "capped", Level: 2},
	}
	want := "detected (level 0), stepped_down (level 1), 2× capped (level 2), stepped_up (level 1)"
	if got := eventKinds(evs); got != want {
		t.Errorf("eventKinds = %q, want %q", got, want)
	}
}
