package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"
)

// Percentile is the p-th percentile (0 < p ≤ 100) of ds, nearest rank; the
// 50th is the median (the mean of the middle two for an even count). It is
// 0 for no durations.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if p == 50 && n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	i := int(math.Ceil(p/100*float64(n))) - 1
	return s[max(i, 0)]
}

// Median is the 50th Percentile of ds.
func Median(ds []time.Duration) time.Duration { return Percentile(ds, 50) }

// Mean is the arithmetic mean of ds, 0 for no durations.
func Mean(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}

// Variant is one way of doing what a benchmark measures. Run does it once
// and records the time of each series it measures through rec.
type Variant struct {
	Name string
	Run  func(ctx context.Context, rec func(series string, d time.Duration)) error
}

// RoundRobin runs every variant once per round, warmup+n rounds, starting
// each round with the next variant so that none always runs first and
// machine noise hits them alike, each run after an idle gap. It returns the
// series the n measured rounds recorded, and logs its progress every ten
// rounds through logf, prefixed with what.
func RoundRobin(ctx context.Context, what string, warmup, n int, gap time.Duration, vs []Variant, logf func(string, ...any)) (map[string][]time.Duration, error) {
	res := map[string][]time.Duration{}
	total := warmup + n
	for i := range total {
		round := map[string]time.Duration{}
		rec := func(s string, d time.Duration) { round[s] = d }
		for k := range vs {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("interrupted: %w", err)
			}
			v := vs[(i+k)%len(vs)]
			time.Sleep(gap)
			if err := v.Run(ctx, rec); err != nil {
				return nil, fmt.Errorf("%s%s (round %d): %w", what, v.Name, i+1, err)
			}
		}
		if i >= warmup {
			for s, d := range round {
				res[s] = append(res[s], d)
			}
		}
		if (i+1)%10 == 0 || i+1 == total {
			logf("%s%d/%d rounds (%d warm-up)", what, i+1, total, warmup)
		}
	}
	return res, nil
}
