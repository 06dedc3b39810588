package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
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

// procStat is the fields of /proc/<pid>/stat after the command (which may
// hold spaces): the state first, utime and stime the 12th and 13th.
func procStat(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	i := strings.LastIndexByte(string(b), ')')
	if err != nil || i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// ProcCPU is the CPU time (user + system) the process pid has used, in
// clock ticks of 10 ms (USER_HZ on every Linux Go supports); 0 if it is
// gone.
func ProcCPU(pid int) time.Duration {
	f := procStat(pid)
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(ut+st) * time.Second / 100
}

// ProcAlive says whether pid is a process that has not exited (a zombie
// counts as gone).
func ProcAlive(pid int) bool {
	f := procStat(pid)
	return len(f) > 0 && f[0] != "Z"
}

// SelfCPU is the CPU time (user + system) of this process and, with
// children, of its reaped children.
func SelfCPU(children bool) time.Duration {
	who := []int{unix.RUSAGE_SELF}
	if children {
		who = append(who, unix.RUSAGE_CHILDREN)
	}
	var t time.Duration
	for _, w := range who {
		var ru unix.Rusage
		if unix.Getrusage(w, &ru) == nil {
			t += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return t
}

// Parallel runs job for i in 0..n-1, workers at a time, in order of i. The
// first error cancels the jobs' context and is returned.
func Parallel(ctx context.Context, workers, n int, job func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
				if err := job(ctx, i); err != nil {
					cancel(err)
				}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}

// Keep runs n goroutines in wg that each call f back to back until ctx is
// done. An error of f (while ctx is not done) cancels ctx with it.
func Keep(ctx context.Context, cancel context.CancelCauseFunc, wg *sync.WaitGroup, n int, f func(ctx context.Context) error) {
	for range n {
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := f(ctx); err != nil && ctx.Err() == nil {
					cancel(err)
				}
			}
		})
	}
}

// Poll calls f every interval until it says done or fails, for at most
// wait, and returns whether it was done.
func Poll(wait, interval time.Duration, f func() (done bool, err error)) (bool, error) {
	for deadline := time.Now().Add(wait); ; time.Sleep(interval) {
		if done, err := f(); done || err != nil {
			return done, err
		}
		if time.Now().After(deadline) {
			return false, nil
		}
	}
}
