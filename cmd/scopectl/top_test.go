package main

import (
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

func TestQuantile(t *testing.T) {
	if !math.IsNaN(quantile(make([]uint64, 32), 0.99)) {
		t.Error("empty histogram: want NaN")
	}
	b := make([]uint64, 32)
	b[10] = 99 // ~1 µs
	b[20] = 1  // ~1 ms
	if q := quantile(b, 0.5); q < 1024e-9 || q >= 2048e-9 {
		t.Errorf("p50 = %g, want in [1024ns, 2048ns)", q)
	}
	if q := quantile(b, 1); q < 1048576e-9 || q > 2097152e-9 {
		t.Errorf("p100 = %g, want in the 2^20 ns bucket", q)
	}
}

func TestTopRows(t *testing.T) {
	t0 := time.Unix(1000, 0)
	scope := func(at time.Time, cpu time.Duration, inv, rx uint64, runq []uint64) *scopedv1.Scope {
		return &scopedv1.Scope{Key: "acme.production", Tenant: "acme", Usage: &scopedv1.Usage{
			Source: "ebpf", Cpu: durationpb.New(cpu), Invocations: inv, NetRxBytes: rx, RunqBuckets: runq, Time: timestamppb.New(at)}}
	}
	runq0, runq1 := make([]uint64, 32), make([]uint64, 32)
	runq1[12] = 10
	prev := map[string]*scopedv1.Scope{"acme.production": scope(t0, time.Second, 10, 1000, runq0)}
	cur := map[string]*scopedv1.Scope{
		"acme.production":   scope(t0.Add(2*time.Second), 2*time.Second, 30, 5000, runq1),
		"globex.production": scope(t0.Add(2*time.Second), time.Second, 1, 1, runq0), // new: no rate yet
	}
	rows := topRows(prev, cur)
	if len(rows) != 1 {
		t.Fatalf("rows %v", rows)
	}
	r := rows[0]
	if r.CPUPercent != 50 || r.InvPerSec != 10 || r.NetIn != 2000 || r.RunqP99 < 4096e-9 || r.RunqP99 > 8192e-9 {
		t.Errorf("row %+v", r)
	}
}
