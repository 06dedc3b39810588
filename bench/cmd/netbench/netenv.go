package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"

	"github.com/google/nftables"
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

// newNS makes a network namespace without moving the caller into it.
func newNS() (vnetns.NsHandle, error) {
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return -1, err
	}
	defer orig.Close()
	ns, nerr := vnetns.New()
	if err := vnetns.Set(orig); err != nil {
		// Left locked: the thread dies with its goroutine, never reused
		// in the wrong namespace.
		if nerr == nil {
			ns.Close()
		}
		return -1, fmt.Errorf("back to the benchmark's network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	if nerr != nil {
		return -1, fmt.Errorf("new network namespace: %w", nerr)
	}
	return ns, nil
}

// inNS runs f on a thread in ns and puts the thread back.
func inNS(ns vnetns.NsHandle, f func() error) error {
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := vnetns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := f()
	if err := vnetns.Set(orig); err != nil {
		return errors.Join(ferr, err) // the thread stays locked and dies
	}
	runtime.UnlockOSThread()
	return ferr
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
