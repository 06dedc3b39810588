package supervisor

import (
	"math"
	"testing"
	"time"

	"github.com/scoped-io/scoped/metering"
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
		"window 7s":        {Enabled: true, Window: Duration{7 * time.Second}, Flush: Duration{time.Second}},
		"retention 1h":     {Enabled: true, Window: Duration{time.Minute}, Flush: Duration{time.Second}, Retention: Duration{time.Hour}},
		"flush > window":   {Enabled: true, Window: Duration{time.Minute}, Flush: Duration{2 * time.Minute}},
		"flush 1ms":        {Enabled: true, Window: Duration{time.Minute}, Flush: Duration{time.Millisecond}},
		"window 1.5s":      {Enabled: true, Window: Duration{1500 * time.Millisecond}, Flush: Duration{time.Second}},
		"export bad url":   {Enabled: true, Window: Duration{time.Minute}, Flush: Duration{time.Second}, Retention: Duration{2160 * time.Hour}, Exports: []ExportConfig{{Name: "x", Format: "cloudevents", URL: "ftp://x", Source: "s"}}},
		"export twice":     {Enabled: true, Window: Duration{time.Minute}, Flush: Duration{time.Second}, Retention: Duration{2160 * time.Hour}, Exports: []ExportConfig{{Name: "x", Format: "cloudevents", URL: "http://127.0.0.1:1/e", Source: "s"}, {Name: "x", Format: "cloudevents", URL: "http://127.0.0.1:1/e", Source: "s"}}},
		"token and a file": {Enabled: true, Window: Duration{time.Minute}, Flush: Duration{time.Second}, Retention: Duration{2160 * time.Hour}, Exports: []ExportConfig{{Name: "x", Format: "cloudevents", URL: "http://127.0.0.1:1/e", Source: "s", Token: "t", TokenFile: "/nonexistent"}}},
	} {
		if err := m.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := DefaultConfig().Metering.validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}
