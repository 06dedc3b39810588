// Command churnbench measures how the daemon, as shipped, holds many scopes.
// Density: a daemon filled with -scopes idle scopes beside an empty one, its
// stop, and the recovery of another killed with as many. Churn: -churn scopes
// created and reaped by one daemon, what is left, then every id slot at once.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/mountinfo"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

var logf = benchmd.Logger("churnbench: ", true)

const (
	cgroupMark  = "scoped-bench-churn" // every cgroup root of the benchmark holds it
	tenant      = "churn"
	environment = "production"
	extName     = "whoami"
	callTimeout = 2 * time.Minute
	stopWait    = 10 * time.Minute // for a stop or a recovery of the dense daemons
	denseIdle   = time.Hour

	// maxScopes bounds -scopes: the dense daemons' id ranges must not
	// reach the empty and churn daemons'. The ranges lie far above the
	// daemon's default and the other benchmarks' (invokebench 1<<29,
	// netbench 5<<28).
	maxScopes   = 6000
	denseIDBase = 1 << 31
	emptyIDBase = denseIDBase + (maxScopes+128)<<16
	churnIDBase = emptyIDBase + 256<<16
)

type options struct {
	scopes, churn, parallel, probes, churnSlots int
	idle                                        time.Duration
	daemonLog                                   string
}

func main() {
	var o options
	flag.IntVar(&o.scopes, "scopes", 2000, "density: live idle scopes (0: skip the density part)")
	flag.IntVar(&o.churn, "churn", 10000, "churn: scopes created and removed (0: skip the churn part)")
	flag.IntVar(&o.parallel, "parallel", 4, "invocations in flight while filling and churning")
	flag.IntVar(&o.probes, "probes", 20, "density: cold starts and warm calls timed on each daemon")
	flag.DurationVar(&o.idle, "idle", time.Second, "churn: the daemon's [pool] idle_timeout")
	flag.IntVar(&o.churnSlots, "churn-slots", 128, "churn: the daemon's [scope] id_slots, all taken at once at the end")
	flag.StringVar(&o.daemonLog, "daemon-log", "", "keep a copy of the daemons' logs in this `file`")
	benchmd.Main("churnbench", true, func(ctx context.Context, args string) (_ []string, retErr error) {
		if o.scopes < 0 || o.scopes > maxScopes || o.churn < 0 || o.scopes+o.churn == 0 {
			return nil, fmt.Errorf("need -scopes in 0..%d, -churn ≥ 0, and one of them above 0", maxScopes)
		}
		if o.parallel < 1 || o.parallel > 64 || o.probes < 1 || o.churnSlots <= o.parallel || o.churnSlots > 1024 ||
			o.idle < 100*time.Millisecond || o.idle > time.Minute {
			return nil, errors.New("need -parallel in 1..64, -probes ≥ 1, -churn-slots in -parallel+1..1024, -idle in 100ms..1m")
		}
		b := &bench{o: o}
		var err error
		if b.kit, err = benchmd.NewKit(cgroupMark, logf); err != nil {
			return nil, err
		}
		defer func() { retErr = errors.Join(retErr, b.kit.Close()) }()
		b.kit.Logs, b.kit.Wait = benchmd.LogKeeper{Path: o.daemonLog, Header: true}, stopWait
		if b.files, err = b.kit.Bundle("./examples/" + extName); err != nil {
			return nil, err
		}
		t0 := time.Now()
		var dr *densityResult
		var cr *churnResult
		if o.scopes > 0 {
			if dr, err = b.measureDensity(ctx); err != nil {
				return nil, err
			}
		}
		if o.churn > 0 {
			if cr, err = b.measureChurn(ctx); err != nil {
				return nil, err
			}
		}
		b.elapsed = time.Since(t0)
		if err := b.kit.Close(); err != nil {
			return nil, fmt.Errorf("cleanup: %w", err)
		}
		var sections []string
		if cr != nil {
			sections = append(sections, b.churnReport(args, cr))
		}
		if dr != nil {
			sections = append(sections, b.densityReport(args, dr))
		}
		return sections, nil
	})
}

// bench is the benchmark's world: the kit and the bundle.
type bench struct {
	o       options
	kit     *benchmd.Kit
	files   *scopedv1.Bundle
	seq     atomic.Int64 // users made
	elapsed time.Duration
}

// daemon is one running daemon of the benchmark.
type daemon struct {
	*benchmd.Daemon
	name, cgroupRoot string
	metrics          string // host:port of its /metrics
}

// startDaemon starts a daemon named name on the cgroup root
// /scoped-bench-churn-<name> and deploys whoami. Its configuration is the
// defaults but for the isolation policy, the id range, the idle timeout
// and the metrics address; the one tenant may hold every slot.
func (b *bench) startDaemon(ctx context.Context, name string, idBase, idSlots int, idle time.Duration) (*daemon, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0") // a loopback port free now
	if err != nil {
		return nil, err
	}
	dm := &daemon{name: name, cgroupRoot: "/" + cgroupMark + "-" + name, metrics: l.Addr().String()}
	l.Close()
	dm.Daemon, err = b.kit.StartDaemon(ctx, name, dm.cgroupRoot, fmt.Sprintf(`[isolation]
by = ["user"]
[pool]
idle_timeout = %q
[scope]
id_base = %d
id_slots = %d
reclaim_free = 0.0
[tiers.standard]
max_scopes = 0
[metrics]
listen = %q
`, idle.String(), idBase, idSlots, dm.metrics))
	if err != nil {
		return nil, err
	}
	return dm, dm.Deploy(ctx, tenant, environment, extName, b.files)
}

// invoke calls whoami as user and returns the client's latency, and
// whether the daemon started a worker for it.
func (dm *daemon) invoke(ctx context.Context, user string) (time.Duration, bool, error) {
	resp, took, err := dm.Invoke(ctx, callTimeout, &scopedv1.InvokeRequest{Tenant: tenant, Environment: environment, User: user, Extension: extName})
	if err != nil {
		return took, false, fmt.Errorf("%s: %w", dm.name, err)
	}
	return took, resp.GetFigures().GetCold(), nil
}

// fill makes n new scopes on dm, -parallel at a time, each the first
// invocation of a new user (checked cold), and returns their latencies in
// the order they started. With waits, an invocation refused for want of an
// id slot is retried after 100 ms and counted there.
func (b *bench) fill(ctx context.Context, dm *daemon, n int, prefix string, waits *atomic.Int64) ([]time.Duration, error) {
	lat := make([]time.Duration, n)
	var done atomic.Int64
	t0 := time.Now()
	err := benchmd.Parallel(ctx, b.o.parallel, n, func(ctx context.Context, i int) error {
		user := fmt.Sprintf("%s%06d", prefix, b.seq.Add(1))
		d, cold, err := dm.invoke(ctx, user)
		for waits != nil && status.Code(err) == codes.ResourceExhausted {
			waits.Add(1)
			time.Sleep(100 * time.Millisecond)
			d, cold, err = dm.invoke(ctx, user)
		}
		if err == nil && !cold {
			err = fmt.Errorf("the first invocation of %s on %s was not cold", user, dm.name)
		}
		lat[i] = d
		if k := done.Add(1); k%500 == 0 {
			logf("%s: %d/%d scopes in %s", dm.name, k, n, time.Since(t0).Round(time.Second))
		}
		return err
	})
	return lat, err
}

// liveScopes is the number of scopes the daemon lists.
func (dm *daemon) liveScopes(ctx context.Context) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := dm.C.ListScopes(cctx, &scopedv1.ListScopesRequest{})
	return len(resp.GetScopes()), err
}

// waitNoScopes waits until dm lists no scope.
func (dm *daemon) waitNoScopes(ctx context.Context, wait time.Duration) error {
	var live int
	done, err := benchmd.Poll(wait, 20*time.Millisecond, func() (_ bool, err error) {
		live, err = dm.liveScopes(ctx)
		return live == 0, err
	})
	if err == nil && !done {
		err = fmt.Errorf("%s still lists %d scopes after %s", dm.name, live, wait)
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

// reading is what a daemon holds at one moment, and what might leak.
type reading struct {
	rss, heap, stacks int64          // bytes: VmRSS, the Go heap in use, goroutine stacks
	goroutines, fds   int            // from its /metrics; its open file descriptors
	threads           int            // of the process
	fdKinds           map[string]int // fds by kind: socket, pipe, pidfd, …
	acct              string         // its accounting source
	numGC             int64          // garbage collections so far
	cpu               float64        // CPUs it used while read (readLeast)
	collected         bool           // readLeast saw a collection
	dirs, procs       int            // cgroup directories and processes at and below its cgroup root
	mem               uint64         // its cgroup root's memory
	host              hostReading
}

// goMem is the Go memory the daemon uses: heap in use and goroutine stacks.
func (r reading) goMem() int64 { return r.heap + r.stacks }

// leakRows are what may be left behind, as the churn's table lists them.
var leakRows = []struct {
	name string
	of   func(reading) int
}{
	{"cgroup directories below the daemon's root (all hierarchies, the root included)", func(r reading) int { return r.dirs }},
	{"processes below the daemon's root", func(r reading) int { return r.procs }},
	{"mounts (the host's mount namespace)", func(r reading) int { return r.host.mounts }},
	{"… of them nsfs (namespaces kept by a mount)", func(r reading) int { return r.host.nsfs }},
	{"daemon file descriptors", func(r reading) int { return r.fds }},
	{"… of them namespaces", func(r reading) int { return r.fdKinds["namespace"] }},
	{"daemon goroutines", func(r reading) int { return r.goroutines }},
}

// leaks lists what r holds beyond base (each row, each kind of fd), and ""
// if nothing.
func (r reading) leaks(base reading) string {
	var out []string
	add := func(what string, now, was int) {
		if now > was {
			out = append(out, fmt.Sprintf("%d %s", now-was, what))
		}
	}
	for _, row := range leakRows {
		add(row.name, row.of(r), row.of(base))
	}
	for k, n := range r.fdKinds {
		add("daemon fds ("+k+")", n, base.fdKinds[k])
	}
	return strings.Join(out, ", ")
}

// readAll reads the daemon, its cgroup root and the host; with least (a
// density level), the daemon through readLeast and the root's memory too.
func (dm *daemon) readAll(least bool) (reading, error) {
	read := dm.read
	if least {
		read = dm.readLeast
	}
	r, err := read()
	if err != nil {
		return r, err
	}
	dirs, err := benchmd.CgroupDirs(dm.cgroupRoot)
	if err != nil {
		return r, err
	}
	r.dirs = len(dirs)
	pids, err := benchmd.CgroupProcs(dm.cgroupRoot)
	if err != nil {
		return r, err
	}
	r.procs = len(pids)
	if least && r.dirs > 0 {
		n, err := cgroups.Load(dm.cgroupRoot)
		if err != nil {
			return r, err
		}
		st, err := n.Stats()
		if err != nil {
			return r, err
		}
		r.mem = st.MemoryCurrent
	}
	r.host, err = readHost()
	return r, err
}

// read reads the daemon's process and its /metrics.
func (dm *daemon) read() (reading, error) {
	r := reading{fdKinds: map[string]int{}}
	proc := fmt.Sprintf("/proc/%d/", dm.Pid())
	st, err := os.ReadFile(proc + "status")
	if err != nil {
		return r, err
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fmt.Sscan(v, &r.rss) // kB
			r.rss <<= 10
		} else if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			fmt.Sscan(v, &r.threads)
		}
	}
	entries, err := os.ReadDir(proc + "fd")
	if err != nil {
		return r, err
	}
	for _, e := range entries {
		if target, err := os.Readlink(proc + "fd/" + e.Name()); err == nil { // else closed meanwhile
			r.fds++
			r.fdKinds[fdKind(target)]++
		}
	}
	m, err := dm.scrape()
	for _, src := range []string{"ebpf", "cgroupfs"} {
		if m[`scoped_accounting_source{source="`+src+`"}`] == 1 {
			r.acct = src
		}
	}
	r.goroutines = int(m["go_goroutines"])
	r.heap = int64(m["go_memstats_heap_inuse_bytes"])
	r.stacks = int64(m["go_memstats_stack_inuse_bytes"])
	r.numGC = int64(m["go_gc_duration_seconds_count"])
	return r, err
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

// readLeast reads the daemon every 500 ms for 10 s, and on until it saw a
// garbage collection (at most 90 s), and keeps the reading of the least Go
// memory, with the least RSS: the heap in use holds garbage until the next
// collection, and the RSS pages the runtime has not given back.
func (dm *daemon) readLeast() (reading, error) {
	c0, t0 := benchmd.ProcCPU(dm.Pid()), time.Now()
	var best reading
	var gc0 int64
	for i := 0; ; i++ {
		r, err := dm.read()
		if err != nil {
			return r, err
		}
		if i == 0 {
			gc0 = r.numGC
		}
		rss := min(r.rss, best.rss)
		if i == 0 || r.goMem() < best.goMem() {
			best = r
		}
		if i > 0 {
			best.rss = rss
		}
		best.collected = r.numGC > gc0
		if i >= 20 && (best.collected || time.Since(t0) > 90*time.Second) {
			best.cpu = float64(benchmd.ProcCPU(dm.Pid())-c0) / float64(time.Since(t0))
			return best, nil
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// scraper keeps no connection to the daemon between scrapes, which would
// count among its file descriptors and goroutines.
var scraper = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// scrape reads the daemon's unlabelled series, and its accounting source,
// from its /metrics.
func (dm *daemon) scrape() (map[string]float64, error) {
	resp, err := scraper.Get("http://" + dm.metrics + "/metrics")
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
		if name, v, ok := strings.Cut(line, " "); ok {
			if f, err := strconv.ParseFloat(strings.Fields(v)[0], 64); err == nil {
				out[name] = f
			}
		}
	}
	return out, s.Err()
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
