package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
)

// densityResult is what the density part measured.
type densityResult struct {
	n                      int
	fill                   []time.Duration            // latencies of the scopes' first invocations, in order
	fillWall, refillWall   time.Duration              // filling the dense daemon, and the recover daemon
	probes                 map[string][]time.Duration // "empty cold", "dense warm", …: a new scope's first invocation, a warm call
	stop                   time.Duration              // SIGTERM to exit, stopScopes scopes
	stopScopes             int
	recovery               time.Duration // the killed daemon's successor's start until it served
	recoveredStop          time.Duration
	hostBefore, hostAfter  hostReading
	emptySlots, denseSlots int
	settleWaited           time.Duration
	settled                bool
	levels                 []level // the dense daemon with its warm scope, and n/10, n/2 and n more
}

// level is the dense daemon read with scopes beyond its warm one.
type level struct {
	scopes int
	reading
}

// measureDensity fills a daemon with -scopes idle scopes and measures it
// against an empty daemon; then its stop, and the recovery of a second
// daemon killed with as many.
func (b *bench) measureDensity(ctx context.Context) (*densityResult, error) {
	n := b.o.scopes
	r := &densityResult{n: n, emptySlots: b.o.probes + 8, denseSlots: n + b.o.probes + 8}
	var err error
	if r.hostBefore, err = readHost(); err != nil {
		return nil, err
	}
	empty, err := b.startDaemon(ctx, "empty", emptyIDBase, r.emptySlots, denseIdle)
	if err != nil {
		return nil, err
	}
	dense, err := b.startDaemon(ctx, "dense", denseIDBase, r.denseSlots, denseIdle)
	if err != nil {
		return nil, err
	}
	// The warm scope of each, and a first call of each kind.
	for _, dm := range []*daemon{empty, dense} {
		for range 3 {
			if _, _, err := dm.invoke(ctx, "warm"); err != nil {
				return nil, err
			}
		}
	}
	benchmd.Settle(10*time.Second, 0, 0.2)

	// Read at 0, n/10, n/2 and n scopes: the memory per scope is the growth
	// between two readings, each after the fill made the Go runtime collect
	// many times (the first, of a young daemon, holds its start's garbage).
	logf("density: filling the dense daemon with %d scopes, %d at a time", n, b.o.parallel)
	made := 0
	for i, at := range []int{0, n / 10, n / 2, n} {
		if i > 0 && at <= made {
			continue
		}
		if at > made {
			t0 := time.Now()
			lat, err := b.fill(ctx, dense, at-made, "d", nil)
			if err != nil {
				return nil, err
			}
			r.fillWall += time.Since(t0)
			r.fill, made = append(r.fill, lat...), at
		}
		if at == n {
			// Let the daemon's samplers run over the new scopes, and the
			// machine calm down, before reading.
			logf("density: %d scopes in %s", n, r.fillWall.Round(time.Millisecond))
			time.Sleep(6 * time.Second)
			r.settleWaited, r.settled = benchmd.Settle(30*time.Second, 0, 0.2)
		}
		l := level{scopes: at}
		if l.reading, err = dense.readAll(true); err != nil {
			return nil, err
		}
		r.levels = append(r.levels, l)
	}

	// New invocations, the two daemons taking turns (and which goes first).
	var vs []benchmd.Variant
	for _, dm := range []*daemon{empty, dense} {
		vs = append(vs, benchmd.Variant{Name: dm.name, Run: func(ctx context.Context, rec func(string, time.Duration)) error {
			cold, _, err := dm.invoke(ctx, fmt.Sprintf("p%06d", b.seq.Add(1)))
			if err != nil {
				return err
			}
			warm, wasCold, err := dm.invoke(ctx, "warm")
			if err == nil && wasCold {
				err = fmt.Errorf("the warm scope of %s had no worker", dm.name)
			}
			rec(dm.name+" cold", cold)
			rec(dm.name+" warm", warm)
			return err
		}})
	}
	if r.probes, err = benchmd.RoundRobin(ctx, "density: probes ", 0, b.o.probes, 0, vs, logf); err != nil {
		return nil, err
	}
	if r.stopScopes, err = dense.liveScopes(ctx); err != nil {
		return nil, err
	}
	logf("density: stopping the dense daemon with %d scopes", r.stopScopes)
	if r.stop, err = b.kit.StopDaemon(dense.Daemon, 0); err != nil {
		return nil, err
	}
	logf("density: stopped in %s", r.stop.Round(time.Millisecond))
	if err := b.measureRecovery(ctx, r); err != nil {
		return nil, err
	}
	if _, err := b.kit.StopDaemon(empty.Daemon, 0); err != nil {
		return nil, err
	}
	// Namespaces and mounts of killed workers go a moment after them.
	_, err = benchmd.Poll(20*time.Second, 200*time.Millisecond, func() (bool, error) {
		h, err := readHost()
		r.hostAfter = h
		return h.mounts <= r.hostBefore.mounts && h.nsfs <= r.hostBefore.nsfs && h.netns <= r.hostBefore.netns, err
	})
	return r, err
}

// measureRecovery fills a second daemon, kills it with SIGKILL, and times
// its successor's start on what it left.
func (b *bench) measureRecovery(ctx context.Context, r *densityResult) error {
	rec, err := b.startDaemon(ctx, "recover", denseIDBase, r.denseSlots, denseIdle)
	if err != nil {
		return err
	}
	logf("recovery: filling a second daemon with %d scopes", r.n)
	t0 := time.Now()
	if _, err = b.fill(ctx, rec, r.n, "r", nil); err != nil {
		return err
	}
	r.refillWall = time.Since(t0)
	b.kit.Forget(rec.Daemon)
	logf("recovery: killing it with SIGKILL")
	if err := errors.Join(rec.Kill(), b.kit.Logs.Keep(rec.LogPath)); err != nil {
		return err
	}
	benchmd.Settle(10*time.Second, 0, 0.2)
	if r.recovery, err = rec.Restart(ctx, rec.LogPath+".restart", stopWait); err != nil {
		return err
	}
	logf("recovery: its successor served after %s", r.recovery.Round(time.Millisecond))
	b.kit.Adopt(rec.Daemon)
	if live, err := rec.liveScopes(ctx); err != nil || live != 0 {
		return errors.Join(err, fmt.Errorf("the recovered daemon lists %d scopes", live))
	}
	dirs, err := benchmd.CgroupDirs(rec.cgroupRoot)
	if err != nil {
		return err
	}
	for _, d := range dirs { // its root, and the root alone, in every hierarchy
		if filepath.Base(d) != filepath.Base(rec.cgroupRoot) {
			return fmt.Errorf("the recovered daemon serves with %s left", d)
		}
	}
	r.recoveredStop, err = b.kit.StopDaemon(rec.Daemon, 0)
	return err
}

// churnResult is what the churn part measured.
type churnResult struct {
	n                  int
	create             []time.Duration // each new scope's first invocation
	wall               time.Duration   // the churn, first invocation to the last scope gone
	slotWaits          int             // invocations refused for want of an id slot, retried
	peakLive           int             // most scopes listed at once (sampled every second)
	drain              time.Duration   // the last invocation's end until no scope was listed
	batch              int             // scopes of the removal batch (every id slot)
	batchCreate        time.Duration   // creating them, -parallel at a time
	batchRemove        time.Duration   // the idle timeout's return until none was listed
	base, after, final reading         // before the churn, after it, after the batch
	stop               time.Duration
}

// readSettled reads dm until nothing is left beyond base (namespaces, mounts
// and goroutines of removed workers go a moment after them), at most for a
// minute, and returns the last reading.
func (dm *daemon) readSettled(base reading) (r reading, err error) {
	_, err = benchmd.Poll(time.Minute, 250*time.Millisecond, func() (bool, error) {
		r, err = dm.readAll(false)
		return r.leaks(base) == "", err
	})
	return r, err
}

// measureChurn creates -churn scopes on a daemon with a short idle
// timeout, which removes them as they go idle, and checks what is left.
func (b *bench) measureChurn(ctx context.Context) (*churnResult, error) {
	r := &churnResult{n: b.o.churn, batch: b.o.churnSlots}
	dm, err := b.startDaemon(ctx, "churn", churnIDBase, b.o.churnSlots, b.o.idle)
	if err != nil {
		return nil, err
	}
	// A first round, so that the baseline holds what the daemon keeps
	// once it served (the ledger open, connections, pools).
	if _, err := b.fill(ctx, dm, 2*b.o.parallel, "c", new(atomic.Int64)); err != nil {
		return nil, err
	}
	if err := dm.waitNoScopes(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	time.Sleep(2 * time.Second)
	if r.base, err = dm.readAll(false); err != nil {
		return nil, err
	}

	logf("churn: %d scopes, %d at a time, idle timeout %s", r.n, b.o.parallel, b.o.idle)
	sampling, stopSampling := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for tick := time.Tick(time.Second); ; {
			select {
			case <-sampling.Done():
				return
			case <-tick:
			}
			if live, err := dm.liveScopes(sampling); err == nil {
				r.peakLive = max(r.peakLive, live)
			}
		}
	})
	var waits atomic.Int64
	t0 := time.Now()
	r.create, err = b.fill(ctx, dm, r.n, "c", &waits)
	last := time.Now()
	stopSampling()
	sampler.Wait()
	r.slotWaits = int(waits.Load())
	if err != nil {
		return nil, err
	}
	if err := dm.waitNoScopes(ctx, 5*time.Minute); err != nil {
		return nil, err
	}
	r.wall, r.drain = time.Since(t0), time.Since(last)
	logf("churn: %d scopes created and removed in %s", r.n, r.wall.Round(time.Millisecond))
	if r.after, err = dm.readSettled(r.base); err != nil {
		return nil, err
	}
	if l := r.after.leaks(r.base); l != "" {
		logf("churn: left after the churn: %s", l)
	}

	// Every id slot at once, which fails if one leaked; then their
	// removal in one pass of the reaper, timed.
	if err := b.setIdle(dm, denseIdle); err != nil {
		return nil, err
	}
	time.Sleep(time.Second) // the reload is applied at once; to be sure
	t0 = time.Now()
	if _, err := b.fill(ctx, dm, r.batch, "s", nil); err != nil {
		return nil, fmt.Errorf("taking all %d id slots after the churn: %w", r.batch, err)
	}
	r.batchCreate = time.Since(t0)
	if live, err := dm.liveScopes(ctx); err != nil || live != r.batch {
		return nil, errors.Join(err, fmt.Errorf("%d scopes live, want %d", live, r.batch))
	}
	time.Sleep(b.o.idle)
	t0 = time.Now()
	if err := b.setIdle(dm, b.o.idle); err != nil {
		return nil, err
	}
	if err := dm.waitNoScopes(ctx, 5*time.Minute); err != nil {
		return nil, err
	}
	r.batchRemove = time.Since(t0)
	logf("churn: %d scopes removed in %s", r.batch, r.batchRemove.Round(time.Millisecond))
	if r.final, err = dm.readSettled(r.base); err != nil {
		return nil, err
	}
	r.stop, err = b.kit.StopDaemon(dm.Daemon, 0)
	return r, err
}
