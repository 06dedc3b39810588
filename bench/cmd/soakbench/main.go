// Command soakbench runs scoped under a mixed, partly hostile load, killing it
// with SIGKILL about once a minute and starting it again. It holds if every
// call succeeded or got a clear gRPC code (never Unknown, Internal or a
// hang), the ledger's cpu_seconds match the kernel's count within 1 %,
// nothing is left after the stop, and the daemon's fds after a restart are
// back at the first start's.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
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
	cgroupRoot  = "/scoped-bench-soak"
	cgroupMark  = "scoped-bench-soak"
	environment = "production"
	hostile     = "mallory"
	tier        = "standard"

	settings = `[isolation]
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
	// bombScript fork-bombs into its scope's pids limit in the background
	// and returns at once; the exec runtime must kill what it left.
	bombScript = `#!/bin/sh
bomb() { bomb | bomb & }
( setsid sh -c 'bomb() { bomb | bomb & }; bomb' & ) 2>/dev/null
bomb 2>/dev/null
sleep 0.2
echo done
`
)

type options struct {
	duration, killEvery, coldEvery time.Duration
	tenants                        int
	daemonLog                      string
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 10*time.Minute, "how long the load runs")
	flag.DurationVar(&o.killEvery, "kill-every", 60*time.Second, "kill -9 the daemon about this often (±1/6)")
	flag.IntVar(&o.tenants, "tenants", 4, "well-behaved tenants (plus one hostile one)")
	flag.DurationVar(&o.coldEvery, "cold-every", 2*time.Second, "each well-behaved tenant starts a new scope this often")
	flag.StringVar(&o.daemonLog, "daemon-log", "", "keep a copy of the daemon's logs (every life) in this `file`")
	benchmd.Main("soakbench", true, func(ctx context.Context, args string) ([]string, error) {
		if o.duration < time.Second || o.killEvery < 5*time.Second || o.tenants < 1 || o.coldEvery <= 0 {
			return nil, errors.New("need -duration ≥ 1s, -kill-every ≥ 5s, -tenants ≥ 1, -cold-every > 0")
		}
		return run(ctx, o, args)
	})
}

func run(ctx context.Context, o options, args string) (_ []string, retErr error) {
	kit, err := benchmd.NewKit(cgroupMark, logf)
	if err != nil {
		return nil, err
	}
	defer func() { retErr = errors.Join(retErr, kit.Close()) }()
	kit.Logs.Path, kit.Logs.Header = o.daemonLog, true
	bundles := map[string]*scopedv1.Bundle{"bomb": {Files: []*scopedv1.File{
		{Path: "manifest.toml", Mode: 0o644, Content: []byte("runtime = \"exec\"\nentrypoint = \"bomb.sh\"\n")},
		{Path: "bomb.sh", Mode: 0o755, Content: []byte(bombScript)},
	}}}
	for _, pkg := range []string{"./examples/whoami", "./examples/spin", "./e2e/testdata/misbehave"} {
		if bundles[path.Base(pkg)], err = kit.Bundle(pkg); err != nil {
			return nil, err
		}
	}
	d, err := kit.StartDaemon(ctx, "d", cgroupRoot, settings)
	if err != nil {
		return nil, err
	}
	var tenants []string
	for i := range o.tenants {
		tenants = append(tenants, fmt.Sprintf("tenant%d", i+1))
	}
	for _, tn := range append(slices.Clone(tenants), hostile) {
		exts := []string{"whoami", "spin"}
		if tn == hostile {
			exts = []string{"misbehave", "bomb", "spin"}
		}
		for _, e := range exts {
			if err := d.Deploy(ctx, tn, environment, e, bundles[e]); err != nil {
				return nil, err
			}
		}
	}
	// The callers' own client, kept across the restarts (d.C is not).
	c, err := client.Dial(ctx, d.Socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	baseFDs := fdCount(d.Pid())
	logf("load for %s, kill -9 about every %s; daemon fds at start %d", o.duration, o.killEvery, baseFDs)

	st := &stats{byKind: map[string]map[string]int{}}
	loadCtx, stopLoad := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	for i, tn := range tenants {
		calls := 0
		benchmd.Keep(loadCtx, stopLoad, &wg, 1, func(ctx context.Context) error { // warm calls, back to back
			calls++
			if calls%2 == 1 {
				st.call(ctx, c, "warm whoami", invoke(tn, "warm", "whoami", "x"), 5*time.Second)
			} else {
				st.call(ctx, c, "warm spin 5 ms", invoke(tn, "warm", "spin", "5"), 5*time.Second)
			}
			return nil
		})
		wg.Go(func() { // a new scope every -cold-every
			t := time.NewTicker(o.coldEvery)
			defer t.Stop()
			for j := 0; ; j++ {
				select {
				case <-loadCtx.Done():
					return
				case <-t.C:
				}
				st.call(loadCtx, c, "cold whoami (new scope)", invoke(tn, fmt.Sprintf("u%d-%d", i, j), "whoami", "x"), 10*time.Second)
			}
		})
	}
	step := 0
	benchmd.Keep(loadCtx, stopLoad, &wg, 1, func(ctx context.Context) error { // the hostile tenant's misbehaviours in turn
		s := hostileSteps[step%len(hostileSteps)]
		step++
		st.call(ctx, c, s.kind, invoke(hostile, "m", s.ext, s.payload), s.timeout)
		return nil
	})
	tenants = append(tenants, hostile)

	r := report{o: o, args: args, st: st, keep: kit.Logs.Keep, kernel: map[string]time.Duration{}, ledger: map[string]float64{}, baseFDs: baseFDs, tenants: tenants}
	crash := func() error {
		took, err := r.crash(ctx, d)
		if err == nil {
			r.restarts = append(r.restarts, took)
			r.fdAfter = append(r.fdAfter, fdCount(d.Pid()))
		}
		return err
	}
	end := time.Now().Add(o.duration)
	var loopErr error
	for {
		wait := o.killEvery + time.Duration(rand.Int64N(int64(o.killEvery/3))) - o.killEvery/6
		if time.Now().Add(wait).After(end) || !sleep(ctx, wait) {
			break
		}
		if loopErr = crash(); loopErr != nil {
			break
		}
		logf("kill -9 #%d: serving again after %s; calls so far %d ok, %d refused", len(r.restarts),
			r.restarts[len(r.restarts)-1].Round(time.Millisecond), st.ok.Load(), st.failed.Load())
	}
	if loopErr == nil {
		sleep(ctx, time.Until(end))
	}
	stopLoad(nil)
	wg.Wait()
	if err := errors.Join(loopErr, ctx.Err()); err != nil {
		return nil, err
	}
	// A last crash makes what the kernel counted final; the next start
	// charges what the dead scopes used since the last flush.
	if err := crash(); err != nil {
		return nil, err
	}
	for _, tn := range tenants {
		if r.ledger[tn], err = ledgerCPU(ctx, d.C, tn); err != nil {
			return nil, err
		}
	}
	kit.Forget(d)
	if r.stop, err = d.StopWithin(time.Minute); err != nil {
		return nil, err
	}
	r.left = leftovers(filepath.Join(kit.Work, "daemon-d"))
	text := r.markdown()
	if bad := r.failures(); len(bad) > 0 {
		return []string{text}, fmt.Errorf("the soak did not hold:\n  %s", strings.Join(bad, "\n  "))
	}
	return []string{text}, nil
}

// crash kills the daemon with SIGKILL and its workers (as the next start's
// cleanup would, so that what the kernel counted is final before it is
// read), adds each tenant's CPU from its cgroup to kernel, and starts the
// daemon again, its log in <first log>.<n>.
func (r *report) crash(ctx context.Context, d *benchmd.Daemon) (time.Duration, error) {
	if err := d.Kill(); err != nil {
		return 0, err
	}
	var left []int
	if gone, _ := benchmd.Poll(15*time.Second, 50*time.Millisecond, func() (bool, error) {
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		left = processesIn(cgroupRoot)
		return len(left) == 0, nil
	}); !gone {
		return 0, fmt.Errorf("processes of the killed daemon's scopes do not die: %v", left)
	}
	for _, tn := range r.tenants {
		n, err := cgroups.Load(filepath.Join(cgroupRoot, tier, tn))
		if err != nil {
			continue // no scope of it was live in this life
		}
		s, err := n.Stats()
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return 0, fmt.Errorf("%s's cgroup: %w", tn, err)
		}
		r.kernel[tn] += s.CPUUsage
	}
	if r.firstLog == "" {
		r.firstLog = d.LogPath
	}
	if err := r.keep(d.LogPath); err != nil {
		return 0, err
	}
	return d.Restart(ctx, fmt.Sprintf("%s.%d", r.firstLog, len(r.restarts)+1), time.Minute)
}

// processesIn lists the live processes in the cgroup root and below.
func processesIn(root string) []int {
	pids, _ := benchmd.CgroupProcs(root)
	return slices.DeleteFunc(pids, func(pid int) bool { return !benchmd.ProcAlive(pid) })
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

// stats counts the calls by kind and outcome.
type stats struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	byKind     map[string]map[string]int // kind → "OK" or code → calls
	unclear    []string                  // calls without a clear outcome (the first 50)
	nUnclear   int
}

// call makes one invocation with the daemon-side timeout, under a client
// deadline a minute past it, and records the outcome.
func (s *stats) call(ctx context.Context, c *client.Client, kind string, req *scopedv1.InvokeRequest, timeout time.Duration) {
	req.Environment = environment
	req.Timeout = durationpb.New(timeout)
	cctx, cancel := context.WithTimeout(ctx, timeout+time.Minute)
	defer cancel()
	_, err := c.Invoke(cctx, req)
	code := status.Code(err)
	outcome, unclear := code.String(), ""
	switch {
	case err == nil:
		s.ok.Add(1)
	case ctx.Err() != nil:
		return // the load stopped: not a result
	case cctx.Err() != nil:
		outcome, unclear = "hang", fmt.Sprintf("%s: no answer within %s (hang)", kind, timeout+time.Minute)
	case code == codes.Unknown || code == codes.Internal || status.Convert(err).Message() == "":
		unclear = fmt.Sprintf("%s: %v", kind, err)
	}
	if err != nil {
		s.failed.Add(1)
	}
	s.mu.Lock()
	if unclear != "" {
		s.nUnclear++
		if len(s.unclear) < 50 {
			s.unclear = append(s.unclear, unclear)
		}
	}
	if s.byKind[kind] == nil {
		s.byKind[kind] = map[string]int{}
	}
	s.byKind[kind][outcome]++
	s.mu.Unlock()
	if code == codes.Unavailable { // the daemon may be down: do not spin
		sleep(ctx, 100*time.Millisecond)
	}
}

// sleep waits for d, and says false if ctx was done first.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func invoke(tenant, user, ext, payload string) *scopedv1.InvokeRequest {
	return &scopedv1.InvokeRequest{Tenant: tenant, User: user, Extension: ext, Payload: []byte(payload)}
}

// hostileSteps are the hostile tenant's misbehaviours, made in turn.
var hostileSteps = []struct {
	kind, ext, payload string
	timeout            time.Duration
}{
	{"hostile: crash mid-call", "misbehave", "exit", 5 * time.Second},
	{"hostile: ok", "misbehave", "ok", 5 * time.Second},
	{"hostile: hang past deadline", "misbehave", "hang", time.Second},
	{"hostile: OOM", "misbehave", "oom", 10 * time.Second},
	{"hostile: handler error", "misbehave", "fail", 5 * time.Second},
	{"hostile: fork bomb (exec)", "bomb", "x", 3 * time.Second},
	{"hostile: spin 200 ms", "spin", "200", 5 * time.Second},
}

type report struct {
	o        options
	args     string
	st       *stats
	kernel   map[string]time.Duration
	ledger   map[string]float64
	restarts []time.Duration
	firstLog string
	keep     func(log string) error // a killed life's log, for -daemon-log
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
	b := benchmd.NewReport("soakbench", "## Soak with faults: mixed load, kill -9 every minute")
	b.P("%s. %s; %s.\n\n", benchmd.Command("go run -tags seccomp ./bench/cmd/soakbench", r.args), benchmd.Machine(), time.Now().UTC().Format("2006-01-02"))
	b.P("%d well-behaved tenants (warm whoami and 5 ms spins; a new scope every %s each) and one hostile tenant "+
		"(crash mid-call, hang past a 1 s deadline, OOM at 64 MiB, handler error, exec fork bomb at 64 pids, 200 ms spins) "+
		"for %s; the daemon killed with SIGKILL %d times (about every %s) and started again, then stopped with SIGTERM.\n\n",
		r.o.tenants, r.o.coldEvery, r.o.duration, len(r.restarts), r.o.killEvery)
	b.P("| calls | total | outcomes |\n| --- | ---: | --- |\n")
	for _, k := range slices.Sorted(maps.Keys(r.st.byKind)) {
		var total int
		var parts []string
		for _, c := range slices.Sorted(maps.Keys(r.st.byKind[k])) {
			total += r.st.byKind[k][c]
			parts = append(parts, fmt.Sprintf("%s %d", c, r.st.byKind[k][c]))
		}
		b.P("| %s | %d | %s |\n", k, total, strings.Join(parts, ", "))
	}
	b.P("\nCalls without a clear outcome (Unknown, Internal, no message, or no answer a minute past their deadline): **%d**.\n\n", r.st.nUnclear)
	b.P("| tenant | ledger cpu_seconds | kernel (tenant cgroup, all lives) | ledger / kernel |\n| --- | ---: | ---: | ---: |\n")
	for _, tn := range r.tenants {
		k := r.kernel[tn].Seconds()
		ratio := "—"
		if k > 0 {
			ratio = fmt.Sprintf("%.4f", r.ledger[tn]/k)
		}
		b.P("| %s | %.3f | %.3f | %s |\n", tn, r.ledger[tn], k, ratio)
	}
	if n := len(r.restarts); n > 0 {
		b.P("\nRestart after kill -9 (start-up recovery included) to serving: median %s, max %s over %d restarts. "+
			"Clean stop at the end: %s.\n", benchmd.Median(r.restarts).Round(time.Millisecond),
			slices.Max(r.restarts).Round(time.Millisecond), n, r.stop.Round(time.Millisecond))
	}
	left := "nothing (no cgroup, process, mount or runtime entry)"
	if len(r.left) > 0 {
		left = strings.Join(r.left, ", ")
	}
	b.P("Daemon file descriptors: %d at the first start (no worker), %v after each restart (the last one with the load stopped). Left after the stop: %s.\n",
		r.baseFDs, r.fdAfter, left)
	return b.End()
}
