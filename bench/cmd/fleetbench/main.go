// Command fleetbench measures a fleet of real scoped daemons on loopback
// sharing an etcd embedded in the benchmark: the scopes that move when a
// node leaves, the balance of live scopes through client.DialFleet, the time
// from `kill -9` of a node to the first successful call of one of its
// scopes, and warm calls of a daemon with [fleet] on and off.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/client"
	"github.com/scoped-io/scoped/internal/tlstest"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

var logf = benchmd.Logger("fleetbench: ", true)

const (
	cgroupMark  = "scoped-bench-fleet"
	tenant      = "fleet"
	environment = "production"
	extName     = "whoami"
	token       = "fleetbench-token-0123456789abcdef"
	callTimeout = 30 * time.Second

	// Daemon i's scopes take idSlots ranges of 65536 host ids from idBase +
	// i × idSlots ranges: far from other benchmarks' and the default.
	idBase  = 7 << 29
	idSlots = 256
)

type options struct {
	nodes, scopes, fillCallers, kills, rounds, callers, payload int
	leaseTTL, slice, warmup                                     time.Duration
	daemonLog                                                   string
}

func main() {
	var o options
	flag.IntVar(&o.nodes, "nodes", 5, "nodes the fleet starts with; they leave one by one (SIGTERM) down to 3")
	flag.IntVar(&o.scopes, "scopes", 300, "scope keys ranked, and scopes invoked through the fleet client")
	flag.IntVar(&o.fillCallers, "fill-callers", 4, "concurrent callers invoking the scopes")
	flag.DurationVar(&o.leaseTTL, "lease-ttl", 10*time.Second, "the nodes' [fleet] lease_ttl (whole seconds)")
	flag.IntVar(&o.kills, "kills", 5, "kill -9 repetitions (a node each, in turn, restarted after)")
	flag.IntVar(&o.rounds, "rounds", 10, "[fleet] on vs off: rounds, alternating which goes first")
	flag.IntVar(&o.callers, "callers", 8, "[fleet] on vs off: concurrent callers")
	flag.DurationVar(&o.slice, "duration", 1500*time.Millisecond, "[fleet] on vs off: measured time per variant and round")
	flag.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "[fleet] on vs off: discarded warm-up per variant")
	flag.IntVar(&o.payload, "payload", 1024, "payload bytes of every invocation")
	flag.StringVar(&o.daemonLog, "daemon-log", "", "keep a copy of the daemons' logs in this `file`")
	benchmd.Main("fleetbench", true, func(ctx context.Context, args string) ([]string, error) {
		switch {
		case o.nodes < 3 || o.nodes > 8:
			return nil, errors.New("-nodes must be in 3..8")
		case o.scopes < 10 || o.scopes > 500:
			return nil, errors.New("-scopes must be in 10..500 (each node has 256 id slots)")
		case o.fillCallers < 1 || o.callers < 1 || o.rounds < 1 || o.kills < 1:
			return nil, errors.New("-fill-callers, -callers, -rounds and -kills must be at least 1")
		case o.leaseTTL < 2*time.Second || o.leaseTTL%time.Second != 0:
			return nil, errors.New("-lease-ttl must be whole seconds, at least 2s")
		case o.slice < 10*time.Millisecond || o.warmup < 0:
			return nil, errors.New("-duration must be at least 10ms and -warmup not negative")
		case o.payload < 0 || o.payload > 512<<10:
			return nil, fmt.Errorf("-payload %d: must be in 0..512 KiB", o.payload)
		}
		return run(ctx, o, args)
	})
}

// node is a daemon of the benchmark.
type node struct {
	name string
	d    *benchmd.Daemon
}

// bench is the benchmark's world: the kit, etcd, the CA, the nodes, the
// fleet client.
type bench struct {
	o        options
	kit      *benchmd.Kit
	files    *scopedv1.Bundle
	etcd     *embed.Etcd
	etcdDir  string
	endpoint string
	ca       *tlstest.CA
	nodes    []*node // the fleet's, by index (n1, n2, …)
	fc       *client.FleetClient
	keys     []string // the scope key of each user (rankAll)
	payload  []byte
	work     string // the kit's work directory, for the process check
	loadAvg  string // at the start
}

func run(ctx context.Context, o options, args string) (_ []string, retErr error) {
	b := &bench{o: o, payload: make([]byte, o.payload)}
	for i := range b.payload {
		b.payload[i] = 'a' + byte(i%26)
	}
	defer func() { retErr = errors.Join(retErr, b.close()) }()
	var err error
	if b.kit, err = benchmd.NewKit(cgroupMark, logf); err != nil {
		return nil, err
	}
	b.kit.Logs.Path, b.kit.Logs.Header, b.work, b.loadAvg = o.daemonLog, true, b.kit.Work, b.kit.LoadAvg
	if b.files, err = b.kit.Bundle("./examples/" + extName); err != nil {
		return nil, err
	}
	tlsDir := filepath.Join(b.kit.Work, "tls")
	if err := os.Mkdir(tlsDir, 0o700); err != nil {
		return nil, err
	}
	if b.ca, err = tlstest.NewCAIn(tlsDir); err != nil {
		return nil, err
	}
	if b.etcdDir, err = os.MkdirTemp("", cgroupMark+"-etcd-"); err != nil {
		return nil, err
	}
	if err := b.startEtcd(); err != nil {
		return nil, err
	}
	res := &results{}
	if err := b.measureFleet(ctx, res); err != nil {
		return nil, err
	}
	if err := b.measureOnOff(ctx, res); err != nil {
		return nil, err
	}
	// Clean up before writing, so that the report can say it worked.
	if err := b.close(); err != nil {
		return nil, fmt.Errorf("cleanup: %w", err)
	}
	return []string{b.report(args, res)}, nil
}

// startEtcd starts a single-member etcd on two free loopback ports (picked
// again if another process takes one first), its data in etcdDir.
func (b *bench) startEtcd() error {
	var err error
	for range 5 {
		var ports []int
		if ports, err = freePorts(2); err != nil {
			return err
		}
		cu := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(ports[0])}
		pu := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(ports[1])}
		cfg := embed.NewConfig()
		cfg.Name, cfg.Dir = "fleetbench", filepath.Join(b.etcdDir, "data")
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		var e *embed.Etcd
		if e, err = embed.StartEtcd(cfg); err != nil && strings.Contains(err.Error(), "address already in use") {
			continue
		} else if err != nil {
			return fmt.Errorf("etcd: %w", err)
		}
		select {
		case <-e.Server.ReadyNotify():
			b.etcd, b.endpoint = e, cu.String()
			logf("etcd serving on %s", b.endpoint)
			return nil
		case err = <-e.Err():
		case <-time.After(30 * time.Second):
			err = errors.New("not ready after 30s")
		}
		e.Close()
		return fmt.Errorf("etcd: %w", err)
	}
	return fmt.Errorf("etcd: %w", err)
}

// freePorts picks n distinct loopback ports that nothing listens on now.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// settings is every daemon's configuration; index picks its id range.
// With fleet set it is a node of the benchmark's fleet named name.
func (b *bench) settings(name string, index int, fleet bool) (string, error) {
	s := fmt.Sprintf(`[isolation]
by = ["user"]
[limits]
default_timeout = "30s"
[pool]
warm_min = 0
max_workers = 4
max_concurrent = 16
idle_timeout = "1h"
[scope]
id_base = %d
id_slots = %d
[accounting]
mode = "cgroupfs"
[log]
level = "info"
[metrics]
listen = "off"
[[client]]
name = "fleetbench"
token = %q
tenants = ["*"]
`, idBase+index*idSlots<<16, idSlots, token)
	if !fleet {
		return s, nil
	}
	cert, key, err := b.ca.IssueFiles(name, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return "", err
	}
	ports, err := freePorts(1)
	if err != nil {
		return "", err
	}
	return s + fmt.Sprintf(`[fleet]
endpoints = [%q]
node = %q
listen = "127.0.0.1:%d"
lease_ttl = "%ds"
tls_ca = %q
tls_cert = %q
tls_key = %q
`, b.endpoint, name, ports[0], int(b.o.leaseTTL.Seconds()), b.ca.CertFile(), cert, key), nil
}

// startNode starts the daemon name (index: its id range), a fleet node
// when fleet is set.
func (b *bench) startNode(ctx context.Context, name string, index int, fleet bool) (*node, error) {
	s, err := b.settings(name, index, fleet)
	if err != nil {
		return nil, err
	}
	d, err := b.kit.StartDaemon(ctx, name, "/"+cgroupMark+"-"+name, s)
	if err != nil {
		return nil, fmt.Errorf("daemon %s: %w", name, err)
	}
	return &node{name: name, d: d}, nil
}

// waitView waits until the fleet client lists exactly nodes, and returns
// when it did.
func (b *bench) waitView(nodes []*node) (time.Time, error) {
	var names, seen []string
	for _, n := range nodes {
		names = append(names, n.name)
	}
	slices.Sort(names)
	ok, _ := benchmd.Poll(time.Minute, 5*time.Millisecond, func() (bool, error) {
		seen = seen[:0]
		for _, n := range b.fc.Nodes() {
			seen = append(seen, n.Name)
		}
		return slices.Equal(seen, names), nil
	})
	if !ok {
		return time.Time{}, fmt.Errorf("the fleet client lists %v after a minute, want %v", seen, names)
	}
	return time.Now(), nil
}

// close stops the daemons (while etcd runs: they leave the fleet), the
// fleet client and etcd, removes the kit and etcd's data and checks that
// no cgroup and no process of the benchmark is left. It is safe on a
// partly built bench and twice.
func (b *bench) close() error {
	var errs []error
	if b.fc != nil {
		errs = append(errs, b.fc.Close())
		b.fc = nil
	}
	if b.kit != nil {
		errs = append(errs, b.kit.Close())
		b.kit = nil
	}
	if b.etcd != nil {
		b.etcd.Close()
		b.etcd = nil
	}
	if b.etcdDir != "" {
		errs = append(errs, os.RemoveAll(b.etcdDir))
		b.etcdDir = ""
	}
	if b.work != "" {
		if left := procsUnder(b.work); len(left) > 0 {
			errs = append(errs, fmt.Errorf("processes of the benchmark left: %s", strings.Join(left, ", ")))
		}
	}
	return errors.Join(errs...)
}

// procsUnder lists the processes (as "pid exe") whose executable lies
// below dir: the daemons and scoped-exec (workers in their sandboxes run
// in cgroups, which Kit.Close checks).
func procsUnder(dir string) []string {
	var left []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && strings.HasPrefix(exe, dir+"/") && benchmd.ProcAlive(pid) {
			left = append(left, e.Name()+" "+exe)
		}
	}
	return left
}
