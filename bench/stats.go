package bench

import (
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
