package main

import (
	"math"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

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

func TestSliceShares(t *testing.T) {
	r := &result{ten: make([]tenantResult, 2)}
	r.sliceShares([][]time.Duration{{1, 1}, {3, 1}, {1, 3}})
	for i, tr := range r.ten {
		if tr.sliceLo != 0.25 || tr.sliceHi != 0.75 {
			t.Errorf("tenant %d: slices %v..%v, want 0.25..0.75", i, tr.sliceLo, tr.sliceHi)
		}
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
