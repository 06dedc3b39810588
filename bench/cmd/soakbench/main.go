// Command soakbench runs scoped for a while under a mixed and partly hostile
// load while killing it with SIGKILL about once a minute and starting it
// again, and reports whether it held:
//
//   - every invocation either succeeded or got a clear gRPC code (never
//     Unknown or Internal, never a hang: each call's client deadline is far
//     past the deadline it asks the daemon for);
//   - the metering ledger's cpu_seconds per tenant equal what the kernel
//     counted in the tenant's cgroup over all the daemon's lives, within 1 %;
//   - nothing is left once the daemon stopped: no cgroup, process, mount or
//     sandbox directory, and the daemon's file descriptors after a restart
//     are back at the first start's baseline.
//
// The load: -tenants well-behaved tenants each run a warm caller (whoami and
// 5 ms spins in one scope) and a cold caller (whoami for a new user, so a
// new scope, every -cold-every); one hostile tenant cycles through a Go
// extension that crashes mid-call, hangs past its deadline, eats memory
// until the OOM killer comes, fails and spins, and an exec extension that
// fork-bombs into its scope's pids limit. The isolation policy is tenant +
// environment + user.
//
// The benchmark builds the daemon (-tags seccomp), scoped-exec and the
// bundles with `go build` in the repository root, runs as root, owns the
// cgroup root /scoped-bench-soak and removes what it made. With -o it
// writes its section of BENCHMARKS.md between marker comments.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/client"
	"github.com/scoped-io/scoped/internal/mountinfo"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

var logf = benchmd.Logger("", true)

const (
	markStart    = "<!-- soakbench:start -->"
	markEnd      = "<!-- soakbench:end -->"
	sectionTitle = "## Soak with faults: mixed load, kill -9 every minute"
	baseCommand  = "go run -tags seccomp ./bench/cmd/soakbench"

	cgroupRoot  = "/scoped-bench-soak"
	cgroupMark  = "scoped-bench-soak"
	environment = "production"
	hostile     = "mallory"
	tier        = "standard"
)

type options struct {
	duration  time.Duration
	killEvery time.Duration
	tenants   int
	coldEvery time.Duration
	out       string
	args      string
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 10*time.Minute, "how long the load runs")
	flag.DurationVar(&o.killEvery, "kill-every", 60*time.Second, "kill -9 the daemon about this often (±1/6)")
	flag.IntVar(&o.tenants, "tenants", 4, "well-behaved tenants (plus one hostile one)")
	flag.DurationVar(&o.coldEvery, "cold-every", 2*time.Second, "each well-behaved tenant starts a new scope this often")
	flag.StringVar(&o.out, "o", "", "replace (or add) this program's section in this markdown `file`")
	benchmd.Main("soakbench", func(args string) error {
		o.args = args
		return run(o)
	})
}

// The bundles each tenant gets.
var (
	goodExts    = []string{"whoami", "spin"}
	hostileExts = []string{"misbehave", "bomb", "spin"}
)

func run(o options) (retErr error) {
	switch {
	case os.Geteuid() != 0:
		return errors.New("must run as root (sudo make bench)")
	case o.duration < time.Second || o.killEvery < 5*time.Second || o.tenants < 1 || o.coldEvery <= 0:
		return errors.New("need -duration ≥ 1s, -kill-every ≥ 5s, -tenants ≥ 1, -cold-every > 0")
	}
	kit, err := benchmd.NewKit(cgroupMark, logf)
	if err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, kit.Close()) }()
	bundles, err := buildBundles(kit)
	if err != nil {
		return err
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	settings := `
[isolation]
by = ["environment", "user"]
[limits]
default_timeout = "5s"
[pool]
idle_timeout = "10m"
max_workers = 2
[scope]
id_slots = 2048
[tiers.standard]
scope_memory_max = 67108864
scope_pids_max = 64
[metering]
window = "10s"
flush = "1s"
[metrics]
listen = "off"
[log]
level = "info"
`
	dir := filepath.Join(kit.Work, "daemon-d")
	d, err := kit.StartDaemon(ctx, "d", cgroupRoot, settings)
	if err != nil {
		return err
	}
	logBase = d.LogPath
	stopped := false
	defer func() {
		if !stopped {
			retErr = errors.Join(retErr, d.Stop())
		}
	}()
	c, err := client.Dial(ctx, d.Socket, client.WithMaxMessageSize(64<<20))
	if err != nil {
		return err
	}
	defer c.Close()
	tenants := make([]string, 0, o.tenants+1)
	for i := range o.tenants {
		tenants = append(tenants, fmt.Sprintf("tenant%d", i+1))
	}
	for _, tn := range tenants {
		for _, e := range goodExts {
			if err := deploy(ctx, c, tn, e, bundles[e]); err != nil {
				return err
			}
		}
	}
	for _, e := range hostileExts {
		if err := deploy(ctx, c, hostile, e, bundles[e]); err != nil {
			return err
		}
	}
	tenants = append(tenants, hostile)
	baseFDs := fdCount(d.Pid())
	logf("load for %s, kill -9 about every %s; daemon fds at start %d", o.duration, o.killEvery, baseFDs)

	st := newStats()
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, tn := range tenants[:o.tenants] {
		wg.Add(2)
		go func() { defer wg.Done(); warmCaller(loadCtx, c, st, tn) }()
		go func() { defer wg.Done(); coldCaller(loadCtx, c, st, tn, i, o.coldEvery) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); hostileCaller(loadCtx, c, st) }()

	kernel := map[string]time.Duration{}
	var restarts []time.Duration
	var fdAfter []int
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	end := time.Now().Add(o.duration)
	var loopErr error
	for ctx.Err() == nil && loopErr == nil {
		jitter := time.Duration(rng.Int64N(int64(o.killEvery/3))) - o.killEvery/6
		next := time.Now().Add(o.killEvery + jitter)
		if next.After(end) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(next)):
		}
		if ctx.Err() != nil {
			break
		}
		took, err := crash(ctx, d, tenants, kernel)
		if err != nil {
			loopErr = err
			break
		}
		restarts = append(restarts, took)
		fdAfter = append(fdAfter, fdCount(d.Pid()))
		logf("kill -9 #%d: serving again after %s; calls so far %d ok, %d refused", len(restarts), took.Round(time.Millisecond), st.ok.Load(), st.failed.Load())
	}
	if loopErr == nil && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(end)):
		}
	}
	stopLoad()
	wg.Wait()
	if loopErr != nil {
		return loopErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// A last crash makes what the kernel counted final; the next start
	// charges what the dead scopes used since the last flush.
	took, err := crash(ctx, d, tenants, kernel)
	if err != nil {
		return err
	}
	restarts = append(restarts, took)
	fdAfter = append(fdAfter, fdCount(d.Pid()))
	ledger := map[string]float64{}
	for _, tn := range tenants {
		v, err := ledgerCPU(ctx, c, tn)
		if err != nil {
			return err
		}
		ledger[tn] = v
	}
	t0 := time.Now()
	stopped = true
	if err := d.Stop(); err != nil {
		return err
	}
	stopTook := time.Since(t0)
	left := leftovers(dir)

	rep := report{o: o, st: st, kernel: kernel, ledger: ledger, restarts: restarts, stop: stopTook,
		baseFDs: baseFDs, fdAfter: fdAfter, left: left, tenants: tenants}
	text := rep.markdown()
	fmt.Println(text)
	if o.out != "" {
		if err := benchmd.WriteSection(o.out, markStart, markEnd, text); err != nil {
			return err
		}
	}
	if bad := rep.failures(); len(bad) > 0 {
		return fmt.Errorf("the soak did not hold:\n  %s", strings.Join(bad, "\n  "))
	}
	return nil
}

// crash kills the daemon with SIGKILL, kills its workers (as the next
// start's cleanup would, so that what the kernel counted is final before it
// is read), adds each tenant's CPU from its cgroup to kernel, and starts the
// daemon again.
// The daemon's log of each life after the first: logBase.1, .2, …
var (
	logBase  string
	restarts int
)

func crash(ctx context.Context, d *benchmd.Daemon, tenants []string, kernel map[string]time.Duration) (time.Duration, error) {
	if err := d.Kill(); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		left := processesIn(cgroupRoot)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("processes of the killed daemon's scopes do not die: %v", left)
		}
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, tn := range tenants {
		n, err := cgroups.Load(filepath.Join(cgroupRoot, tier, tn))
		if err != nil {
			continue // no scope of it was live in this life
		}
		s, err := n.Stats()
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return 0, fmt.Errorf("%s's cgroup: %w", tn, err)
		}
		kernel[tn] += s.CPUUsage
	}
	restarts++
	return d.Restart(ctx, fmt.Sprintf("%s.%d", logBase, restarts), time.Minute)
}

// processesIn lists the live (not zombie) processes in a cgroup below root.
func processesIn(root string) []int {
	var out []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), ":"+root+"/") {
			continue
		}
		stat, _ := os.ReadFile(strings.TrimSuffix(p, "cgroup") + "stat")
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && strings.HasPrefix(string(stat[i+1:]), " Z") {
			continue
		}
		if pid, err := strconv.Atoi(strings.Split(p, "/")[2]); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

func ledgerCPU(ctx context.Context, c *client.Client, tenant string) (float64, error) {
	r, err := c.GetUsage(ctx, &scopedv1.GetUsageRequest{Tenant: tenant, Meter: "cpu_seconds",
		From: timestamppb.New(time.Now().Add(-24 * time.Hour)), To: timestamppb.New(time.Now().Add(time.Hour))})
	if err != nil {
		return 0, fmt.Errorf("usage of %s: %w", tenant, err)
	}
	var sum float64
	for _, row := range r.GetRows() {
		sum += row.GetValue()
	}
	return sum, nil
}

func fdCount(pid int) int {
	e, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(e)
}

// leftovers lists what a stopped daemon left: cgroups, processes in them,
// mounts below its directory, entries of its runtime directory.
func leftovers(dir string) []string {
	var out []string
	mine, _ := benchmd.CgroupsLeft(cgroupMark)
	for _, p := range mine {
		out = append(out, "cgroup "+p)
	}
	for _, pid := range processesIn(cgroupRoot) {
		out = append(out, fmt.Sprintf("process %d", pid))
	}
	if mounts, err := mountinfo.Self(); err == nil {
		for _, m := range mounts {
			if strings.HasPrefix(m.Point, dir) {
				out = append(out, "mount "+m.Point)
			}
		}
	}
	if e, err := os.ReadDir(filepath.Join(dir, "run")); err == nil {
		for _, x := range e {
			out = append(out, "runtime entry "+x.Name())
		}
	}
	return out
}

func deploy(ctx context.Context, c *client.Client, tenant, name string, b *scopedv1.Bundle) error {
	_, err := c.Deploy(ctx, &scopedv1.DeployRequest{Tenant: tenant, Environment: environment, Name: name, Bundle: b})
	if err != nil {
		return fmt.Errorf("deploy %s for %s: %w", name, tenant, err)
	}
	return nil
}

// stats counts the calls by kind and outcome.
type stats struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	byKind     map[string]map[string]int // kind → "OK" or code → calls
	unclear    []string                  // calls without a clear outcome (the first 50)
	nUnclear   int
}

func newStats() *stats { return &stats{byKind: map[string]map[string]int{}} }

// call makes one invocation with the daemon-side timeout, under a client
// deadline a minute past it, and records the outcome.
func (s *stats) call(ctx context.Context, c *client.Client, kind string, req *scopedv1.InvokeRequest, timeout time.Duration) error {
	req.Environment = environment
	req.Timeout = durationpb.New(timeout)
	cctx, cancel := context.WithTimeout(ctx, timeout+time.Minute)
	defer cancel()
	_, err := c.Invoke(cctx, req)
	outcome := "OK"
	if err != nil {
		code := status.Code(err)
		outcome = code.String()
		switch {
		case ctx.Err() != nil:
			return ctx.Err() // the load stopped: not a result
		case cctx.Err() != nil:
			s.addUnclear(fmt.Sprintf("%s: no answer within %s (hang)", kind, timeout+time.Minute))
			outcome = "hang"
		case code == codes.Unknown || code == codes.Internal || status.Convert(err).Message() == "":
			s.addUnclear(fmt.Sprintf("%s: %v", kind, err))
		}
		s.failed.Add(1)
	} else {
		s.ok.Add(1)
	}
	s.mu.Lock()
	if s.byKind[kind] == nil {
		s.byKind[kind] = map[string]int{}
	}
	s.byKind[kind][outcome]++
	s.mu.Unlock()
	if err != nil && status.Code(err) == codes.Unavailable {
		// The daemon may be down: do not spin.
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// addUnclear records a call without a clear outcome (the first 50 in full).
func (s *stats) addUnclear(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nUnclear++
	if len(s.unclear) < 50 {
		s.unclear = append(s.unclear, what)
	}
}

func warmCaller(ctx context.Context, c *client.Client, st *stats, tenant string) {
	for i := 0; ctx.Err() == nil; i++ {
		req := &scopedv1.InvokeRequest{Tenant: tenant, User: "warm", Extension: "whoami", Payload: []byte("x")}
		kind := "warm whoami"
		if i%2 == 1 {
			req.Extension, req.Payload, kind = "spin", []byte("5"), "warm spin 5 ms"
		}
		_ = st.call(ctx, c, kind, req, 5*time.Second)
	}
}

func coldCaller(ctx context.Context, c *client.Client, st *stats, tenant string, n int, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		req := &scopedv1.InvokeRequest{Tenant: tenant, User: fmt.Sprintf("u%d-%d", n, i), Extension: "whoami", Payload: []byte("x")}
		_ = st.call(ctx, c, "cold whoami (new scope)", req, 10*time.Second)
	}
}

// hostileCaller cycles through the hostile tenant's misbehaviours.
func hostileCaller(ctx context.Context, c *client.Client, st *stats) {
	type step struct {
		kind, ext, payload string
		timeout            time.Duration
	}
	steps := []step{
		{"hostile: crash mid-call", "misbehave", "exit", 5 * time.Second},
		{"hostile: ok", "misbehave", "ok", 5 * time.Second},
		{"hostile: hang past deadline", "misbehave", "hang", time.Second},
		{"hostile: OOM", "misbehave", "oom", 10 * time.Second},
		{"hostile: handler error", "misbehave", "fail", 5 * time.Second},
		{"hostile: fork bomb (exec)", "bomb", "x", 3 * time.Second},
		{"hostile: spin 200 ms", "spin", "200", 5 * time.Second},
	}
	for i := 0; ctx.Err() == nil; i++ {
		s := steps[i%len(steps)]
		req := &scopedv1.InvokeRequest{Tenant: hostile, User: "m", Extension: s.ext, Payload: []byte(s.payload)}
		_ = st.call(ctx, c, s.kind, req, s.timeout)
	}
}

type report struct {
	o        options
	st       *stats
	kernel   map[string]time.Duration
	ledger   map[string]float64
	restarts []time.Duration
	stop     time.Duration
	baseFDs  int
	fdAfter  []int
	left     []string
	tenants  []string
}

// failures lists what did not hold.
func (r report) failures() []string {
	var bad []string
	if r.st.nUnclear > 0 {
		bad = append(bad, fmt.Sprintf("%d calls without a clear outcome, e.g.:", r.st.nUnclear))
		bad = append(bad, r.st.unclear...)
	}
	for _, tn := range r.tenants {
		k := r.kernel[tn].Seconds()
		if l := r.ledger[tn]; k > 0 && math.Abs(l-k) > 0.01*k {
			bad = append(bad, fmt.Sprintf("%s: ledger %.3f cpu_seconds, kernel %.3f: not within 1 %%", tn, l, k))
		}
	}
	for _, l := range r.left {
		bad = append(bad, "left after stop: "+l)
	}
	// The last restart comes after the load stopped: no workers run.
	if n := len(r.fdAfter); n > 0 && r.fdAfter[n-1] > r.baseFDs+2 {
		bad = append(bad, fmt.Sprintf("daemon fds after the last restart: %d, at the first start %d", r.fdAfter[n-1], r.baseFDs))
	}
	return bad
}

func (r report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n%s\n\n", markStart, sectionTitle)
	fmt.Fprintf(&b, "%s. %s; %s.\n\n", benchmd.Command(baseCommand, r.o.args), benchmd.Machine(), time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "%d well-behaved tenants (warm whoami and 5 ms spins; a new scope every %s each) and one hostile tenant "+
		"(crash mid-call, hang past a 1 s deadline, OOM at 64 MiB, handler error, exec fork bomb at 64 pids, 200 ms spins) "+
		"for %s; the daemon killed with SIGKILL %d times (about every %s) and started again, then stopped with SIGTERM.\n\n",
		r.o.tenants, r.o.coldEvery, r.o.duration, len(r.restarts), r.o.killEvery)
	b.WriteString("| calls | total | outcomes |\n| --- | ---: | --- |\n")
	kinds := make([]string, 0, len(r.st.byKind))
	for k := range r.st.byKind {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		var total int
		var parts []string
		codes := make([]string, 0)
		for c := range r.st.byKind[k] {
			codes = append(codes, c)
		}
		slices.Sort(codes)
		for _, c := range codes {
			total += r.st.byKind[k][c]
			parts = append(parts, fmt.Sprintf("%s %d", c, r.st.byKind[k][c]))
		}
		fmt.Fprintf(&b, "| %s | %d | %s |\n", k, total, strings.Join(parts, ", "))
	}
	fmt.Fprintf(&b, "\nCalls without a clear outcome (Unknown, Internal, no message, or no answer a minute past their deadline): **%d**.\n\n", r.st.nUnclear)
	b.WriteString("| tenant | ledger cpu_seconds | kernel (tenant cgroup, all lives) | ledger / kernel |\n| --- | ---: | ---: | ---: |\n")
	for _, tn := range r.tenants {
		k := r.kernel[tn].Seconds()
		ratio := "—"
		if k > 0 {
			ratio = fmt.Sprintf("%.4f", r.ledger[tn]/k)
		}
		fmt.Fprintf(&b, "| %s | %.3f | %.3f | %s |\n", tn, r.ledger[tn], k, ratio)
	}
	slices.Sort(r.restarts)
	if n := len(r.restarts); n > 0 {
		fmt.Fprintf(&b, "\nRestart after kill -9 (start-up recovery included) to serving: median %s, max %s over %d restarts. "+
			"Clean stop at the end: %s.\n", benchmd.Median(r.restarts).Round(time.Millisecond), r.restarts[n-1].Round(time.Millisecond), n, r.stop.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "Daemon file descriptors: %d at the first start (no worker), %v after each restart (the last one with the load stopped). Left after the stop: %s.\n",
		r.baseFDs, r.fdAfter, leftText(r.left))
	fmt.Fprintf(&b, "%s\n", markEnd)
	return b.String()
}

func leftText(l []string) string {
	if len(l) == 0 {
		return "nothing (no cgroup, process, mount or runtime entry)"
	}
	return strings.Join(l, ", ")
}
