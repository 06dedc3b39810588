package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/client"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// The daemons' host id ranges: far above the daemon's default (1048576)
// and the other benchmarks' (invokebench 1<<29, netbench 5<<28). The dense
// daemons' maxScopes+64 slots of 65536 ids end below emptyIDBase.
const (
	denseIDBase = 1 << 31
	emptyIDBase = denseIDBase + (maxScopes+128)<<16
	churnIDBase = emptyIDBase + 256<<16

	callTimeout = 2 * time.Minute
)

// bench is the benchmark's world: the binaries it built and the daemons it
// runs.
type bench struct {
	o     options
	kit   *benchmd.Kit
	files *scopedv1.Bundle

	mu      sync.Mutex
	daemons []*daemon // running
	seq     atomic.Int64

	elapsed time.Duration
}

// daemon is one running daemon of the benchmark and a client of it.
type daemon struct {
	name       string
	cgroupRoot string
	metrics    string // host:port of its /metrics
	d          *benchmd.Daemon
	c          *client.Client
}

func newBench(o options) (_ *bench, retErr error) {
	b := &bench{o: o}
	var err error
	if b.kit, err = benchmd.NewKit(cgroupMark, logf); err != nil {
		return nil, err
	}
	b.kit.Logs = benchmd.LogKeeper{Path: o.daemonLog, Header: true}
	if b.files, err = b.kit.Bundle("./examples/" + extName); err != nil {
		return nil, errors.Join(err, b.close())
	}
	return b, nil
}

// settings is a daemon's configuration without the paths: the defaults
// but for the isolation policy, the id range, the idle timeout, the
// metrics address and, for the warnings of a stop, the log level. The one
// tenant may hold every slot: no max_scopes, no early reclaim.
func settings(idBase, idSlots int, idle time.Duration, metrics string) string {
	return fmt.Sprintf(`[isolation]
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
`, idle.String(), idBase, idSlots, metrics)
}

// freePort is a loopback port free now.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startDaemon starts a daemon named name on the cgroup root
// /scoped-bench-churn-<name>, connects to it and deploys whoami.
func (b *bench) startDaemon(ctx context.Context, name string, idBase, idSlots int, idle time.Duration) (*daemon, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	dm := &daemon{name: name, cgroupRoot: "/" + cgroupMark + "-" + name, metrics: addr}
	dm.d, err = b.kit.StartDaemon(ctx, name, dm.cgroupRoot, settings(idBase, idSlots, idle, addr))
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.daemons = append(b.daemons, dm)
	b.mu.Unlock()
	if err := dm.connect(ctx); err != nil {
		return nil, err
	}
	if _, err := dm.c.Deploy(ctx, &scopedv1.DeployRequest{Tenant: tenant, Environment: environment, Name: extName, Bundle: b.files}); err != nil {
		return nil, fmt.Errorf("deploy %s to %s: %w", extName, name, err)
	}
	return dm, nil
}

func (dm *daemon) connect(ctx context.Context) error {
	var err error
	dm.c, err = client.Dial(ctx, dm.d.Socket)
	return err
}

// forget takes dm off the running daemons, closing its client.
func (b *bench) forget(dm *daemon) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, x := range b.daemons {
		if x == dm {
			b.daemons = append(b.daemons[:i], b.daemons[i+1:]...)
		}
	}
	if dm.c != nil {
		_ = dm.c.Close()
		dm.c = nil
	}
}

// stopDaemon stops dm with SIGTERM (waiting up to -stop-wait), keeps its
// log if asked to, and checks that it removed its cgroup root. It returns
// how long the daemon took to stop.
func (b *bench) stopDaemon(dm *daemon) (time.Duration, error) {
	b.forget(dm)
	return b.kit.StopDaemon(dm.d, b.o.stopWait)
}

// close stops the daemons still running, removes everything the
// benchmark created and checks that no cgroup of it is left. It is safe on
// a partly built bench.
func (b *bench) close() error {
	var errs []error
	b.mu.Lock()
	running := b.daemons
	b.daemons = nil
	b.mu.Unlock()
	for _, dm := range running {
		if dm.c != nil {
			_ = dm.c.Close()
		}
		_, err := dm.d.StopWithin(b.o.stopWait)
		errs = append(errs, err)
	}
	return errors.Join(append(errs, b.kit.Close())...)
}

// newUser is a user id never used before in this run.
func (b *bench) newUser(prefix string) string {
	return fmt.Sprintf("%s%06d", prefix, b.seq.Add(1))
}

// invoke calls whoami as user and returns the client's latency, and
// whether the daemon started a worker for it.
func (dm *daemon) invoke(ctx context.Context, user string) (time.Duration, bool, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	t0 := time.Now()
	resp, err := dm.c.Invoke(cctx, &scopedv1.InvokeRequest{Tenant: tenant, Environment: environment, User: user, Extension: extName})
	took := time.Since(t0)
	if err != nil {
		return took, false, fmt.Errorf("invoke as %s on %s: %w", user, dm.name, err)
	}
	return took, resp.GetFigures().GetCold(), nil
}

// liveScopes is the number of scopes the daemon lists.
func (dm *daemon) liveScopes(ctx context.Context) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := dm.c.ListScopes(cctx, &scopedv1.ListScopesRequest{})
	if err != nil {
		return 0, err
	}
	return len(resp.GetScopes()), nil
}

// fill creates n new scopes on dm, parallel at a time, each with the
// first invocation of a new user, and returns their latencies in the order
// they started.
func (b *bench) fill(ctx context.Context, dm *daemon, n int, prefix string) ([]time.Duration, error) {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, b.o.parallel)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var done atomic.Int64
	t0 := time.Now()
	for range b.o.parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				d, cold, err := dm.invoke(ctx, b.newUser(prefix))
				if err == nil && !cold {
					err = fmt.Errorf("the first invocation of a new user on %s was not cold", dm.name)
				}
				if err != nil {
					errc <- err
					cancel()
					return
				}
				lat[i] = d
				if k := done.Add(1); k%500 == 0 {
					logf("%s: %d/%d scopes in %s", dm.name, k, n, time.Since(t0).Round(time.Second))
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return nil, err
	}
	return lat, ctx.Err()
}
