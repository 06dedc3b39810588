package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/scoped-io/scoped/client"
	"github.com/scoped-io/scoped/internal/etcdtest"
	"github.com/scoped-io/scoped/internal/testutil"
	"github.com/scoped-io/scoped/internal/tlstest"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// The harness of the three-node fleet tests (issue 15): a test bridge in
// the host's network namespace with an address of a private /24 that no
// interface or route of this machine uses, a real etcd listening on that
// address, and three real daemons, each in a network namespace of its own
// joined to the bridge by a veth pair, each with its own address, TLS
// certificate (for that address), cgroup root, state and runtime dirs and
// id range. The namespaces have no route beyond the /24 and the bridge no
// port but the test's veths: no packet leaves the machine.
//
// Names: the daemons' own networking (netns package: bridge "scoped0",
// veths "scv…", an nftables table named after the bridge) lives in each
// daemon's namespace, so three daemons do not collide; the test's links
// are named "f3…" (never "scv…", which a daemon in the host's namespace
// would take for its own leftovers and delete).

// fleet3Token is the fleet application's bearer token on every node.
const fleet3Token = "e2e-fleet3-app-token-0123456789abcdef"

// fleet3Port is every node's TLS API port (each has its own namespace).
const fleet3Port = 7443

// fleet3 is a running three-node fleet.
type fleet3 struct {
	t     *testing.T
	br    *testBridge
	etcd  *etcdtest.Server
	ca    *tlstest.CA
	nodes []*f3node // node-a, node-b, node-c
	fc    *client.FleetClient
	fclog *testutil.SyncBuffer // the fleet client's log

	mu     sync.Mutex
	served map[string]map[string]int // tenant → node → invocations the client got a success for
}

// f3node is one daemon of the fleet.
type f3node struct {
	*daemon
	name string
	ip   netip.Addr
	addr string // its TLS API, ip:port
	ns   vnetns.NsHandle
	sock *client.Client // over its unix socket, as root
}

// fleet3Opts shapes the fleet.
type fleet3Opts struct {
	labels map[string][]string // node name → [fleet] labels
	extra  string              // TOML added to every node's configuration
}

// newFleet3 starts the fleet and a fleet client for it; everything goes
// (and is checked gone) when the test ends.
func newFleet3(t *testing.T, o fleet3Opts) *fleet3 {
	t.Helper()
	requireBins(t)
	f := &fleet3{t: t, served: map[string]map[string]int{}}
	f.br = newTestBridge(t)
	f.etcd = etcdtest.StartOn(t, f.br.gw.String())
	f.ca = tlstest.NewCA(t)
	for i, name := range []string{"node-a", "node-b", "node-c"} {
		ns, ip := f.br.addNS(t, i)
		f.nodes = append(f.nodes, &f3node{name: name, ip: ip, addr: net.JoinHostPort(ip.String(), fmt.Sprint(fleet3Port)), ns: ns})
	}
	if len(nsHolders(f.br.nsIDs)) < len(f.nodes) {
		t.Fatalf("the namespace check does not see the test holding its namespaces: it would prove nothing")
	}
	for i, n := range f.nodes {
		f.startNode(i, n, o)
	}
	// The daemons leave the fleet while etcd runs, then etcd stops, before
	// the leak checks (a restarted etcd has sockets of its own).
	t.Cleanup(func() {
		for _, n := range f.nodes {
			if n.killed { // a test that failed half-way: a start cleans up
				n.start()
			}
			n.stop()
		}
		f.etcd.Stop()
	})
	f.fclog = &testutil.SyncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fc, err := client.DialFleet(ctx, client.FleetOptions{
		Endpoints: f.etcd.Endpoints(), CA: f.ca.CertFile(), Token: fleet3Token, Probe: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(f.fclog, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("DialFleet: %v", err)
	}
	f.fc = fc
	t.Cleanup(func() {
		fc.Close()
		if t.Failed() {
			t.Logf("fleet client's log:\n%s", f.fclog.String())
		}
	})
	f.waitMembers(20*time.Second, "node-a", "node-b", "node-c")
	return f
}

// startNode starts node i's daemon in its namespace.
func (f *fleet3) startNode(i int, n *f3node, o fleet3Opts) {
	t := f.t
	cert, key := f.ca.Issue(t, n.name, []net.IP{n.ip.AsSlice()})
	labels := ""
	for _, l := range o.labels[n.name] {
		labels += fmt.Sprintf("%q, ", l)
	}
	n.daemon = startDaemon(t, options{
		isolation: `["environment", "user"]`,
		netns:     fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(n.ns)),
		extra: fmt.Sprintf(`
[scope]
id_base = %d
id_slots = 256
[metering]
flush = "200ms"
[fleet]
endpoints = [%q]
node = %q
listen = %q
lease_ttl = "4s"
labels = [%s]
tls_ca = %q
tls_cert = %q
tls_key = %q
[[client]]
name = "fleet-app"
token = %q
tenants = ["*"]
admin = true
%s`, 1048576+i*256*65536, f.etcd.Endpoints()[0], n.name, n.addr, labels, f.ca.CertFile(), cert, key, fleet3Token, o.extra)})
	n.sock = n.client()
}

// node returns the node named name.
func (f *fleet3) node(name string) *f3node {
	for _, n := range f.nodes {
		if n.name == name {
			return n
		}
	}
	f.t.Fatalf("no node %s", name)
	return nil
}

// nodeAt names the node serving at addr ("" when none).
func (f *fleet3) nodeAt(addr string) string {
	for _, n := range f.nodes {
		if n.addr == addr {
			return n.name
		}
	}
	return ""
}

// members are the live nodes the fleet client sees, by name.
func (f *fleet3) members() []string {
	var out []string
	for _, n := range f.fc.Nodes() {
		out = append(out, n.Name)
	}
	return out
}

// waitMembers waits until the client sees exactly these nodes.
func (f *fleet3) waitMembers(d time.Duration, names ...string) {
	f.t.Helper()
	want := strings.Join(names, ",")
	waitFor(f.t, d, "the fleet client to see nodes "+want, func() bool {
		return strings.Join(f.members(), ",") == want
	})
}

// call is one invocation through the fleet client, with the node that
// answered it.
type call struct {
	resp *scopedv1.InvokeResponse
	node string
	err  error
	at   time.Time // when the answer came
}

// invoke calls ext for tenant's user through the fleet client (marked
// idempotent when idem) and counts a success for the node that answered.
func (f *fleet3) invoke(tenant, user, ext, payload string, idem bool) call {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if idem {
		ctx = client.Idempotent(ctx)
	}
	var p peer.Peer
	r, err := f.fc.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: tenant, Environment: "production", User: user,
		Extension: ext, Payload: []byte(payload)}, grpc.Peer(&p))
	c := call{resp: r, err: err, at: time.Now()}
	if p.Addr != nil {
		c.node = f.nodeAt(p.Addr.String())
	}
	if err == nil {
		f.count(tenant, c.node)
	}
	return c
}

// count records a success of tenant's served by node.
func (f *fleet3) count(tenant, node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.served[tenant] == nil {
		f.served[tenant] = map[string]int{}
	}
	f.served[tenant][node]++
}

// servedBy is how many of tenant's invocations node answered with success.
func (f *fleet3) servedBy(tenant, node string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.served[tenant][node]
}

// scopes lists node n's live scopes of tenant (all tenants when empty).
func (n *f3node) scopes(t *testing.T, tenant string) []*scopedv1.Scope {
	t.Helper()
	r, err := n.sock.ListScopes(context.Background(), &scopedv1.ListScopesRequest{Tenant: tenant})
	if err != nil {
		t.Fatalf("ListScopes on %s: %v", n.name, err)
	}
	return r.GetScopes()
}

// invocations is tenant's invocations meter in n's ledger (GetUsage flushes
// first).
func (n *f3node) invocations(t *testing.T, tenant string) int {
	t.Helper()
	r, err := n.sock.GetUsage(context.Background(), &scopedv1.GetUsageRequest{Tenant: tenant, Meter: "invocations",
		From: timestamppb.New(time.Now().Add(-time.Hour)), To: timestamppb.New(time.Now().Add(time.Hour))})
	if err != nil {
		t.Fatalf("GetUsage on %s: %v", n.name, err)
	}
	var v float64
	for _, row := range r.GetRows() {
		v += row.GetValue()
	}
	return int(v + 0.5)
}

// invokeOn calls ext for tenant's user on node n over its socket.
func (n *f3node) invokeOn(tenant, user, ext, payload string) (*scopedv1.InvokeResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return n.sock.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: tenant, Environment: "production", User: user,
		Extension: ext, Payload: []byte(payload)})
}

// restart starts a killed or stopped node's daemon again (same state dir,
// cgroup root, id range and namespace) and its socket client.
func (f *fleet3) restart(n *f3node) {
	f.t.Helper()
	n.start()
	n.sock = n.client()
}

// testBridge is the test's bridge in the host's namespace and the
// namespaces joined to it.
type testBridge struct {
	name   string
	prefix netip.Prefix // a /24 nothing on this machine uses
	gw     netip.Addr   // the bridge's address (.1): the test and etcd
	veths  []string     // host ends
	nsIDs  []uint64     // the namespaces' inodes
	link   netlink.Link
}

// newTestBridge makes the bridge with an address from a free private /24.
// It and the veths are deleted when the test ends, and a last cleanup
// checks that they, and the namespaces, are gone.
func newTestBridge(t *testing.T) *testBridge {
	t.Helper()
	b := &testBridge{name: fmt.Sprintf("f3br%d", os.Getpid()%1000000)}
	b.prefix = freePrivate24(t)
	b.gw = b.prefix.Addr().Next()
	// Registered first, so it runs last: after the daemons stopped and
	// the namespaces' handles were closed.
	t.Cleanup(func() { b.checkGone(t) })
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: b.name}}); err != nil {
		t.Skipf("cannot make a bridge: %v", err)
	}
	t.Cleanup(func() {
		for _, v := range b.veths {
			if l, err := netlink.LinkByName(v); err == nil {
				if err := netlink.LinkDel(l); err != nil {
					t.Errorf("delete veth %s: %v", v, err)
				}
			}
		}
		if l, err := netlink.LinkByName(b.name); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				t.Errorf("delete bridge %s: %v", b.name, err)
			}
		}
	})
	l, err := netlink.LinkByName(b.name)
	if err != nil {
		t.Fatal(err)
	}
	b.link = l
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: b.gw.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatalf("address of bridge %s: %v", b.name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	t.Logf("test bridge %s at %s/24", b.name, b.gw)
	return b
}

// freePrivate24 picks a /24 of 10.251.0.0/16 that no address or route of
// this machine (any table; the default route aside) overlaps.
func freePrivate24(t *testing.T) netip.Prefix {
	t.Helper()
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var used []netip.Prefix
	for _, a := range addrs {
		if p, ok := prefixOfNet(a.IPNet); ok {
			used = append(used, p)
		}
	}
	for _, r := range routes {
		if p, ok := prefixOfNet(r.Dst); ok && p.Bits() > 0 {
			used = append(used, p)
		}
	}
	start := os.Getpid() % 200
	for i := range 256 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 251, byte((start + i) % 256), 0}), 24)
		free := true
		for _, u := range used {
			if u.Overlaps(p) {
				free = false
				break
			}
		}
		if free {
			return p
		}
	}
	t.Skip("no free /24 in 10.251.0.0/16 on this machine")
	return netip.Prefix{}
}

func prefixOfNet(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok || n.IP.To4() == nil {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones).Masked(), true
}

// addNS makes namespace i (closed when the test ends), joined to the
// bridge by a veth pair, with address .11+i and loopback up.
func (b *testBridge) addNS(t *testing.T, i int) (vnetns.NsHandle, netip.Addr) {
	t.Helper()
	ns := newNS(t)
	var st unix.Stat_t
	if err := unix.Fstat(int(ns), &st); err != nil {
		t.Fatal(err)
	}
	b.nsIDs = append(b.nsIDs, st.Ino)
	host := fmt.Sprintf("f3v%d-%c", os.Getpid()%1000000, 'a'+i)
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}); err != nil {
		t.Skipf("cannot make a veth pair: %v", err)
	}
	b.veths = append(b.veths, host)
	l, err := netlink.LinkByName(host)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetMaster(l, b.link); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	ip := b.gw
	for range 10 + i {
		ip = ip.Next()
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if name == "eth0" {
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	return ns, ip
}

// checkGone fails t unless the bridge, the veths and the namespaces are
// gone (a namespace is gone when no process is in it and no descriptor
// holds it; its veth then goes with it).
func (b *testBridge) checkGone(t *testing.T) {
	var left []string
	for deadline := time.Now().Add(10 * time.Second); ; {
		left = left[:0]
		for _, name := range append([]string{b.name}, b.veths...) {
			if _, err := netlink.LinkByName(name); err == nil || !errors.As(err, new(netlink.LinkNotFoundError)) {
				left = append(left, "link "+name)
			}
		}
		left = append(left, nsHolders(b.nsIDs)...)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, l := range left {
		t.Errorf("leaked: %s", l)
	}
}

// nsHolders lists the processes in, or holding a descriptor of, the
// network namespaces with these inodes.
func nsHolders(inodes []uint64) []string {
	var out []string
	want := map[string]bool{}
	for _, ino := range inodes {
		want[fmt.Sprintf("net:[%d]", ino)] = true
	}
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range pids {
		if l, err := os.Readlink(p + "/ns/net"); err == nil && want[l] {
			out = append(out, fmt.Sprintf("process %s in namespace %s", filepath.Base(p), l))
		}
		fds, _ := os.ReadDir(p + "/fd")
		for _, fd := range fds {
			if l, err := os.Readlink(p + "/fd/" + fd.Name()); err == nil && want[l] {
				out = append(out, fmt.Sprintf("process %s holds namespace %s", filepath.Base(p), l))
			}
		}
	}
	return out
}
