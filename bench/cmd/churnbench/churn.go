package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// churnResult is what the churn part measured.
type churnResult struct {
	n           int
	create      []time.Duration // the client's latency of each new scope's first invocation
	wall        time.Duration   // the churn, first invocation to the last scope gone
	slotWaits   int             // invocations refused for want of an id slot, retried
	peakLive    int             // most scopes listed at once (sampled every second)
	drain       time.Duration   // the last invocation's end until no scope was listed
	batch       int             // scopes of the removal batch (every id slot)
	batchCreate time.Duration   // creating them, parallel at a time
	batchRemove time.Duration   // the idle timeout's return until none was listed
	base        churnReading    // before the churn
	after       churnReading    // after it, once no scope was left
	final       churnReading    // after the removal batch
	stop        time.Duration
}

// churnReading is what may leak: the daemon's and the host's.
type churnReading struct {
	d          daemonReading
	cgroupDirs int
	processes  int // below the daemon's cgroup root
	host       hostReading
}

// leaks lists what r holds beyond base, and "" if nothing.
func (r churnReading) leaks(base churnReading) string {
	var out []string
	add := func(what string, now, was int) {
		if now > was {
			out = append(out, fmt.Sprintf("%d %s", now-was, what))
		}
	}
	add("cgroup directories", r.cgroupDirs, base.cgroupDirs)
	add("processes below the root", r.processes, base.processes)
	add("mounts", r.host.mounts, base.host.mounts)
	add("nsfs mounts", r.host.nsfs, base.host.nsfs)
	for k, n := range r.d.fdKinds {
		add("daemon fds ("+k+")", n, base.d.fdKinds[k])
	}
	add("daemon goroutines", r.d.goroutines, base.d.goroutines)
	return strings.Join(out, ", ")
}

func (b *bench) readChurn(ctx context.Context, dm *daemon) (churnReading, error) {
	var r churnReading
	var err error
	if r.d, err = dm.read(ctx); err != nil {
		return r, err
	}
	dirs, err := benchmd.CgroupDirs(dm.cgroupRoot)
	if err != nil {
		return r, err
	}
	r.cgroupDirs = len(dirs)
	if r.processes, err = cgroupProcesses(dm.cgroupRoot); err != nil {
		return r, err
	}
	r.host, err = readHost()
	return r, err
}

// readSettled reads until nothing is left beyond base (namespaces, mounts
// and goroutines of removed workers go a moment after them), at most for
// 30 s, and returns the last reading.
func (b *bench) readSettled(ctx context.Context, dm *daemon, base churnReading) (churnReading, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := b.readChurn(ctx, dm)
		if err != nil || r.leaks(base) == "" || time.Now().After(deadline) {
			return r, err
		}
		time.Sleep(250 * time.Millisecond)
	}
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
	if _, err := b.churn(ctx, dm, 2*b.o.parallel, r); err != nil {
		return nil, err
	}
	if err := waitNoScopes(ctx, dm, 2*time.Minute); err != nil {
		return nil, err
	}
	time.Sleep(2 * time.Second)
	if r.base, err = b.readChurn(ctx, dm); err != nil {
		return nil, err
	}
	r.slotWaits, r.peakLive = 0, 0

	logf("churn: %d scopes, %d at a time, idle timeout %s", r.n, b.o.parallel, b.o.idle)
	t0 := time.Now()
	last, err := b.churn(ctx, dm, r.n, r)
	if err != nil {
		return nil, err
	}
	if err := waitNoScopes(ctx, dm, 5*time.Minute); err != nil {
		return nil, err
	}
	r.wall = time.Since(t0)
	r.drain = time.Since(last)
	logf("churn: %d scopes created and removed in %s", r.n, r.wall.Round(time.Millisecond))
	if r.after, err = b.readSettled(ctx, dm, r.base); err != nil {
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
	if _, err := b.fill(ctx, dm, r.batch, "s"); err != nil {
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
	if err := waitNoScopes(ctx, dm, 5*time.Minute); err != nil {
		return nil, err
	}
	r.batchRemove = time.Since(t0)
	logf("churn: %d scopes removed in %s", r.batch, r.batchRemove.Round(time.Millisecond))
	if r.final, err = b.readSettled(ctx, dm, r.base); err != nil {
		return nil, err
	}
	if r.stop, err = b.kit.StopDaemon(dm.Daemon, 0); err != nil {
		return nil, err
	}
	return r, nil
}

// churn makes n new scopes on dm, -parallel at a time, retrying an
// invocation refused for want of an id slot. It records their latencies
// and the most scopes live (sampled every second), and returns when the
// last invocation ended.
func (b *bench) churn(ctx context.Context, dm *daemon, n int, r *churnResult) (time.Time, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var last time.Time
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for tick := time.Tick(time.Second); ; {
			select {
			case <-ctx.Done():
				return
			case <-tick:
			}
			if live, err := dm.liveScopes(ctx); err == nil {
				mu.Lock()
				r.peakLive = max(r.peakLive, live)
				mu.Unlock()
			}
		}
	}()
	t0 := time.Now()
	err := benchmd.Parallel(ctx, b.o.parallel, n, func(ctx context.Context, _ int) error {
		user := b.newUser("c")
		d, cold, err := dm.invoke(ctx, user)
		for status.Code(err) == codes.ResourceExhausted {
			mu.Lock()
			r.slotWaits++
			mu.Unlock()
			time.Sleep(100 * time.Millisecond)
			d, cold, err = dm.invoke(ctx, user)
		}
		if err == nil && !cold {
			err = fmt.Errorf("the first invocation of %s was not cold", user)
		}
		mu.Lock()
		defer mu.Unlock()
		r.create = append(r.create, d)
		last = time.Now()
		if k := len(r.create); k%1000 == 0 {
			logf("churn: %d/%d scopes in %s", k, n, time.Since(t0).Round(time.Second))
		}
		return err
	})
	cancel()
	<-sampled
	return last, err
}

// waitNoScopes waits until dm lists no scope.
func waitNoScopes(ctx context.Context, dm *daemon, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		live, err := dm.liveScopes(ctx)
		if err != nil {
			return err
		}
		if live == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still lists %d scopes %s after the churn", dm.name, live, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// setIdle changes dm's idle timeout: it rewrites its configuration file
// and sends SIGHUP, which reloads it.
func (b *bench) setIdle(dm *daemon, idle time.Duration) error {
	path := filepath.Join(b.kit.Work, "daemon-"+dm.name, "config.toml")
	return setIdle(path, dm.Pid(), idle)
}

func setIdle(path string, pid int, idle time.Duration) error {
	cfg, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	lines := strings.Split(string(cfg), "\n")
	found := false
	for i, l := range lines {
		if strings.HasPrefix(l, "idle_timeout = ") {
			lines[i] = fmt.Sprintf("idle_timeout = %q", idle.String())
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%s: no idle_timeout", path)
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		return err
	}
	return syscall.Kill(pid, syscall.SIGHUP)
}
