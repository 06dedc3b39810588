package metering

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestUsage(t *testing.T) {
	l := openT(t, t.TempDir(), time.Minute)
	prod := Dimensions{Scope: "acme.production", Environment: "production", Extension: "hook"}
	stag := Dimensions{Scope: "acme.staging", Environment: "staging", Extension: "hook"}
	rule := Dimensions{Scope: "acme.production", Environment: "production", Extension: "rule"}
	commitT(t, l, nil,
		Delta{Tenant: "acme", Meter: CPUSeconds, Dims: prod, At: t0, Value: 1},
		Delta{Tenant: "acme", Meter: CPUSeconds, Dims: prod, At: t0.Add(time.Minute), Value: 2},
		Delta{Tenant: "acme", Meter: CPUSeconds, Dims: stag, At: t0, Value: 4},
		Delta{Tenant: "acme", Meter: CPUSeconds, Dims: rule, At: t0.Add(time.Minute), Value: 8},
		Delta{Tenant: "acme", Meter: CPUSeconds, At: t0, Value: 16}, // not attributed
		Delta{Tenant: "acme", Meter: Invocations, Dims: prod, At: t0, Value: 3},
		Delta{Tenant: "beta", Meter: CPUSeconds, Dims: Dimensions{Scope: "beta.production"}, At: t0, Value: 32},
		Delta{Tenant: "acme", Meter: CPUSeconds, Dims: prod, At: t0.Add(24 * time.Hour), Value: 64}, // the next day
	)
	day := func(q Query) Query { q.From, q.To = t0, t0.Add(24*time.Hour); return q }
	w0, w1 := t0, t0.Add(time.Minute)
	for _, c := range []struct {
		name string
		q    Query
		want []Row
	}{
		{"tenant total", day(Query{Tenant: "acme"}), []Row{
			{Tenant: "acme", Meter: CPUSeconds, Value: 31},
			{Tenant: "acme", Meter: Invocations, Value: 3},
		}},
		{"by scope", day(Query{Tenant: "acme", Meter: CPUSeconds, By: ByScope}), []Row{
			{Tenant: "acme", Meter: CPUSeconds, Group: "", Value: 16},
			{Tenant: "acme", Meter: CPUSeconds, Group: "acme.production", Value: 11},
			{Tenant: "acme", Meter: CPUSeconds, Group: "acme.staging", Value: 4},
		}},
		{"by environment", day(Query{Tenant: "acme", Meter: CPUSeconds, By: ByEnvironment}), []Row{
			{Tenant: "acme", Meter: CPUSeconds, Group: "", Value: 16},
			{Tenant: "acme", Meter: CPUSeconds, Group: "production", Value: 11},
			{Tenant: "acme", Meter: CPUSeconds, Group: "staging", Value: 4},
		}},
		{"by extension", day(Query{Tenant: "acme", Meter: CPUSeconds, By: ByExtension}), []Row{
			{Tenant: "acme", Meter: CPUSeconds, Group: "", Value: 16},
			{Tenant: "acme", Meter: CPUSeconds, Group: "hook", Value: 7},
			{Tenant: "acme", Meter: CPUSeconds, Group: "rule", Value: 8},
		}},
		{"per window", day(Query{Tenant: "acme", Meter: CPUSeconds, By: ByExtension, PerWindow: true}), []Row{
			{Tenant: "acme", Meter: CPUSeconds, Group: "", WindowStart: w0, Window: time.Minute, Value: 16},
			{Tenant: "acme", Meter: CPUSeconds, Group: "hook", WindowStart: w0, Window: time.Minute, Value: 5},
			{Tenant: "acme", Meter: CPUSeconds, Group: "hook", WindowStart: w1, Window: time.Minute, Value: 2},
			{Tenant: "acme", Meter: CPUSeconds, Group: "rule", WindowStart: w1, Window: time.Minute, Value: 8},
		}},
		{"range is [from, to)", Query{Tenant: "acme", Meter: CPUSeconds, From: w1, To: w1.Add(time.Minute)}, []Row{
			{Tenant: "acme", Meter: CPUSeconds, Value: 10},
		}},
		// Bounds inside a second: a window starting at w1 starts in
		// [w1-0.5s, w1+0.5s), not in [w1+0.5s, ...) (seen: To = now in
		// the first second of the current window dropped it).
		{"sub-second to", Query{Tenant: "acme", Meter: CPUSeconds, From: w1.Add(-time.Second / 2), To: w1.Add(time.Second / 2)}, []Row{
			{Tenant: "acme", Meter: CPUSeconds, Value: 10},
		}},
		{"sub-second from", Query{Tenant: "acme", Meter: CPUSeconds, From: w0.Add(time.Second / 2), To: w1.Add(time.Minute)}, []Row{
			{Tenant: "acme", Meter: CPUSeconds, Value: 10},
		}},
		{"open range", Query{Tenant: "acme", Meter: CPUSeconds, From: w1}, []Row{
			{Tenant: "acme", Meter: CPUSeconds, Value: 74},
		}},
		{"every tenant", day(Query{Meter: CPUSeconds}), []Row{
			{Tenant: "acme", Meter: CPUSeconds, Value: 31},
			{Tenant: "beta", Meter: CPUSeconds, Value: 32},
		}},
		{"nothing", day(Query{Tenant: "nobody"}), nil},
	} {
		got, err := l.Usage(c.q)
		if err != nil {
			t.Errorf("%s: Usage: %v", c.name, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: Usage =\n%+v\nwant\n%+v", c.name, got, c.want)
		}
	}

	if v, err := l.Sum("acme", CPUSeconds, t0, t0.Add(24*time.Hour)); err != nil || v != 31 {
		t.Errorf("Sum over the day = %v, %v; want 31", v, err)
	}
	if v, err := l.Sum("acme", ColdStarts, t0, t0.Add(24*time.Hour)); err != nil || v != 0 {
		t.Errorf("Sum of nothing = %v, %v; want 0", v, err)
	}

	if _, err := l.Usage(day(Query{Tenant: "acme", Meter: CPUSeconds, By: ByExtension, PerWindow: true, Limit: 3})); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Usage over its limit = %v, want ErrTooLarge", err)
	}
	if rows, err := l.Usage(day(Query{Tenant: "acme", Meter: CPUSeconds, By: ByExtension, PerWindow: true, Limit: 4})); err != nil || len(rows) != 4 {
		t.Errorf("Usage at its limit = %d rows, %v", len(rows), err)
	}
	for name, q := range map[string]Query{
		"bad meter":     {Meter: "gpu"},
		"bad by":        {By: "tenant; DROP TABLE records"},
		"reverse range": {From: t0.Add(time.Hour), To: t0},
		"empty range":   {From: t0, To: t0},
		"negative lim":  {Limit: -1},
		"huge lim":      {Limit: MaxUsageRows + 1},
		"before 1970":   {From: time.Unix(-5, 0)},
	} {
		if _, err := l.Usage(q); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Usage = %v, want ErrInvalid", name, err)
		}
	}
	for name, err := range map[string]error{
		"no from": func() error { _, err := l.Sum("acme", CPUSeconds, time.Time{}, t0); return err }(),
		"meter":   func() error { _, err := l.Sum("acme", "x", t0, t0.Add(time.Hour)); return err }(),
		"tenant":  func() error { _, err := l.Sum("", CPUSeconds, t0, t0.Add(time.Hour)); return err }(),
	} {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Sum %s = %v, want ErrInvalid", name, err)
		}
	}
}
