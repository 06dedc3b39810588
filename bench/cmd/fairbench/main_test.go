package main

import (
	"math"
	"testing"
	"time"
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
	if d := maxDeviation(r.ten); d > 1e-12 {
		t.Errorf("maxDeviation = %v, want 0", d)
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
