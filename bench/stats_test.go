package bench

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

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
