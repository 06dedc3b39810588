// Command churnbench measures how the daemon, as shipped, holds many scopes
// (density: a daemon filled with -scopes idle scopes against an empty one
// beside it; its stop and its recovery after SIGKILL) and many scopes coming
// and going (churn: -churn scopes created and reaped, then what is left, and
// every id slot taken at once). It writes two sections.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

var logf = benchmd.Logger("churnbench: ", true)

const (
	cgroupMark  = "scoped-bench-churn" // every cgroup root of the benchmark holds it
	tenant      = "churn"
	environment = "production"
	extName     = "whoami"
	callTimeout = 2 * time.Minute

	// maxScopes bounds -scopes: the dense daemons' id ranges must not
	// reach the empty and churn daemons'.
	maxScopes = 6000
	// The daemons' host id ranges: far above the daemon's default and the
	// other benchmarks' (invokebench 1<<29, netbench 5<<28).
	denseIDBase = 1 << 31
	emptyIDBase = denseIDBase + (maxScopes+128)<<16
	churnIDBase = emptyIDBase + 256<<16
)

type options struct {
	scopes, churn, parallel, probes, churnSlots int
	idle, stopWait                              time.Duration
	recovery                                    bool
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
	flag.DurationVar(&o.stopWait, "stop-wait", 10*time.Minute, "density: how long to wait for a stop or a recovery")
	flag.BoolVar(&o.recovery, "recovery", true, "density: also time the recovery after SIGKILL (fills a second daemon)")
	flag.StringVar(&o.daemonLog, "daemon-log", "", "keep a copy of the daemons' logs in this `file`")
	benchmd.Main("churnbench", true, func(ctx context.Context, args string) (_ []string, retErr error) {
		switch {
		case o.scopes < 0 || o.scopes > maxScopes:
			return nil, fmt.Errorf("-scopes %d: must be in 0..%d", o.scopes, maxScopes)
		case o.churn < 0 || o.scopes == 0 && o.churn == 0:
			return nil, errors.New("-churn must not be negative, and -scopes or -churn must be above 0")
		case o.parallel < 1 || o.parallel > 64:
			return nil, fmt.Errorf("-parallel %d: must be in 1..64", o.parallel)
		case o.probes < 1:
			return nil, fmt.Errorf("-probes %d: need at least one", o.probes)
		case o.idle < 100*time.Millisecond || o.idle > time.Minute:
			return nil, fmt.Errorf("-idle %s: must be in 100ms..1m", o.idle)
		case o.churnSlots < o.parallel+1 || o.churnSlots > 1024:
			return nil, fmt.Errorf("-churn-slots %d: must be in -parallel+1..1024", o.churnSlots)
		case o.stopWait < time.Second:
			return nil, fmt.Errorf("-stop-wait %s: at least 1s", o.stopWait)
		}
		b := &bench{o: o}
		var err error
		if b.kit, err = benchmd.NewKit(cgroupMark, logf); err != nil {
			return nil, err
		}
		defer func() { retErr = errors.Join(retErr, b.kit.Close()) }()
		b.kit.Logs, b.kit.Wait = benchmd.LogKeeper{Path: o.daemonLog, Header: true}, o.stopWait
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
	name       string
	cgroupRoot string
	metrics    string // host:port of its /metrics
}

// startDaemon starts a daemon named name on the cgroup root
// /scoped-bench-churn-<name> and deploys whoami. Its configuration is the
// defaults but for the isolation policy, the id range, the idle timeout
// and the metrics address; the one tenant may hold every slot (no
// max_scopes, no early reclaim).
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

// newUser is a user id never used before in this run.
func (b *bench) newUser(prefix string) string {
	return fmt.Sprintf("%s%06d", prefix, b.seq.Add(1))
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

// liveScopes is the number of scopes the daemon lists.
func (dm *daemon) liveScopes(ctx context.Context) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := dm.C.ListScopes(cctx, &scopedv1.ListScopesRequest{})
	return len(resp.GetScopes()), err
}

// fill creates n new scopes on dm, -parallel at a time, each with the
// first invocation of a new user, and returns their latencies in the order
// they started.
func (b *bench) fill(ctx context.Context, dm *daemon, n int, prefix string) ([]time.Duration, error) {
	lat := make([]time.Duration, n)
	var done atomic.Int64
	t0 := time.Now()
	err := benchmd.Parallel(ctx, b.o.parallel, n, func(ctx context.Context, i int) error {
		d, cold, err := dm.invoke(ctx, b.newUser(prefix))
		if err == nil && !cold {
			err = fmt.Errorf("the first invocation of a new user on %s was not cold", dm.name)
		}
		lat[i] = d
		if k := done.Add(1); k%500 == 0 {
			logf("%s: %d/%d scopes in %s", dm.name, k, n, time.Since(t0).Round(time.Second))
		}
		return err
	})
	return lat, err
}
