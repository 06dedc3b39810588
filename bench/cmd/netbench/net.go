package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/netns"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The benchmark's networks, as the e2e network test's: a "host" namespace
// where a daemon (or an in-process netns.Manager) runs, its uplink up0
// routed to a test-host namespace (th0). Neither has a link to the real
// network, so no packet leaves the machine.
const (
	uplink     = "up0"
	uplinkAddr = "198.18.0.1/24"
	peerIf     = "th0"
	peerAddr   = "198.18.0.2/24"
	peerIP     = "198.18.0.2"
	allowRule  = "198.18.0.2:8080" // the egress tier's one allow-list rule
	scopeVeth  = "scv"             // netns's prefix of the scopes' host-side veths
)

// onThread runs f on a locked thread and puts the thread back into the
// benchmark's network namespace; should that fail, the thread stays locked
// and dies with its goroutine, never reused in the wrong namespace.
func onThread(f func() error) error {
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	ferr := f()
	if err := vnetns.Set(orig); err != nil {
		return errors.Join(ferr, fmt.Errorf("back to the benchmark's network namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// newNS makes a network namespace without moving the caller into it, and
// times the unshare(CLONE_NEWNET).
func newNS() (ns vnetns.NsHandle, took time.Duration, err error) {
	ns = vnetns.None()
	err = onThread(func() (err error) {
		t0 := time.Now()
		ns, err = vnetns.New()
		took = time.Since(t0)
		return err
	})
	if err != nil && ns.IsOpen() {
		ns.Close()
	}
	return ns, took, err
}

// netState is what a network namespace holds that a benchmark could
// change: its ip_forward, and its links and nftables tables that keep
// picks by name.
func netState(ns vnetns.NsHandle, keep func(name string) bool) ([]string, error) {
	var fw []byte
	err := onThread(func() (err error) {
		if err = vnetns.Set(ns); err == nil {
			fw, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	state := []string{"ip_forward " + strings.TrimSpace(string(fw))}
	nl, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	links, err := nl.LinkList()
	nl.Close()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if n := l.Attrs().Name; keep(n) {
			state = append(state, fmt.Sprintf("link %s (%s)", n, l.Type()))
		}
	}
	nc, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return nil, err
	}
	tables, err := nc.ListTables()
	_ = nc.CloseLasting()
	for _, t := range tables {
		if keep(t.Name) {
			state = append(state, "nftables table "+t.Name)
		}
	}
	return state, err
}

// testNet is a host namespace with its uplink to a test-host namespace.
type testNet struct {
	host, th vnetns.NsHandle
	hostNL   *netlink.Handle
	made     []string // the host namespace's netState once made
}

// path is the host namespace's path for nsenter.
func (tn *testNet) path() string { return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(tn.host)) }

func notOurs(name string) bool { return name != "lo" && name != uplink }

// newTestNet makes a host and a test-host namespace joined by a veth.
func newTestNet() (_ *testNet, err error) {
	tn := &testNet{host: -1, th: -1}
	defer func() {
		if err != nil {
			tn.close()
		}
	}()
	if tn.host, _, err = newNS(); err != nil {
		return nil, err
	}
	if tn.th, _, err = newNS(); err != nil {
		return nil, err
	}
	if tn.hostNL, err = netlink.NewHandleAt(tn.host, unix.NETLINK_ROUTE); err != nil {
		return nil, err
	}
	th, err := netlink.NewHandleAt(tn.th, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer th.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: uplink}, PeerName: peerIf, PeerNamespace: netlink.NsFd(int(tn.th))}
	if err := tn.hostNL.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("veth %s: %w", uplink, err)
	}
	for _, x := range []struct {
		h          *netlink.Handle
		name, addr string
	}{{tn.hostNL, uplink, uplinkAddr}, {th, peerIf, peerAddr}} {
		for _, n := range []string{"lo", x.name} {
			l, err := x.h.LinkByName(n)
			if err == nil {
				err = x.h.LinkSetUp(l)
			}
			if err != nil {
				return nil, fmt.Errorf("%s up: %w", n, err)
			}
		}
		l, err := x.h.LinkByName(x.name)
		if err != nil {
			return nil, err
		}
		a, _ := netlink.ParseAddr(x.addr)
		if err := x.h.AddrAdd(l, a); err != nil {
			return nil, fmt.Errorf("address of %s: %w", x.name, err)
		}
	}
	if err := tn.hostNL.RouteAdd(&netlink.Route{Gw: net.ParseIP(peerIP)}); err != nil {
		return nil, fmt.Errorf("default route: %w", err)
	}
	tn.made, err = netState(tn.host, notOurs)
	return tn, err
}

// scopeVeths counts the host-side veths of scope namespaces (pool slots
// and live scopes' networks).
func (tn *testNet) scopeVeths() (int, error) {
	links, err := tn.hostNL.LinkList()
	return len(slices.DeleteFunc(links, func(l netlink.Link) bool {
		return !strings.HasPrefix(l.Attrs().Name, scopeVeth) || l.Type() != "veth"
	})), err
}

// waitVeths waits until tn has n scope veths (a full pool).
func (tn *testNet) waitVeths(n int) error {
	var v int
	full, err := benchmd.Poll(20*time.Second, 10*time.Millisecond, func() (_ bool, err error) {
		v, err = tn.scopeVeths()
		return v >= n, err
	})
	if err == nil && !full {
		err = fmt.Errorf("the namespace pool has %d of %d namespaces after 20 s", v, n)
	}
	return err
}

// leftovers says what a stopped daemon (or a closed manager) left in the
// host namespace: links besides lo and the uplink, nftables tables, a
// changed ip_forward.
func (tn *testNet) leftovers() error {
	now, err := netState(tn.host, notOurs)
	if err == nil && !slices.Equal(now, tn.made) {
		err = fmt.Errorf("the benchmark's host namespace holds %q, made with %q", now, tn.made)
	}
	return err
}

// close closes the namespaces (fds: the kernel removes a namespace and its
// links when nothing holds it any more).
func (tn *testNet) close() {
	if tn.hostNL != nil {
		tn.hostNL.Close()
		tn.hostNL = nil
	}
	for _, ns := range []*vnetns.NsHandle{&tn.host, &tn.th} {
		if *ns >= 0 {
			ns.Close()
			*ns = -1
		}
	}
}

// inprocVariants are the ways of calling netns.Manager.Egress in the
// benchmark's own process: with the manager's pool or without (every
// Egress makes its namespace), with the egress tier's policy (one
// allow-list rule and both caps) or none.
var inprocVariants = []struct {
	name         string
	pool, policy bool
}{
	{"pool, policy", true, true},
	{"pool, no policy", true, false},
	{"no pool, policy", false, true},
	{"no pool, no policy", false, false},
}

// bare is the series of unshare(CLONE_NEWNET) alone.
const bare = "bare unshare"

// inprocResult is the series of each variant's Egress (by name) and
// Net.Close (name + " close") and of bare.
type inprocResult struct {
	series   map[string][]time.Duration
	minReady int // the fewest namespaces ready in the pool before a pooled Egress
}

// measureInproc opens two netns.Managers in namespaces of their own (one
// with a pool of -pool namespaces, one without), and times Egress and
// Net.Close on a fresh cgroup at the daemon's scope depth, and a bare
// unshare(CLONE_NEWNET), round-robin after a pause of -inproc-pace each.
func (b *bench) measureInproc(ctx context.Context) (_ *inprocResult, retErr error) {
	res := &inprocResult{minReady: b.o.poolSize}
	tree, err := benchmd.OpenCgroupRoot(inprocCgroupRoot, logf)
	if err != nil {
		return nil, err
	}
	defer func() { retErr = errors.Join(retErr, benchmd.RemoveCgroupRoot(tree)) }()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	tns, mgrs := map[bool]*testNet{}, map[bool]*netns.Manager{}
	closeAll := func() (err error) {
		for pool, tn := range tns {
			if m := mgrs[pool]; m != nil {
				err = errors.Join(err, m.Close(), tn.leftovers())
			}
			tn.close()
		}
		clear(tns)
		return err
	}
	defer func() { retErr = errors.Join(retErr, closeAll()) }()
	for _, pool := range []bool{true, false} {
		if tns[pool], err = newTestNet(); err != nil {
			return nil, fmt.Errorf("in-process namespaces: %w", err)
		}
		size := -1
		if pool {
			size = b.o.poolSize
		}
		// Scopes sit at <root>/<tier>/<tenant>/<scope>, as the daemon's.
		cfg := netns.Config{Host: tns[pool].host, Uplink: uplink, PoolSize: size, ScopeLevel: 4,
			StateDir: filepath.Join(b.kit.Work, "inproc-pool-"+strconv.FormatBool(pool))}
		if mgrs[pool], err = netns.Open(cfg, log); err != nil {
			return nil, err
		}
	}
	if err := tns[true].waitVeths(b.o.poolSize); err != nil {
		return nil, err
	}
	rule, err := netns.ParseRule(allowRule)
	if err != nil {
		return nil, err
	}
	full := netns.Policy{Allow: []netns.Rule{rule}, Caps: netns.Caps{Egress: uint64(b.o.rate), Ingress: uint64(b.o.rate)}}
	var vs []benchmd.Variant
	seq := 0
	for _, v := range inprocVariants {
		vs = append(vs, benchmd.Variant{Name: v.name, Run: func(_ context.Context, rec func(string, time.Duration)) error {
			seq++
			node, err := tree.Node(cgroups.Limits{}, "tier", "tenant", "s"+strconv.Itoa(seq))
			if err != nil {
				return err
			}
			time.Sleep(b.o.inprocPace) // after the mkdir: its kernel work is not Egress's
			pol := netns.Policy{}
			if v.policy {
				pol = full
			}
			if v.pool {
				n, err := tns[true].scopeVeths()
				if err != nil {
					return err
				}
				res.minReady = min(res.minReady, n)
			}
			t0 := time.Now()
			nt, err := mgrs[v.pool].Egress(node.UnifiedDir(), pol)
			rec(v.name, time.Since(t0))
			if err != nil {
				return fmt.Errorf("Egress: %w", err)
			} else if !nt.Addr().IsValid() {
				return errors.New("Egress: no address")
			}
			t0 = time.Now()
			if err := nt.Close(); err != nil {
				return fmt.Errorf("Close: %w", err)
			}
			rec(v.name+" close", time.Since(t0))
			return node.Remove()
		}})
	}
	vs = append(vs, benchmd.Variant{Name: bare, Run: func(_ context.Context, rec func(string, time.Duration)) error {
		time.Sleep(b.o.inprocPace)
		ns, took, err := newNS()
		if ns.IsOpen() {
			ns.Close()
		}
		rec(bare, took)
		return err
	}})
	if res.series, err = benchmd.RoundRobin(ctx, "in-process: ", 0, b.o.inprocN, 0, vs, logf); err != nil {
		return nil, err
	}
	return res, closeAll()
}
