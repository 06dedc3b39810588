package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/mountinfo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
	pids, err := benchmd.CgroupProcs(dm.cgroupRoot)
	if err != nil {
		return r, err
	}
	r.processes = len(pids)
	r.host, err = readHost()
	return r, err
}

// readSettled reads until nothing is left beyond base (namespaces, mounts
// and goroutines of removed workers go a moment after them), at most for
// a minute, and returns the last reading.
func (b *bench) readSettled(ctx context.Context, dm *daemon, base churnReading) (r churnReading, err error) {
	_, err = benchmd.Poll(time.Minute, 250*time.Millisecond, func() (bool, error) {
		r, err = b.readChurn(ctx, dm)
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
	var live int
	done, err := benchmd.Poll(wait, 20*time.Millisecond, func() (_ bool, err error) {
		live, err = dm.liveScopes(ctx)
		return live == 0, err
	})
	if err == nil && !done {
		err = fmt.Errorf("%s still lists %d scopes %s after the churn", dm.name, live, wait)
	}
	return err
}

// setIdle changes dm's idle timeout: it rewrites its configuration file
// and sends SIGHUP, which reloads it.
func (b *bench) setIdle(dm *daemon, idle time.Duration) error {
	path := filepath.Join(b.kit.Work, "daemon-"+dm.name, "config.toml")
	cfg, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	re := regexp.MustCompile(`(?m)^idle_timeout = .*$`)
	if !re.Match(cfg) {
		return fmt.Errorf("%s: no idle_timeout", path)
	}
	if err := os.WriteFile(path, re.ReplaceAll(cfg, []byte(fmt.Sprintf("idle_timeout = %q", idle.String()))), 0o644); err != nil {
		return err
	}
	return syscall.Kill(dm.Pid(), syscall.SIGHUP)
}

// daemonReading is what the daemon holds at one moment.
type daemonReading struct {
	rss        int64          // bytes, VmRSS
	heap       int64          // bytes, the Go heap in use
	stacks     int64          // bytes, goroutine stacks
	goroutines int            // from its /metrics
	threads    int            // of the process
	fds        int            // open file descriptors
	fdKinds    map[string]int // fds by kind: socket, pipe, pidfd, …
	acct       string         // its accounting source
	cpu        float64        // CPUs it used while read (readLeast)
	numGC      int64          // garbage collections so far
	collected  bool           // readLeast saw a collection
}

// read reads the daemon's process and its /metrics.
func (dm *daemon) read(ctx context.Context) (daemonReading, error) {
	pid := dm.Pid()
	r := daemonReading{fdKinds: map[string]int{}}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return r, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			r.rss = n << 10
		case "Threads":
			r.threads = int(n)
		}
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return r, err
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		r.fds++
		r.fdKinds[fdKind(target)]++
	}
	m, err := dm.scrape(ctx)
	if err != nil {
		return r, err
	}
	r.goroutines = int(m["go_goroutines"])
	for _, src := range []string{"ebpf", "cgroupfs"} {
		if m[`scoped_accounting_source{source="`+src+`"}`] == 1 {
			r.acct = src
		}
	}
	r.heap = int64(m["go_memstats_heap_inuse_bytes"])
	r.stacks = int64(m["go_memstats_stack_inuse_bytes"])
	r.numGC = int64(m["go_gc_duration_seconds_count"])
	return r, nil
}

// fdKind names what an fd's /proc link points at.
func fdKind(target string) string {
	switch {
	case strings.HasPrefix(target, "socket:"):
		return "socket"
	case strings.HasPrefix(target, "pipe:"):
		return "pipe"
	case strings.HasPrefix(target, "anon_inode:"):
		return strings.Trim(strings.TrimPrefix(target, "anon_inode:"), "[]")
	case strings.HasPrefix(target, "net:["), strings.HasPrefix(target, "mnt:["), strings.HasPrefix(target, "user:["):
		return "namespace"
	case strings.HasPrefix(target, "/sys/fs/cgroup"):
		return "cgroup file"
	case strings.HasPrefix(target, "/"):
		return "file"
	}
	return "other"
}

// scraper keeps no connection to the daemon between scrapes, which would
// count among its file descriptors and goroutines.
var scraper = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// goMem is the Go memory the daemon uses: heap in use and goroutine stacks.
func (r daemonReading) goMem() int64 { return r.heap + r.stacks }

// readLeast reads the daemon every 500 ms for 10 s, and on until it saw a
// garbage collection (at most 90 s), and keeps the reading of the least Go
// memory, with the least RSS: the heap in use holds garbage until the next
// collection, and the RSS pages the runtime has not given back.
func (dm *daemon) readLeast(ctx context.Context) (best daemonReading, _ error) {
	c0, t0 := benchmd.ProcCPU(dm.Pid()), time.Now()
	defer func() { best.cpu = float64(benchmd.ProcCPU(dm.Pid())-c0) / float64(time.Since(t0)) }()
	var first int64
	for i := 0; ; i++ {
		if i > 0 {
			time.Sleep(500 * time.Millisecond)
		}
		r, err := dm.read(ctx)
		if err != nil {
			return r, err
		}
		if i == 0 {
			first = r.numGC
		}
		rss := min(r.rss, best.rss)
		if i == 0 || r.goMem() < best.goMem() {
			best = r
		}
		if i > 0 {
			best.rss = rss
		}
		best.collected = best.collected || r.numGC > first
		if i >= 20 && (best.collected || time.Since(t0) > 90*time.Second) {
			return best, nil
		}
	}
}

// scrape reads the daemon's unlabelled series from its /metrics.
func (dm *daemon) scrape(ctx context.Context) (map[string]float64, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, "http://"+dm.metrics+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := scraper.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/metrics: %s", dm.metrics, resp.Status)
	}
	out := map[string]float64{}
	s := bufio.NewScanner(io.LimitReader(resp.Body, 1<<30))
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "{") && !strings.HasPrefix(line, "scoped_accounting_source{") {
			continue
		}
		name, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.Fields(v)[0], 64); err == nil {
			out[name] = f
		}
	}
	return out, s.Err()
}

// cgroupMemory is the memory the cgroup root's tree uses (0 if it is
// not there).
func cgroupMemory(root string) (uint64, error) {
	if dirs, err := benchmd.CgroupDirs(root); err != nil || len(dirs) == 0 {
		return 0, err
	}
	n, err := cgroups.Load(root)
	if err != nil {
		return 0, err
	}
	st, err := n.Stats()
	if err != nil {
		return 0, err
	}
	return st.MemoryCurrent, nil
}

// hostReading is what the host holds that a daemon might leak.
type hostReading struct {
	mounts int // in the benchmark's (the daemons') mount namespace
	nsfs   int // of them, namespaces kept by a bind mount
	netns  int // distinct network namespaces of all processes
}

func readHost() (hostReading, error) {
	var h hostReading
	mounts, err := mountinfo.Self()
	if err != nil {
		return h, err
	}
	for _, m := range mounts {
		h.mounts++
		if m.FSType == "nsfs" {
			h.nsfs++
		}
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return h, err
	}
	var nets []uint64
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if fi, err := os.Stat(filepath.Join("/proc", e.Name(), "ns", "net")); err == nil { // else gone meanwhile
			nets = append(nets, fi.Sys().(*syscall.Stat_t).Ino)
		}
	}
	slices.Sort(nets)
	h.netns = len(slices.Compact(nets))
	return h, nil
}
