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

// The benchmark's networks, all in namespaces it makes, as the e2e network
// test's: "host", where a daemon (or an in-process netns.Manager) runs, its
// uplink up0 198.18.0.1/24 with a default route to the test host; "th", the
// test host (th0 198.18.0.2/24). Neither has a link to the real network, so
// no packet leaves the machine, and the real host's ip_forward and nftables
// are never touched.
const (
	uplink     = "up0"
	uplinkAddr = "198.18.0.1/24"
	peerIf     = "th0"
	peerAddr   = "198.18.0.2/24"
	peerIP     = "198.18.0.2"
	allowRule  = "198.18.0.2:8080" // the egress tier's one allow-list rule
	scopeVeth  = "scv"             // netns's prefix of the scopes' host-side veths
)

// testNet is a host namespace with its uplink to a test-host namespace.
type testNet struct {
	host, th vnetns.NsHandle
	hostNL   *netlink.Handle
	forward  string // ip_forward of host when it was made
}

// path is the host namespace's path for nsenter.
func (tn *testNet) path() string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(tn.host))
}

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

// newNS makes a network namespace without moving the caller into it.
func newNS() (vnetns.NsHandle, error) {
	ns := vnetns.None()
	err := onThread(func() (err error) { ns, err = vnetns.New(); return err })
	if err != nil && ns.IsOpen() {
		ns.Close()
	}
	return ns, err
}

// inNS runs f on a thread in ns.
func inNS(ns vnetns.NsHandle, f func() error) error {
	return onThread(func() error {
		if err := vnetns.Set(ns); err != nil {
			return err
		}
		return f()
	})
}

// newTestNet makes a host and a test-host namespace joined by a veth.
func newTestNet() (_ *testNet, retErr error) {
	tn := &testNet{host: -1, th: -1}
	defer func() {
		if retErr != nil {
			tn.close()
		}
	}()
	var err error
	if tn.host, err = newNS(); err != nil {
		return nil, err
	}
	if tn.th, err = newNS(); err != nil {
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
			if err != nil {
				return nil, err
			}
			if err := x.h.LinkSetUp(l); err != nil {
				return nil, fmt.Errorf("%s up: %w", n, err)
			}
		}
		l, err := x.h.LinkByName(x.name)
		if err != nil {
			return nil, err
		}
		a, err := netlink.ParseAddr(x.addr)
		if err != nil {
			return nil, err
		}
		if err := x.h.AddrAdd(l, a); err != nil {
			return nil, fmt.Errorf("address of %s: %w", x.name, err)
		}
	}
	if err := tn.hostNL.RouteAdd(&netlink.Route{Gw: net.ParseIP(peerIP)}); err != nil {
		return nil, fmt.Errorf("default route: %w", err)
	}
	if tn.forward, err = tn.ipForward(); err != nil {
		return nil, err
	}
	return tn, nil
}

func (tn *testNet) ipForward() (string, error) {
	var v string
	err := inNS(tn.host, func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// scopeVeths counts the host-side veths of scope namespaces (pool slots
// and live scopes' networks).
func (tn *testNet) scopeVeths() (int, error) {
	links, err := tn.hostNL.LinkList()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, scopeVeth) && l.Type() == "veth" {
			n++
		}
	}
	return n, nil
}

// leftovers lists what a stopped daemon (or a closed manager) left in the
// host namespace: links besides lo and the uplink, nftables tables, a
// changed ip_forward.
func (tn *testNet) leftovers() error {
	var left []string
	links, err := tn.hostNL.LinkList()
	if err != nil {
		return err
	}
	for _, l := range links {
		if n := l.Attrs().Name; n != "lo" && n != uplink {
			left = append(left, fmt.Sprintf("link %s (%s)", n, l.Type()))
		}
	}
	nc, err := nftables.New(nftables.WithNetNSFd(int(tn.host)))
	if err != nil {
		return err
	}
	tables, err := nc.ListTables()
	_ = nc.CloseLasting()
	if err != nil {
		return err
	}
	for _, t := range tables {
		left = append(left, "nftables table "+t.Name)
	}
	if fw, err := tn.ipForward(); err != nil {
		return err
	} else if fw != tn.forward {
		left = append(left, fmt.Sprintf("ip_forward %s (was %s)", fw, tn.forward))
	}
	if len(left) > 0 {
		return fmt.Errorf("left in the benchmark's host namespace: %s", strings.Join(left, ", "))
	}
	return nil
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

// realHost is what the benchmark checks of the real host's network, before
// and after: its ip_forward and that no scoped link exists there.
type realHost struct {
	forward string
	links   []string // scoped's bridge or scope veths, if any
}

func readRealHost() (realHost, error) {
	var r realHost
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		return r, err
	}
	r.forward = strings.TrimSpace(string(b))
	links, err := netlink.LinkList()
	if err != nil {
		return r, err
	}
	for _, l := range links {
		if n := l.Attrs().Name; n == "scoped0" || strings.HasPrefix(n, scopeVeth) || n == uplink {
			r.links = append(r.links, n)
		}
	}
	return r, nil
}

// inprocVariant is one way of calling netns.Manager.Egress in the
// benchmark's own process.
type inprocVariant struct {
	name   string
	pool   bool // the manager keeps a pool (else every Egress makes its namespace)
	policy bool // one allow-list rule and both caps (else none)
}

var inprocVariants = []inprocVariant{
	{"pool, policy", true, true},
	{"pool, no policy", true, false},
	{"no pool, policy", false, true},
	{"no pool, no policy", false, false},
}

// inprocResult is the Egress and Close times of each variant.
type inprocResult struct {
	egress, close map[string][]time.Duration
	minReady      int             // the fewest namespaces ready in the pool before a pooled Egress
	bare          []time.Duration // unshare(CLONE_NEWNET) alone, on a locked thread
}

// manager is an in-process netns.Manager in a host namespace of its own.
type manager struct {
	tn *testNet
	m  *netns.Manager
}

// measureInproc opens two netns.Managers in namespaces of their own (one
// with a pool of -pool namespaces, one without), and times Egress and
// Net.Close on a fresh cgroup at the daemon's scope depth, round-robin over
// the variants, after a pause of -inproc-pace each.
func (b *bench) measureInproc(ctx context.Context) (_ *inprocResult, retErr error) {
	res := &inprocResult{egress: map[string][]time.Duration{}, close: map[string][]time.Duration{}, minReady: b.o.poolSize}
	tree, err := benchmd.OpenCgroupRoot(inprocCgroupRoot, logf)
	if err != nil {
		return res, err
	}
	defer func() { retErr = errors.Join(retErr, benchmd.RemoveCgroupRoot(tree)) }()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Scopes sit at <root>/<tier>/<tenant>/<scope>, as the daemon's.
	const level = 4
	mgrs := map[bool]*manager{}
	defer func() {
		for _, mg := range mgrs {
			if mg.m != nil {
				retErr = errors.Join(retErr, mg.m.Close())
				retErr = errors.Join(retErr, mg.tn.leftovers())
			}
			mg.tn.close()
		}
	}()
	for _, pool := range []bool{true, false} {
		tn, err := newTestNet()
		if err != nil {
			return res, fmt.Errorf("in-process namespaces: %w", err)
		}
		mg := &manager{tn: tn}
		mgrs[pool] = mg
		size := -1
		if pool {
			size = b.o.poolSize
		}
		state := filepath.Join(b.kit.Work, "inproc-pool-"+strconv.FormatBool(pool))
		if mg.m, err = netns.Open(netns.Config{Host: tn.host, Uplink: uplink, PoolSize: size, ScopeLevel: level, StateDir: state}, log); err != nil {
			return res, err
		}
	}
	if err := waitVeths(mgrs[true].tn, b.o.poolSize); err != nil {
		return res, err
	}
	rule, err := netns.ParseRule(allowRule)
	if err != nil {
		return res, err
	}
	full := netns.Policy{Allow: []netns.Rule{rule}, Caps: netns.Caps{Egress: uint64(b.o.rate), Ingress: uint64(b.o.rate)}}
	seq := 0
	for i := range b.o.inprocN {
		for k := range inprocVariants {
			if err := ctx.Err(); err != nil {
				return res, fmt.Errorf("interrupted: %w", err)
			}
			v := inprocVariants[(i+k)%len(inprocVariants)]
			mg := mgrs[v.pool]
			seq++
			node, err := tree.Node(cgroups.Limits{}, "tier", "tenant", "s"+strconv.Itoa(seq))
			if err != nil {
				return res, err
			}
			pol := netns.Policy{}
			if v.policy {
				pol = full
			}
			time.Sleep(b.o.inprocPace)
			if v.pool {
				n, err := mg.tn.scopeVeths()
				if err != nil {
					return res, err
				}
				res.minReady = min(res.minReady, n)
			}
			t0 := time.Now()
			nt, err := mg.m.Egress(node.UnifiedDir(), pol)
			t1 := time.Now()
			if err != nil {
				return res, fmt.Errorf("Egress (%s): %w", v.name, err)
			}
			if !nt.Addr().IsValid() {
				return res, fmt.Errorf("Egress (%s): no address", v.name)
			}
			t2 := time.Now()
			err = nt.Close()
			t3 := time.Now()
			if err != nil {
				return res, fmt.Errorf("Close (%s): %w", v.name, err)
			}
			res.egress[v.name] = append(res.egress[v.name], t1.Sub(t0))
			res.close[v.name] = append(res.close[v.name], t3.Sub(t2))
			if err := node.Remove(); err != nil {
				return res, err
			}
		}
		time.Sleep(b.o.inprocPace)
		d, err := bareNamespace()
		if err != nil {
			return res, err
		}
		res.bare = append(res.bare, d)
	}
	for _, pool := range []bool{true, false} {
		mg := mgrs[pool]
		err := mg.m.Close()
		mg.m = nil
		if err != nil {
			return res, err
		}
		if err := mg.tn.leftovers(); err != nil {
			return res, err
		}
	}
	logf("in-process Egress: %d per variant", b.o.inprocN)
	return res, nil
}

// waitVeths waits until tn has n scope veths (a full pool).
func waitVeths(tn *testNet, n int) error {
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

// bareNamespace times unshare(CLONE_NEWNET) of a locked thread (what
// making a namespace costs before any link is in it) and closes it.
func bareNamespace() (d time.Duration, err error) {
	ns := vnetns.None()
	err = onThread(func() (err error) {
		t0 := time.Now()
		ns, err = vnetns.New()
		d = time.Since(t0)
		return err
	})
	if ns.IsOpen() {
		ns.Close()
	}
	return d, err
}
