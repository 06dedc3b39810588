package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/client"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// testNet is the world of a network test, all in namespaces the test makes:
// "host", where the daemon runs (its uplink up0 is 198.18.0.1/24, its
// default route points at the test host), and "th", the test host
// (198.18.0.2 and .3, and a fake metadata server at 169.254.169.254). No
// packet can leave the machine: neither namespace has a link to the real
// network.
type testNet struct {
	host, th vnetns.NsHandle
	hostPath string
	sinkMu   sync.Mutex
	sink     [][]int64 // per connection to the sink, bytes per 100 ms
}

// newNS makes a network namespace without moving the test into it.
func newNS(t *testing.T) vnetns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := vnetns.New()
	if err != nil {
		t.Skipf("cannot make a network namespace: %v", err)
	}
	if err := vnetns.Set(orig); err != nil {
		panic(err) // the thread is locked: never reused in the wrong namespace
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// in runs f on a thread in ns (sockets made there stay there).
func in(t *testing.T, ns vnetns.NsHandle, f func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if err := vnetns.Set(ns); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := vnetns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
	}()
	f()
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	tn := &testNet{host: newNS(t), th: newNS(t)}
	tn.hostPath = fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(tn.host))
	h, err := netlink.NewHandleAt(tn.host, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	th, err := netlink.NewHandleAt(tn.th, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "th0", PeerNamespace: netlink.NsFd(int(tn.th))}); err != nil {
		t.Skipf("cannot make a veth pair: %v", err)
	}
	up := func(h *netlink.Handle, name string, addrs ...string) {
		for _, n := range []string{"lo", name} {
			l, err := h.LinkByName(n)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
		}
		l, _ := h.LinkByName(name)
		for _, a := range addrs {
			pa, err := netlink.ParseAddr(a)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.AddrAdd(l, pa); err != nil {
				t.Fatal(err)
			}
		}
	}
	up(h, "up0", "198.18.0.1/24")
	up(th, "th0", "198.18.0.2/24", "198.18.0.3/32", "198.18.0.4/32", "169.254.169.254/32")
	if err := h.RouteAdd(&netlink.Route{Gw: net.ParseIP("198.18.0.2")}); err != nil {
		t.Fatal(err)
	}
	// The test host's services.
	in(t, tn.th, func() {
		for addr, banner := range map[string]string{
			"198.18.0.2:8080": "allowed", "198.18.0.2:8081": "other-port", "198.18.0.3:8080": "other-host",
			"198.18.0.4:7000": "tenant-own", "169.254.169.254:80": "metadata",
		} {
			tn.banner(t, addr, banner)
		}
		tn.udpEcho(t, "198.18.0.2:5353")
		tn.udpEcho(t, "198.18.0.3:5353")
		tn.sinkAt(t, "198.18.0.2:9000")
		tn.sourceAt(t, "198.18.0.2:9001")
	})
	return tn
}

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// banner answers every connection with a word and closes it.
func (tn *testNet) banner(t *testing.T, addr, word string) {
	ln := listen(t, addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(word))
			c.Close()
		}
	}()
}

func (tn *testNet) udpEcho(t *testing.T, addr string) {
	c, err := net.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteTo(append([]byte("pong:"), buf[:n]...), from)
		}
	}()
}

// sinkAt counts what each connection sends, per 100 ms.
func (tn *testNet) sinkAt(t *testing.T, addr string) {
	ln := listen(t, addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				start := time.Now()
				var ticks []int64
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					i := int(time.Since(start) / (100 * time.Millisecond))
					for len(ticks) <= i {
						ticks = append(ticks, 0)
					}
					ticks[i] += int64(n)
					if err != nil {
						break
					}
				}
				tn.sinkMu.Lock()
				tn.sink = append(tn.sink, ticks)
				tn.sinkMu.Unlock()
			}()
		}
	}()
}

// sourceAt sends to each connection as fast as it takes it.
func (tn *testNet) sourceAt(t *testing.T, addr string) {
	ln := listen(t, addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
}

type probeResult struct {
	OK     bool     `json:"ok"`
	Err    string   `json:"err"`
	Errno  string   `json:"errno"`
	Banner string   `json:"banner"`
	Ticks  []int64  `json:"ticks"`
	Addrs  []string `json:"addrs"`
}

func probe(t *testing.T, c *client.Client, tenant string, req map[string]any) probeResult {
	t.Helper()
	payload, _ := json.Marshal(req)
	out, err := invoke(c, tenant, "production", "netprobe", string(payload))
	if err != nil {
		t.Fatalf("netprobe %s for %s: %v", payload, tenant, err)
	}
	var r probeResult
	if err := json.Unmarshal(out.GetResult(), &r); err != nil {
		t.Fatalf("netprobe result %q: %v", out.GetResult(), err)
	}
	return r
}

// rateOf is the bytes per second of ticks (100 ms each) from 1.5 s on: past
// the bucket, TCP's slow start and the loss recoveries of its first second
// (a stalled tick and the burst after it).
func rateOf(ticks []int64, upTo int) float64 {
	var sum int64
	n := 0
	for i := 15; i < len(ticks) && i < upTo; i++ {
		sum += ticks[i]
		n++
	}
	if n == 0 {
		return 0
	}
	return float64(sum) / (float64(n) / 10)
}

// TestEgressNetwork: a tier with network = "egress" gives each scope its
// own namespace behind scoped's bridge; the allow-list (the tier's and the
// tenant's) holds, the host, other scopes, loopback and link-local metadata
// are refused whatever a list says, the bandwidth caps hold within 10 %, a
// "none" scope has loopback only, and the daemon leaves nothing behind,
// also after kill -9.
func TestEgressNetwork(t *testing.T) {
	requireBins(t)
	tn := newTestNet(t)
	const rate = 1_000_000
	d := startDaemon(t, options{netns: tn.hostPath, extra: fmt.Sprintf(`
[tiers.net]
network = "egress"
egress_allow = ["198.18.0.2:8080,5353,9000,9001"]
egress_rate = %d
ingress_rate = %d
[tiers.closed]
network = "none"
[network]
uplink = "up0"
pool_size = 2
`, rate, rate)})
	c := d.client()
	defer c.Close()
	ctx := context.Background()
	for tenant, tier := range map[string]string{"acme": "net", "globex": "net", "initech": "closed"} {
		if _, err := c.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: tenant, Tier: tier}); err != nil {
			t.Fatal(err)
		}
		deploy(t, c, tenant, "production", "netprobe", bins.netprobe)
	}
	// The manifest asks for egress: refused in a tier without it.
	if _, err := invoke(c, "initech", "production", "netprobe", `{"op":"info"}`); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "needs network egress") {
		t.Errorf("egress extension in a none tier: %v, want FailedPrecondition", err)
	}
	// The same extension, its manifest silent: what the tier gives.
	plain := t.TempDir()
	for _, f := range []string{"netprobe", "manifest.toml"} {
		b, err := os.ReadFile(filepath.Join(bins.netprobe, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "manifest.toml" {
			b = []byte(strings.ReplaceAll(string(b), `network = "egress"`, ""))
		}
		if err := os.WriteFile(filepath.Join(plain, f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	deploy(t, c, "initech", "production", "netprobe", plain)
	// The host's own services, on all its addresses (loopback, uplink,
	// bridge), reachable from the host itself.
	in(t, tn.host, func() { tn.banner(t, ":8082", "host") })

	dial := func(tenant, network, addr string) probeResult {
		return probe(t, c, tenant, map[string]any{"op": "dial", "net": network, "addr": addr})
	}
	wantOK := func(r probeResult, what, banner string) {
		t.Helper()
		if !r.OK || !strings.HasPrefix(r.Banner, banner) {
			t.Errorf("%s: want reachable (%q), got %+v", what, banner, r)
		}
	}
	wantRefused := func(r probeResult, what string, errnos ...string) {
		t.Helper()
		if r.OK {
			t.Errorf("%s: reachable (%q), want refused", what, r.Banner)
			return
		}
		if len(errnos) == 0 {
			errnos = []string{"EPERM"}
		}
		for _, e := range errnos {
			if r.Errno == e {
				return
			}
		}
		t.Errorf("%s: refused with %q (%s), want %v", what, r.Errno, r.Err, errnos)
	}

	wantOK(dial("acme", "tcp", "198.18.0.2:8080"), "allowed destination", "allowed")
	wantOK(dial("acme", "udp", "198.18.0.2:5353"), "allowed UDP destination", "pong")
	wantRefused(dial("acme", "tcp", "198.18.0.2:8081"), "allowed host, other port")
	wantRefused(dial("acme", "tcp", "198.18.0.3:8080"), "other host")
	wantRefused(dial("acme", "udp", "198.18.0.3:5353"), "other host, UDP connect")
	wantRefused(dial("acme", "udp-sendto", "198.18.0.3:5353"), "other host, UDP sendto")
	wantRefused(dial("acme", "tcp", "198.18.0.4:7000"), "the tenant's destination before its list")

	// The tenant's own list adds to the tier's, live.
	if _, err := c.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "acme", Tier: "net", SetEgressAllow: true,
		EgressAllow: []string{"198.18.0.4:7000"}}); err != nil {
		t.Fatal(err)
	}
	wantOK(dial("acme", "tcp", "198.18.0.4:7000"), "the tenant's own destination", "tenant-own")
	wantRefused(dial("globex", "tcp", "198.18.0.4:7000"), "another tenant's destination")
	if _, err := c.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "acme", Tier: "net", SetEgressAllow: true,
		EgressAllow: []string{"not-a-cidr"}}); err == nil {
		t.Error("an invalid allow-list rule was taken")
	}

	// Never reachable, even with everything allowed: the host (loopback,
	// uplink, bridge addresses), other scopes, link-local metadata, the
	// daemon's socket. The fake metadata server is reachable from the host:
	// the refusal is the policy's, not the routes'.
	if _, err := c.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "acme", Tier: "net", SetEgressAllow: true,
		EgressAllow: []string{"0.0.0.0/0"}}); err != nil {
		t.Fatal(err)
	}
	in(t, tn.host, func() {
		for addr, want := range map[string]string{"169.254.169.254:80": "metadata", "198.18.0.1:8082": "host", "127.0.0.1:8082": "host"} {
			conn, err := net.DialTimeout("tcp4", addr, 2*time.Second)
			if err != nil {
				t.Fatalf("control: the host cannot reach %s: %v", addr, err)
			}
			b, _ := io.ReadAll(conn)
			conn.Close()
			if string(b) != want {
				t.Fatalf("control: %s said %q", addr, b)
			}
		}
	})
	info := probe(t, c, "globex", map[string]any{"op": "info"})
	var globexAddr string
	for _, a := range info.Addrs {
		if strings.HasPrefix(a, "eth0 ") && strings.Contains(a, ".") {
			globexAddr = strings.Split(strings.TrimPrefix(a, "eth0 "), "/")[0]
		}
	}
	if globexAddr == "" {
		t.Fatalf("globex's scope has no eth0 address: %v", info.Addrs)
	}
	if sc, err := c.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: "globex.production"}); err != nil || sc.GetNetworkAddr() != globexAddr {
		t.Errorf("inspect globex.production: network addr %q (%v), the scope has %s", sc.GetNetworkAddr(), err, globexAddr)
	}
	wantRefused(dial("acme", "tcp", "169.254.169.254:80"), "metadata")
	wantRefused(dial("acme", "tcp", "198.18.0.1:8082"), "the host's uplink address")
	wantRefused(dial("acme", "tcp", "10.213.0.1:8082"), "the host's bridge address")
	wantRefused(dial("acme", "tcp", globexAddr+":8082"), "another scope")
	wantRefused(dial("acme", "tcp", "127.0.0.1:8082"), "the host's loopback", "ECONNREFUSED") // the scope's own loopback: nothing there
	wantRefused(dial("acme", "unix", d.socket), "the daemon's socket", "ENOENT")
	wantOK(dial("acme", "tcp", "198.18.0.3:8080"), "other host with everything allowed", "other-host")
	wantOK(dial("acme", "tcp", "198.18.0.2:8081"), "other port with everything allowed", "other-port")
	wantOK(dial("acme", "udp", "198.18.0.3:5353"), "other host, UDP, with everything allowed", "pong")

	// A "none" scope: loopback only.
	info = probe(t, c, "initech", map[string]any{"op": "info"})
	for _, a := range info.Addrs {
		if !strings.HasPrefix(a, "lo ") {
			t.Errorf("a network = none scope has %s", a)
		}
	}
	wantRefused(dial("initech", "tcp", "198.18.0.2:8080"), "from a none scope", "ENETUNREACH")
	if sc, err := c.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: "initech.production"}); err != nil || sc.GetNetworkAddr() != "" {
		t.Errorf("inspect initech.production: network addr %q (%v), want none", sc.GetNetworkAddr(), err)
	}

	// Bandwidth caps, both ways, 4 s each (rates from 1.5 s to 4 s).
	tn.sinkMu.Lock()
	tn.sink = nil
	tn.sinkMu.Unlock()
	if r := probe(t, c, "globex", map[string]any{"op": "send", "addr": "198.18.0.2:9000", "seconds": 4}); !r.OK {
		t.Fatalf("send: %+v", r)
	}
	var egress float64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		tn.sinkMu.Lock()
		if len(tn.sink) == 1 {
			egress = rateOf(tn.sink[0], 40)
		}
		tn.sinkMu.Unlock()
		if egress > 0 {
			break
		}
	}
	r := probe(t, c, "globex", map[string]any{"op": "recv", "addr": "198.18.0.2:9001", "seconds": 4})
	if !r.OK {
		t.Fatalf("recv: %+v", r)
	}
	ingress := rateOf(r.Ticks, 40)
	t.Logf("caps %d B/s: egress %.0f B/s (%.3f), ingress %.0f B/s (%.3f)", rate, egress, egress/rate, ingress, ingress/rate)
	for what, got := range map[string]float64{"egress": egress, "ingress": ingress} {
		if got < 0.9*rate || got > 1.1*rate {
			t.Errorf("%s: %.0f bytes/s, want %d ± 10 %%", what, got, rate)
		}
	}

	// kill -9, start again: what the dead daemon left is removed.
	d.kill9()
	d.start()
	wantOK(dial("acme", "tcp", "198.18.0.2:8080"), "allowed destination after a restart", "allowed")
	d.stop()

	h, err := netlink.NewHandleAt(tn.host, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	links, _ := h.LinkList()
	for _, l := range links {
		if n := l.Attrs().Name; n != "lo" && n != "up0" {
			t.Errorf("link %s (%s) left after the daemon stopped", n, l.Type())
		}
	}
	if nc, err := nftables.New(nftables.WithNetNSFd(int(tn.host))); err == nil {
		tables, _ := nc.ListTables()
		for _, tb := range tables {
			t.Errorf("nftables table %s left after the daemon stopped", tb.Name)
		}
		nc.CloseLasting()
	}
	in(t, tn.host, func() {
		if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(b)) != "0" {
			t.Errorf("ip_forward left at %s", b)
		}
	})
	if _, leaked := programsLeft(t, d.logs.String()); len(leaked) > 0 {
		t.Errorf("BPF programs left after the daemon stopped: %v", leaked)
	}
}
