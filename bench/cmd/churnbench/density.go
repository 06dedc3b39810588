package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
)

// densityResult is what the density part measured.
type densityResult struct {
	n              int
	fill           []time.Duration // latencies of the scopes' first invocations, in order
	fillWall       time.Duration
	emptyCold      []time.Duration // a new scope's first invocation, on the empty daemon
	denseCold      []time.Duration // … and on the dense one
	emptyWarm      []time.Duration // a warm call, on the empty daemon
	denseWarm      []time.Duration // … and on the dense one
	stop           time.Duration   // SIGTERM to exit, n+probes+1 scopes
	stopScopes     int
	refillWall     time.Duration
	recovery       time.Duration // its successor's start until it served
	recoveredStop  time.Duration
	hostBefore     hostReading
	hostAfter      hostReading
	emptySlots     int
	denseSlots     int
	settleWaited   time.Duration
	settled        bool
	recoverySkiped bool
	levels         []level // the dense daemon at its warm scope, n/10, n/2 and n more
}

// level is the dense daemon read at some number of scopes beyond its warm
// one: levels[0] with the warm scope alone, the last with n more.
type level struct {
	scopes int
	d      daemonReading
	mem    uint64 // its cgroup root's memory
	dirs   int
}

func readLevel(ctx context.Context, dm *daemon, scopes int) (level, error) {
	l := level{scopes: scopes}
	var err error
	if l.d, err = dm.readLeast(ctx); err != nil {
		return l, err
	}
	if l.mem, err = cgroupMemory(dm.cgroupRoot); err != nil {
		return l, err
	}
	dirs, err := benchmd.CgroupDirs(dm.cgroupRoot)
	l.dirs = len(dirs)
	return l, err
}

const denseIdle = time.Hour

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
	l0, err := readLevel(ctx, dense, 0)
	if err != nil {
		return nil, err
	}
	r.levels = []level{l0}

	logf("density: filling the dense daemon with %d scopes, %d at a time", n, b.o.parallel)
	// In stages, read at n/10, n/2 and n scopes: the daemon's memory per
	// scope is the growth between two of them, each read after the fill
	// made the Go runtime collect many times (the first reading, of a
	// young daemon, holds its start's garbage).
	made := 0
	for _, at := range []int{n / 10, n / 2, n} {
		if at <= made {
			continue
		}
		t0 := time.Now()
		lat, err := b.fill(ctx, dense, at-made, "d")
		if err != nil {
			return nil, err
		}
		r.fillWall += time.Since(t0)
		r.fill = append(r.fill, lat...)
		made = at
		if at == n {
			logf("density: %d scopes in %s", n, r.fillWall.Round(time.Millisecond))
			// Let the daemon's samplers run over the new scopes, and the
			// machine calm down, before reading.
			time.Sleep(6 * time.Second)
			r.settleWaited, r.settled = benchmd.Settle(30*time.Second, 0, 0.2)
		}
		l, err := readLevel(ctx, dense, at)
		if err != nil {
			return nil, err
		}
		r.levels = append(r.levels, l)
	}

	// New invocations, the two daemons taking turns (and which goes first).
	for i := range b.o.probes {
		pair := []*daemon{empty, dense}
		if i%2 == 1 {
			pair = []*daemon{dense, empty}
		}
		for _, dm := range pair {
			cold, _, err := dm.invoke(ctx, b.newUser("p"))
			if err != nil {
				return nil, err
			}
			warm, wasCold, err := dm.invoke(ctx, "warm")
			if err != nil {
				return nil, err
			}
			if wasCold {
				return nil, fmt.Errorf("the warm scope of %s had no worker", dm.name)
			}
			if dm == empty {
				r.emptyCold, r.emptyWarm = append(r.emptyCold, cold), append(r.emptyWarm, warm)
			} else {
				r.denseCold, r.denseWarm = append(r.denseCold, cold), append(r.denseWarm, warm)
			}
		}
	}
	if r.stopScopes, err = dense.liveScopes(ctx); err != nil {
		return nil, err
	}
	logf("density: stopping the dense daemon with %d scopes", r.stopScopes)
	if r.stop, err = b.kit.StopDaemon(dense.Daemon, 0); err != nil {
		return nil, err
	}
	logf("density: stopped in %s", r.stop.Round(time.Millisecond))

	if b.o.recovery {
		if err := b.measureRecovery(ctx, r); err != nil {
			return nil, err
		}
	} else {
		r.recoverySkiped = true
	}
	if _, err := b.kit.StopDaemon(empty.Daemon, 0); err != nil {
		return nil, err
	}
	// Namespaces and mounts of killed workers go a moment after them.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if r.hostAfter, err = readHost(); err != nil {
			return nil, err
		}
		if r.hostAfter.mounts <= r.hostBefore.mounts && r.hostAfter.nsfs <= r.hostBefore.nsfs &&
			r.hostAfter.netns <= r.hostBefore.netns || time.Now().After(deadline) {
			break
		}
	}
	return r, nil
}

// measureRecovery fills a second daemon, kills it with SIGKILL, and times
// its successor's start on what it left.
func (b *bench) measureRecovery(ctx context.Context, r *densityResult) error {
	n := b.o.scopes
	rec, err := b.startDaemon(ctx, "recover", denseIDBase, r.denseSlots, denseIdle)
	if err != nil {
		return err
	}
	logf("recovery: filling a second daemon with %d scopes", n)
	t0 := time.Now()
	if _, err = b.fill(ctx, rec, n, "r"); err != nil {
		return err
	}
	r.refillWall = time.Since(t0)
	b.kit.Forget(rec.Daemon)
	logf("recovery: killing it with SIGKILL")
	if err := rec.Kill(); err != nil {
		return err
	}
	if err := b.kit.Logs.Keep(rec.LogPath); err != nil {
		return err
	}
	benchmd.Settle(10*time.Second, 0, 0.2)
	if r.recovery, err = rec.Restart(ctx, rec.LogPath+".restart", b.o.stopWait); err != nil {
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
	// Its root, and the root alone, in every hierarchy.
	for _, d := range dirs {
		if filepath.Base(d) != filepath.Base(rec.cgroupRoot) {
			return fmt.Errorf("the recovered daemon serves with %s left", d)
		}
	}
	r.recoveredStop, err = b.kit.StopDaemon(rec.Daemon, 0)
	return err
}
