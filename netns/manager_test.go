//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package netns

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/nftables"
	"github.com/scoped-io/scoped/internal/testutil"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The manager's tests run in two namespaces of their own, joined by a veth:
// "host", which the manager treats as the host's (Config.Host), and "peer",
// a stand-in for the network beyond the uplink:
//
//	host: up0 198.18.0.1/24, default via 198.18.0.2  <->  peer: th0 198.18.0.2/24
//
// The real host's network is never touched.
const (
	mgrUplink   = "up0"
	mgrUplinkIP = "198.18.0.1"
	mgrPeerIP   = "198.18.0.2"
	mgrPeerPort = 8080
	mgrBanner   = "scoped-manager-test"
)

// mgrNet is a test's host and peer namespaces.
type mgrNet struct {
	host, peer     vnetns.NsHandle
	hostNL, peerNL *netlink.Handle
}

// newTestNS makes a network namespace, closed when t ends, without moving
// the calling thread.
func newTestNS(t *testing.T) vnetns.NsHandle {
	t.Helper()
	var ns vnetns.NsHandle
	var err error
	func() {
		runtime.LockOSThread()
		orig, gerr := vnetns.Get()
		if gerr != nil {
			runtime.UnlockOSThread()
			err = gerr
			return
		}
		defer orig.Close()
		ns, err = vnetns.New()
		if serr := vnetns.Set(orig); serr != nil {
			// Left locked: the thread dies with the goroutine.
			panic(fmt.Sprintf("cannot return to the test's network namespace: %v", serr))
		}
		runtime.UnlockOSThread()
	}()
	if err != nil {
		t.Fatalf("new network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// inTestNS runs f on a locked thread in ns and puts the thread back.
func inTestNS(t *testing.T, ns vnetns.NsHandle, f func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	if err := vnetns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("enter a test namespace: %v", err)
	}
	defer func() {
		if err := vnetns.Set(orig); err != nil {
			// Left locked: the thread dies with the goroutine.
			t.Errorf("return to the test's network namespace: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	f()
}

// newMgrNet makes the host and peer namespaces, or skips t where the kernel
// lacks veth, bridge or nftables.
func newMgrNet(t *testing.T) *mgrNet {
	t.Helper()
	testutil.RequiresRoot(t)
	tn := &mgrNet{host: newTestNS(t), peer: newTestNS(t)}
	var err error
	if tn.hostNL, err = netlink.NewHandleAt(tn.host, unix.NETLINK_ROUTE); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tn.hostNL.Close)
	if tn.peerNL, err = netlink.NewHandleAt(tn.peer, unix.NETLINK_ROUTE); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tn.peerNL.Close)

	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: mgrUplink}, PeerName: "th0", PeerNamespace: netlink.NsFd(int(tn.peer))}
	if err := tn.hostNL.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			t.Skipf("needs veth links: %v", err)
		}
		t.Fatalf("veth: %v", err)
	}
	if err := tn.hostNL.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "scprobe0"}}); err != nil {
		t.Skipf("needs bridges: %v", err)
	}
	if l, err := tn.hostNL.LinkByName("scprobe0"); err == nil {
		_ = tn.hostNL.LinkDel(l)
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(tn.host)))
	if err != nil {
		t.Skipf("needs nftables: %v", err)
	}
	probe := c.AddTable(&nftables.Table{Name: "scprobe0", Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		t.Skipf("needs nftables (inet tables): %v", err)
	}
	c.DelTable(probe)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}

	for _, side := range []struct {
		h      *netlink.Handle
		name   string
		prefix string
	}{{tn.hostNL, mgrUplink, mgrUplinkIP + "/24"}, {tn.peerNL, "th0", mgrPeerIP + "/24"}} {
		for _, name := range []string{"lo", side.name} {
			l, err := side.h.LinkByName(name)
			if err != nil {
				t.Fatal(err)
			}
			if name != "lo" {
				ipn, _ := netlink.ParseIPNet(side.prefix)
				if err := side.h.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
					t.Fatalf("address %s: %v", side.prefix, err)
				}
			}
			if err := side.h.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
		}
	}
	up, err := tn.hostNL.LinkByName(mgrUplink)
	if err != nil {
		t.Fatal(err)
	}
	if err := tn.hostNL.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: net.ParseIP(mgrPeerIP)}); err != nil {
		t.Fatalf("default route: %v", err)
	}
	return tn
}

// mgrLog is a logger writing to t's output.
func mgrLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// config is the tests' configuration: defaults but for what the test
// namespaces need.
func (tn *mgrNet) config(t *testing.T, level uint32, pool int) Config {
	return Config{Host: tn.host, Uplink: mgrUplink, ScopeLevel: level, StateDir: t.TempDir(), PoolSize: pool}
}

// openManager opens a manager that t closes at its end if the test did not.
func openManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	m, err := Open(cfg, mgrLog(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

// ipForward is /proc/sys/net/ipv4/ip_forward of the host namespace.
func (tn *mgrNet) ipForward(t *testing.T) string {
	t.Helper()
	var b []byte
	var err error
	inTestNS(t, tn.host, func() { b, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward") })
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// bridge is the host namespace's link name if it is a bridge, else nil.
func (tn *mgrNet) bridge(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := tn.hostNL.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	if l.Type() != "bridge" {
		t.Fatalf("%s is a %s, not a bridge", name, l.Type())
	}
	return l
}

// scvLinks are the names of the host namespace's links with the scopes'
// prefix (on the bridge master only, if master > 0).
func (tn *mgrNet) scvLinks(t *testing.T, master int) []string {
	t.Helper()
	links, err := tn.hostNL.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		a := l.Attrs()
		if strings.HasPrefix(a.Name, hostPrefix) && (master <= 0 || a.MasterIndex == master) {
			out = append(out, a.Name)
		}
	}
	slices.Sort(out)
	return out
}

// nftTable is the host namespace's inet table name with its chains, or nil.
func (tn *mgrNet) nftTable(t *testing.T, name string) []string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(tn.host)))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatalf("list nftables tables: %v", err)
	}
	if !slices.ContainsFunc(tables, func(tb *nftables.Table) bool { return tb.Name == name }) {
		return nil
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatalf("list nftables chains: %v", err)
	}
	out := []string{}
	for _, ch := range chains {
		if ch.Table.Name == name {
			out = append(out, ch.Name)
		}
	}
	slices.Sort(out)
	return out
}

// waitFor polls cond for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// checkNothingLeft checks that the host namespace has nothing of a manager
// with cfg any more.
func (tn *mgrNet) checkNothingLeft(t *testing.T, cfg Config, fwdBefore string) {
	t.Helper()
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if l, err := tn.hostNL.LinkByName(cfg.Bridge); err == nil {
		t.Errorf("link %s (%s) left", cfg.Bridge, l.Type())
	}
	// Veths whose peers were in a crashed process's namespaces go when
	// the kernel has destroyed those.
	var scv []string
	if !waitFor(3*time.Second, func() bool { scv = tn.scvLinks(t, 0); return len(scv) == 0 }) {
		t.Errorf("links left: %v", scv)
	}
	if chains := tn.nftTable(t, cfg.Bridge); chains != nil {
		t.Errorf("nftables table %s left (chains %v)", cfg.Bridge, chains)
	}
	if got := tn.ipForward(t); got != fwdBefore {
		t.Errorf("ip_forward %s, want %s as before", got, fwdBefore)
	}
	state := (&Manager{cfg: cfg}).forwardState()
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file %s: %v, want it gone", state, err)
	}
}

// checkTbf checks the root qdisc of the link: a TBF at rate, or none if 0.
func checkTbf(t *testing.T, h *netlink.Handle, name string, rate uint64) {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	qs, err := h.QdiscList(l)
	if err != nil {
		t.Fatal(err)
	}
	var tbf *netlink.Tbf
	for _, q := range qs {
		if q.Attrs().Parent != netlink.HANDLE_ROOT {
			continue
		}
		if q, ok := q.(*netlink.Tbf); ok {
			tbf = q
		}
	}
	switch {
	case rate == 0 && tbf != nil:
		t.Errorf("%s: TBF at %d B/s, want none", name, tbf.Rate)
	case rate != 0 && tbf == nil:
		t.Errorf("%s: no TBF, want one at %d B/s (qdiscs %v)", name, rate, qs)
	case rate != 0 && tbf.Rate != rate:
		t.Errorf("%s: TBF at %d B/s, want %d", name, tbf.Rate, rate)
	}
}

// netHandle is a netlink handle in the Net's namespace, opened by its path.
func netHandle(t *testing.T, n *Net) *netlink.Handle {
	t.Helper()
	ns, err := vnetns.GetFromPath(n.Path())
	if err != nil {
		t.Fatalf("open %s: %v", n.Path(), err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// listen serves the banner and the client's address on addr in the peer
// namespace until t ends.
func (tn *mgrNet) listen(t *testing.T, addr string) {
	t.Helper()
	var l net.Listener
	var err error
	inTestNS(t, tn.peer, func() { l, err = net.Listen("tcp4", addr) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s %s\n", mgrBanner, c.RemoteAddr())
			c.Close()
		}
	}()
}

// The helper process of the manager's tests: "dial" dials from a Net's
// namespace and prints what it got; "crash" opens a manager, takes a Net,
// says it is ready and waits to be killed.
const (
	mgrHelperResult = "MANAGER-HELPER-RESULT "
	mgrHelperReady  = "MANAGER-HELPER-READY"
)

type mgrHelperJob struct {
	Mode    string
	NetPath string   // dial: the namespace to dial from
	Dials   []string // dial: ip:port
	Host    string   // crash: the host namespace's path
	Level   uint32   // crash
	Scope   string   // crash: the scope cgroup to take a Net for
	State   string   // crash: StateDir
}

type mgrHelperRes struct {
	Got    map[string]string // dial → "ok <banner>", "eperm" or the error
	Cgroup string            // the helper's unified cgroup
	Err    string
}

// mgrHelperName is the helper process of the manager's tests; its argument is
// the mgrHelperJob as JSON.
var mgrHelperName = testutil.Helper("netns-manager", func(args []string) int {
	if len(args) != 1 {
		return 2
	}
	spec := args[0]
	res := mgrHelperRes{Got: map[string]string{}}
	var job mgrHelperJob
	err := json.Unmarshal([]byte(spec), &job)
	if err == nil {
		switch job.Mode {
		case "dial":
			err = mgrHelperDial(job, &res)
		case "crash":
			err = mgrHelperCrash(job)
		default:
			err = fmt.Errorf("mode %q", job.Mode)
		}
	}
	if err != nil {
		res.Err = err.Error()
	}
	b, _ := json.Marshal(res)
	fmt.Printf("\n%s%s\n", mgrHelperResult, b)
	return 0
})

func mgrHelperDial(job mgrHelperJob, res *mgrHelperRes) error {
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok {
				res.Cgroup = p
			}
		}
	}
	// This thread only; never unlocked: the process exits after.
	runtime.LockOSThread()
	fd, err := unix.Open(job.NetPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", job.NetPath, err)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", job.NetPath, err)
	}
	unix.Close(fd)
	for _, d := range job.Dials {
		got, err := mgrDial(d)
		switch {
		case err == nil:
			res.Got[d] = "ok " + got
		case errors.Is(err, unix.EPERM):
			res.Got[d] = "eperm"
		default:
			res.Got[d] = err.Error()
		}
	}
	return nil
}

// mgrDial connects to addr with a socket of the calling thread's namespace
// and reads the first line.
func mgrDial(addr string) (string, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return "", err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 3}
	for _, opt := range []int{unix.SO_SNDTIMEO, unix.SO_RCVTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			return "", err
		}
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}); err != nil {
		return "", err
	}
	var out []byte
	buf := make([]byte, 256)
	for !slices.Contains(out, '\n') {
		n, err := unix.Read(fd, buf)
		if err != nil {
			return string(out), err
		}
		if n == 0 {
			break
		}
		out = append(out, buf[:n]...)
	}
	return strings.TrimSpace(string(out)), nil
}

func mgrHelperCrash(job mgrHelperJob) error {
	host, err := vnetns.GetFromPath(job.Host)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	m, err := Open(Config{Host: host, Uplink: mgrUplink, ScopeLevel: job.Level, StateDir: job.State, PoolSize: 2}, log)
	if err != nil {
		return err
	}
	if _, err := m.Egress(job.Scope, Policy{Allow: []Rule{{Prefix: netip.MustParsePrefix(mgrPeerIP + "/32")}}}); err != nil {
		return err
	}
	fmt.Println(mgrHelperReady)
	time.Sleep(time.Minute)
	return errors.New("not killed")
}

// mgrHelper starts the helper process in the cgroup dir ("": the test's).
func mgrHelper(t *testing.T, dir string, job mgrHelperJob) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	spec, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	cmd := testutil.HelperCommandContext(ctx, t, mgrHelperName, string(spec))
	cmd.Stderr = t.Output()
	if dir != "" {
		cg, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer cg.Close()
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("helper process: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, bufio.NewScanner(out)
}

// mgrHelperOutput reads the helper's result.
func mgrHelperOutput(t *testing.T, sc *bufio.Scanner) mgrHelperRes {
	t.Helper()
	var lines []string
	for sc.Scan() {
		if b, ok := strings.CutPrefix(sc.Text(), mgrHelperResult); ok {
			var res mgrHelperRes
			if err := json.Unmarshal([]byte(b), &res); err != nil {
				t.Fatalf("helper result %q: %v", b, err)
			}
			if res.Err != "" {
				t.Fatalf("helper process: %s", res.Err)
			}
			return res
		}
		lines = append(lines, sc.Text())
	}
	t.Fatalf("helper process said no result:\n%s", strings.Join(lines, "\n"))
	return mgrHelperRes{}
}

// crashManager runs a helper process that opens a manager in the host
// namespace and takes a Net, and kills it.
func (tn *mgrNet) crashManager(t *testing.T, cfg Config, scope string) {
	t.Helper()
	cmd, sc := mgrHelper(t, "", mgrHelperJob{Mode: "crash", Host: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(tn.host)),
		Level: cfg.ScopeLevel, Scope: scope, State: cfg.StateDir})
	var lines []string
	ready := false
	for !ready && sc.Scan() {
		ready = sc.Text() == mgrHelperReady
		lines = append(lines, sc.Text())
	}
	if !ready {
		t.Fatalf("helper process did not get ready:\n%s", strings.Join(lines, "\n"))
	}
	if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("helper process: %v, want killed", err)
	}
}

// policyPrograms are the ids of the manager's programs.
func policyPrograms(t *testing.T, m *Manager) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	o := m.pol.objs
	for _, p := range []*ebpf.Program{o.PolicyConnect4, o.PolicyConnect6, o.PolicySendmsg4, o.PolicySendmsg6, o.PolicyEgress} {
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, ok := info.ID()
		if !ok {
			t.Skip("needs program ids (Linux 4.13)")
		}
		ids = append(ids, id)
	}
	return ids
}

// loadedPrograms are the ids of the BPF programs loaded, with their names.
func loadedPrograms(t *testing.T) map[ebpf.ProgramID]string {
	t.Helper()
	out := map[ebpf.ProgramID]string{}
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return out
		}
		if err != nil {
			t.Fatalf("next program id: %v", err)
		}
		id = next
		out[id] = ""
		if p, err := ebpf.NewProgramFromID(id); err == nil {
			if info, err := p.Info(); err == nil {
				out[id] = info.Name
			}
			p.Close()
		}
	}
}

// TestManagerEgress opens a manager, takes a Net and checks the bridge,
// rules, addresses, caps and that a scope's process reaches what it may
// (through NAT) and only that.
func TestManagerEgress(t *testing.T) {
	mnt := requirePolicy(t)
	tn := newMgrNet(t)
	scope, worker, _, level := policyCgroups(t, mnt)
	fwdBefore := tn.ipForward(t)
	cfg := tn.config(t, level, 2)
	m := openManager(t, cfg)

	br := tn.bridge(t, DefaultBridge)
	if br == nil {
		t.Fatalf("no bridge %s", DefaultBridge)
	}
	mac := slices.Clone(br.Attrs().HardwareAddr)
	if len(mac) != 6 || mac[0]&1 != 0 || mac[0]&2 == 0 {
		t.Errorf("bridge address %s: want a unicast, locally administered one", mac)
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		t.Error("bridge down")
	}
	gw := netip.MustParsePrefix("10.213.0.1/16")
	addrs, err := tn.hostNL.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == gw.String() }) {
		t.Errorf("bridge addresses %v, want %s", addrs, gw)
	}
	if got, want := tn.nftTable(t, DefaultBridge), []string{"forward", "input", "postrouting"}; !slices.Equal(got, want) {
		t.Errorf("nftables table %s: chains %v, want %v", DefaultBridge, got, want)
	}
	if got := tn.ipForward(t); got != "1" {
		t.Errorf("ip_forward %s after Open, want 1", got)
	}
	if fwdBefore == "0" {
		if b, err := os.ReadFile(m.forwardState()); err != nil || strings.TrimSpace(string(b)) != "0" {
			t.Errorf("state file: %q, %v; want 0", b, err)
		}
	}

	n, err := m.Egress(scope, Policy{Allow: mustRules(t, mgrPeerIP+":8080"), Caps: Caps{Egress: 1e6, Ingress: 2e6}})
	if err != nil {
		t.Fatalf("Egress: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = DefaultSubnet
	}
	if !cfg.Subnet.Contains(n.Addr()) || n.Addr() == gw.Addr() || n.Addr() == cfg.Subnet.Addr() {
		t.Errorf("scope address %s: want a host address of %s other than the gateway", n.Addr(), cfg.Subnet)
	}

	// The scope's namespace.
	nh := netHandle(t, n)
	lo, err := nh.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Error("lo down in the scope's namespace")
	}
	eth, err := nh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if eth.Attrs().Flags&net.FlagUp == 0 {
		t.Error("eth0 down in the scope's namespace")
	}
	addrs, err = nh.AddrList(eth, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	want := netip.PrefixFrom(n.Addr(), 16).String()
	if len(addrs) != 1 || addrs[0].IPNet.String() != want {
		t.Errorf("eth0 addresses %v, want %s", addrs, want)
	}
	routes, err := nh.RouteList(eth, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
		return (r.Dst == nil || isZeroMask(r.Dst.Mask)) && r.Gw.Equal(gw.Addr().AsSlice())
	}) {
		t.Errorf("routes %v: no default route via %s", routes, gw.Addr())
	}

	// The host's end: an isolated port of the bridge.
	hl, err := tn.hostNL.LinkByName(n.s.hostIf)
	if err != nil {
		t.Fatal(err)
	}
	if hl.Type() != "veth" || hl.Attrs().MasterIndex != br.Attrs().Index || hl.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("host end %s: a %s, master %d, flags %v; want an up veth on the bridge (%d)",
			hl.Attrs().Name, hl.Type(), hl.Attrs().MasterIndex, hl.Attrs().Flags, br.Attrs().Index)
	}
	if pi, err := tn.hostNL.LinkGetProtinfo(hl); err != nil {
		t.Errorf("bridge port flags: %v", err)
	} else if !pi.Isolated {
		t.Errorf("bridge port %s not isolated (%s)", hl.Attrs().Name, pi.String())
	}
	if got := tn.scvLinks(t, br.Attrs().Index); !slices.Contains(got, n.s.hostIf) {
		t.Errorf("bridge ports %v, want %s among them", got, n.s.hostIf)
	}

	// Caps: egress on the scope's end, ingress on the host's.
	checkTbf(t, nh, "eth0", 1e6)
	checkTbf(t, tn.hostNL, n.s.hostIf, 2e6)

	// Traffic: from a process in the scope's cgroup and namespace.
	tn.listen(t, net.JoinHostPort(mgrPeerIP, strconv.Itoa(mgrPeerPort)))
	tn.listen(t, net.JoinHostPort(mgrPeerIP, strconv.Itoa(mgrPeerPort+1)))
	allowed := net.JoinHostPort(mgrPeerIP, strconv.Itoa(mgrPeerPort))
	dials := []string{allowed, net.JoinHostPort(mgrPeerIP, strconv.Itoa(mgrPeerPort+1)),
		net.JoinHostPort(mgrUplinkIP, "8080"), net.JoinHostPort(gw.Addr().String(), "8080")}
	_, sc := mgrHelper(t, worker, mgrHelperJob{Mode: "dial", NetPath: n.Path(), Dials: dials})
	res := mgrHelperOutput(t, sc)
	rel, _ := filepath.Rel(mnt, worker)
	if res.Cgroup != "/"+rel {
		t.Errorf("helper process in cgroup %q, want /%s", res.Cgroup, rel)
	}
	// The peer sees the uplink's address: the scope's was masqueraded.
	if got, wantPrefix := res.Got[allowed], "ok "+mgrBanner+" "+mgrUplinkIP+":"; !strings.HasPrefix(got, wantPrefix) {
		t.Errorf("dial %s: %q, want %q...", allowed, got, wantPrefix)
	}
	for _, d := range dials[1:] {
		if got := res.Got[d]; got != "eperm" {
			t.Errorf("dial %s: %q, want eperm", d, got)
		}
	}

	// Update: other caps, then none.
	if err := n.Update(Policy{Allow: mustRules(t, mgrPeerIP+":8080"), Caps: Caps{Egress: 5e5, Ingress: 4e6}}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	checkTbf(t, nh, "eth0", 5e5)
	checkTbf(t, tn.hostNL, n.s.hostIf, 4e6)
	if err := n.Update(Policy{Allow: mustRules(t, mgrPeerIP+":8080")}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	checkTbf(t, nh, "eth0", 0)
	checkTbf(t, tn.hostNL, n.s.hostIf, 0)

	// The bridge kept its address with a port added.
	if br = tn.bridge(t, DefaultBridge); br == nil || br.Attrs().HardwareAddr.String() != mac.String() {
		t.Errorf("bridge address changed from %s", mac)
	}
}

// TestManagerPool checks the addresses Nets get and the pool's refill.
func TestManagerPool(t *testing.T) {
	mnt := requirePolicy(t)
	tn := newMgrNet(t)
	scope, _, _, level := policyCgroups(t, mnt)

	t.Run("pool", func(t *testing.T) {
		const pool = 2
		m := openManager(t, tn.config(t, level, pool))
		brIdx := m.bridge.Attrs().Index
		ports := func(want int) {
			t.Helper()
			var got []string
			if !waitFor(5*time.Second, func() bool { got = tn.scvLinks(t, brIdx); return len(got) == want }) {
				t.Fatalf("bridge ports %v, want %d", got, want)
			}
		}
		ports(pool)
		n1, err := m.Egress(scope, Policy{})
		if err != nil {
			t.Fatal(err)
		}
		n2, err := m.Egress(scope, Policy{})
		if err != nil {
			t.Fatal(err)
		}
		defer n2.Close()
		if n1.Addr() == n2.Addr() {
			t.Errorf("two Nets with address %s", n1.Addr())
		}
		ports(2 + pool)
		if _, err := m.Egress(filepath.Join(scope, "no-such-cgroup"), Policy{}); err == nil {
			t.Error("Egress for a missing cgroup succeeded")
		}
		idx, hostIf := n1.s.idx, n1.s.hostIf
		if err := n1.Close(); err != nil {
			t.Fatalf("Net.Close: %v", err)
		}
		if err := n1.Close(); err != nil {
			t.Errorf("second Net.Close: %v", err)
		}
		if l, err := tn.hostNL.LinkByName(hostIf); err == nil {
			t.Errorf("%s (%s) left after Net.Close", hostIf, l.Type())
		}
		m.mu.Lock()
		used := m.used[idx]
		m.mu.Unlock()
		if used {
			t.Errorf("address %s still in use after Net.Close", n1.Addr())
		}
		ports(1 + pool)
		n3, err := m.Egress(scope, Policy{})
		if err != nil {
			t.Fatal(err)
		}
		defer n3.Close()
		if n3.Addr() == n2.Addr() {
			t.Errorf("two Nets with address %s", n3.Addr())
		}
		ports(2 + pool)
	})

	t.Run("no-pool", func(t *testing.T) {
		m := openManager(t, tn.config(t, level, -1))
		var nets []*Net
		for range 3 {
			n, err := m.Egress(scope, Policy{})
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			nets = append(nets, n)
		}
		want := []string{"10.213.0.2", "10.213.0.3", "10.213.0.4"}
		for i, n := range nets {
			if n.Addr().String() != want[i] {
				t.Errorf("Net %d: address %s, want %s", i, n.Addr(), want[i])
			}
		}
		if got := tn.scvLinks(t, m.bridge.Attrs().Index); len(got) != 3 {
			t.Errorf("bridge ports %v, want 3 without a pool", got)
		}
		old := nets[1].Addr()
		if err := nets[1].Close(); err != nil {
			t.Fatal(err)
		}
		n, err := m.Egress(scope, Policy{})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		if n.Addr() != old {
			t.Errorf("Net after a Close: address %s, want the freed %s", n.Addr(), old)
		}
	})
}

// TestManagerCloseLeavesNothing checks that Close removes everything,
// closing the Nets still open too.
func TestManagerCloseLeavesNothing(t *testing.T) {
	mnt := requirePolicy(t)
	tn := newMgrNet(t)
	scope, _, _, level := policyCgroups(t, mnt)
	testutil.CheckLeaks(t)
	fwdBefore := tn.ipForward(t)
	before := loadedPrograms(t)
	cfg := tn.config(t, level, 2)
	m, err := Open(cfg, mgrLog(t))
	if err != nil {
		t.Fatal(err)
	}
	ids := policyPrograms(t, m)
	n, err := m.Egress(scope, Policy{Allow: mustRules(t, mgrPeerIP), Caps: Caps{Egress: 1e6}})
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	for at, c := range attachedPrograms(t, scope) {
		if c != 1 {
			t.Errorf("%d %s programs attached to the scope, want 1", c, at)
		}
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	tn.checkNothingLeft(t, cfg, fwdBefore)
	for at, c := range attachedPrograms(t, scope) {
		if c != 0 {
			t.Errorf("%d %s programs attached to the scope after Close", c, at)
		}
	}
	if _, err := m.Egress(scope, Policy{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Egress after Close: %v, want ErrClosed", err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("Net.Close after Close: %v", err)
	}
	// The kernel frees programs after an RCU grace period.
	var left []string
	waitFor(5*time.Second, func() bool {
		left = nil
		for id, name := range loadedPrograms(t) {
			_, old := before[id]
			if slices.Contains(ids, id) || (!old && strings.HasPrefix(name, "policy_")) {
				left = append(left, fmt.Sprintf("%d (%s)", id, name))
			}
		}
		return len(left) == 0
	})
	if len(left) > 0 {
		t.Errorf("programs still loaded after Close: %v", left)
	}
}

// TestManagerNetUpdateAfterClose checks that a closed Net, or a Net of a
// closed manager, refuses Update instead of changing anything (or
// panicking).
func TestManagerNetUpdateAfterClose(t *testing.T) {
	mnt := requirePolicy(t)
	tn := newMgrNet(t)
	scope, _, _, level := policyCgroups(t, mnt)
	m := openManager(t, tn.config(t, level, -1))
	update := func(what string, n *Net) {
		t.Helper()
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("Update %s panicked: %v", what, r)
			}
		}()
		if err := n.Update(Policy{Allow: mustRules(t, mgrPeerIP)}); err == nil {
			t.Errorf("Update %s succeeded", what)
		}
	}
	n, err := m.Egress(scope, Policy{Allow: mustRules(t, mgrPeerIP)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	update("of a closed Net", n)
	if c := mapEntries(t, m.pol.objs.PolicyAllow); c != 0 {
		t.Errorf("%d allow-list entries after Update of a closed Net, want 0", c)
	}
	n, err = m.Egress(scope, Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	update("after the manager's Close", n)
}

// TestManagerEgressKeepsThreadNamespace calls Egress (without a pool: the
// namespace is made on the caller's thread) from a thread in the host
// namespace, as the daemon does with Config.Host unset, and checks that the
// thread is still there after.
func TestManagerEgressKeepsThreadNamespace(t *testing.T) {
	mnt := requirePolicy(t)
	tn := newMgrNet(t)
	scope, _, _, level := policyCgroups(t, mnt)
	inTestNS(t, tn.host, func() {
		cfg := tn.config(t, level, -1)
		cfg.Uplink = "" // the default route's: up0
		m, err := Open(cfg, mgrLog(t))
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if m.uplink != mgrUplink {
			t.Errorf("uplink %q, want %s (of the default route)", m.uplink, mgrUplink)
		}
		n, err := m.Egress(scope, Policy{})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		cur, err := vnetns.Get()
		if err != nil {
			t.Fatal(err)
		}
		defer cur.Close()
		if !cur.Equal(tn.host) {
			t.Errorf("Egress left the calling thread in another network namespace (%s, want %s)", cur, tn.host)
		}
	})
}

// TestManagerCrashLeftovers kills a process with an open manager and checks
// that what it left is removed by the next Open and by Cleanup.
func TestManagerCrashLeftovers(t *testing.T) {
	mnt := requirePolicy(t)
	tn := newMgrNet(t)
	scope, _, _, level := policyCgroups(t, mnt)
	fwdBefore := tn.ipForward(t)
	cfg := tn.config(t, level, 2)
	leftovers := func(t *testing.T) {
		t.Helper()
		if tn.bridge(t, DefaultBridge) == nil {
			t.Errorf("no bridge left by the killed process")
		}
		if tn.nftTable(t, DefaultBridge) == nil {
			t.Errorf("no nftables table left by the killed process")
		}
		if got := tn.ipForward(t); got != "1" {
			t.Errorf("ip_forward %s after the killed process, want 1", got)
		}
		if _, err := os.Stat((&Manager{cfg: cfg}).forwardState()); fwdBefore == "0" && err != nil {
			t.Errorf("state file after the killed process: %v", err)
		}
	}
	// The killed process's programs went with its links.
	noPrograms := func(t *testing.T) {
		t.Helper()
		var got map[ebpf.AttachType]int
		if !waitFor(3*time.Second, func() bool {
			got = attachedPrograms(t, scope)
			for _, c := range got {
				if c != 0 {
					return false
				}
			}
			return true
		}) {
			t.Errorf("programs attached to the scope: %v, want none", got)
		}
	}

	t.Run("open", func(t *testing.T) {
		tn.crashManager(t, cfg, scope)
		leftovers(t)
		m, err := Open(cfg, mgrLog(t))
		if err != nil {
			t.Fatalf("Open after a crash: %v", err)
		}
		n, err := m.Egress(scope, Policy{Allow: mustRules(t, mgrPeerIP)})
		if err != nil {
			m.Close()
			t.Fatalf("Egress after a crash: %v", err)
		}
		if hl, err := tn.hostNL.LinkByName(n.s.hostIf); err != nil || hl.Attrs().MasterIndex != m.bridge.Attrs().Index {
			t.Errorf("Net's host end %s not on the new bridge: %v", n.s.hostIf, err)
		}
		if got := tn.ipForward(t); got != "1" {
			t.Errorf("ip_forward %s after Open, want 1", got)
		}
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		tn.checkNothingLeft(t, cfg, fwdBefore)
		noPrograms(t)
	})

	t.Run("cleanup", func(t *testing.T) {
		tn.crashManager(t, cfg, scope)
		leftovers(t)
		// Cleanup works in the calling thread's namespace.
		inTestNS(t, tn.host, func() {
			if err := Cleanup(cfg, mgrLog(t)); err != nil {
				t.Errorf("Cleanup: %v", err)
			}
		})
		tn.checkNothingLeft(t, cfg, fwdBefore)
		noPrograms(t)
		inTestNS(t, tn.host, func() {
			if err := Cleanup(cfg, mgrLog(t)); err != nil {
				t.Errorf("Cleanup with nothing left: %v", err)
			}
		})
	})

	t.Run("cleanup-host", func(t *testing.T) {
		// From a thread in another namespace: Cleanup must clean
		// Config.Host's, as Open does.
		tn.crashManager(t, cfg, scope)
		leftovers(t)
		other := newTestNS(t)
		inTestNS(t, other, func() {
			if err := Cleanup(cfg, mgrLog(t)); err != nil {
				t.Errorf("Cleanup: %v", err)
			}
		})
		tn.checkNothingLeft(t, cfg, fwdBefore)
		// What this test left if Cleanup cleaned the wrong namespace.
		inTestNS(t, tn.host, func() { _ = Cleanup(cfg, mgrLog(t)) })
	})
}

// TestManagerCheckConfig checks what CheckConfig refuses.
func TestManagerCheckConfig(t *testing.T) {
	good := Config{ScopeLevel: 2, StateDir: "/run/scoped"}
	if err := CheckConfig(good); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*Config)
		ok   bool
	}{
		{"bridge 15 bytes", func(c *Config) { c.Bridge = "abcdefghijklmno" }, true},
		{"bridge 16 bytes", func(c *Config) { c.Bridge = "abcdefghijklmnop" }, false},
		{"bridge with /", func(c *Config) { c.Bridge = "br/0" }, false},
		{"bridge with :", func(c *Config) { c.Bridge = "br:0" }, false},
		{"bridge with space", func(c *Config) { c.Bridge = "br 0" }, false},
		{"bridge ..", func(c *Config) { c.Bridge = ".." }, false},
		{"bridge with the veths' prefix", func(c *Config) { c.Bridge = "scv0" }, false},
		{"uplink 16 bytes", func(c *Config) { c.Uplink = "abcdefghijklmnop" }, false},
		{"uplink with /", func(c *Config) { c.Uplink = "eth/0" }, false},
		{"subnet IPv6", func(c *Config) { c.Subnet = netip.MustParsePrefix("fd00::/64") }, false},
		{"subnet IPv4-mapped", func(c *Config) { c.Subnet = netip.MustParsePrefix("::ffff:10.0.0.0/104") }, false},
		{"subnet /30", func(c *Config) { c.Subnet = netip.MustParsePrefix("10.1.2.0/30") }, false},
		{"subnet /29", func(c *Config) { c.Subnet = netip.MustParsePrefix("10.1.2.0/29") }, false},
		{"subnet /28", func(c *Config) { c.Subnet = netip.MustParsePrefix("10.1.2.0/28") }, true},
		{"subnet /8", func(c *Config) { c.Subnet = netip.MustParsePrefix("10.0.0.0/8") }, true},
		{"subnet /7", func(c *Config) { c.Subnet = netip.MustParsePrefix("10.0.0.0/7") }, false},
		{"subnet unmasked", func(c *Config) { c.Subnet = netip.MustParsePrefix("10.1.2.3/24") }, true},
		{"scope level 0", func(c *Config) { c.ScopeLevel = 0 }, false},
		{"no state dir", func(c *Config) { c.StateDir = "" }, false},
		{"negative pool", func(c *Config) { c.PoolSize = -1 }, true},
	} {
		cfg := good
		c.edit(&cfg)
		err := CheckConfig(cfg)
		switch {
		case c.ok && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case !c.ok && !errors.Is(err, ErrInvalidConfig):
			t.Errorf("%s: %v, want ErrInvalidConfig", c.name, err)
		}
	}
}

// TestManagerOpenRefuses checks that Open refuses a subnet overlapping the
// host's routes and a missing uplink, leaving nothing behind.
func TestManagerOpenRefuses(t *testing.T) {
	mnt := requirePolicy(t)
	tn := newMgrNet(t)
	_, _, _, level := policyCgroups(t, mnt)
	fwdBefore := tn.ipForward(t)

	up, err := tn.hostNL.LinkByName(mgrUplink)
	if err != nil {
		t.Fatal(err)
	}
	route := &netlink.Route{LinkIndex: up.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(10, 213, 5, 0).To4(), Mask: net.CIDRMask(24, 32)},
		Gw: net.ParseIP(mgrPeerIP)}
	if err := tn.hostNL.RouteAdd(route); err != nil {
		t.Fatal(err)
	}
	cfg := tn.config(t, level, 2)
	if m, err := Open(cfg, mgrLog(t)); !errors.Is(err, ErrInvalidConfig) {
		if err == nil {
			m.Close()
		}
		t.Errorf("Open with a subnet overlapping 10.213.5.0/24: %v, want ErrInvalidConfig", err)
	}
	tn.checkNothingLeft(t, cfg, fwdBefore)
	// Another subnet is fine.
	cfg.Subnet = netip.MustParsePrefix("10.214.0.0/16")
	m, err := Open(cfg, mgrLog(t))
	if err != nil {
		t.Fatalf("Open with a subnet overlapping nothing: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tn.hostNL.RouteDel(route); err != nil {
		t.Fatal(err)
	}

	cfg = tn.config(t, level, 2)
	cfg.Uplink = "nosuch0"
	if m, err := Open(cfg, mgrLog(t)); !errors.Is(err, ErrNoUplink) {
		if err == nil {
			m.Close()
		}
		t.Errorf("Open with a missing uplink: %v, want ErrNoUplink", err)
	}
	tn.checkNothingLeft(t, cfg, fwdBefore)

	// No uplink named and no default route.
	if err := tn.hostNL.RouteDel(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: net.ParseIP(mgrPeerIP)}); err != nil {
		t.Fatal(err)
	}
	cfg.Uplink = ""
	if m, err := Open(cfg, mgrLog(t)); !errors.Is(err, ErrNoUplink) {
		if err == nil {
			m.Close()
		}
		t.Errorf("Open without an uplink or default route: %v, want ErrNoUplink", err)
	}
	tn.checkNothingLeft(t, cfg, fwdBefore)

	if err := CheckConfig(Config{Host: tn.host, ScopeLevel: level}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("CheckConfig without a state dir: %v", err)
	}
	if _, err := Open(Config{Host: tn.host, ScopeLevel: level}, mgrLog(t)); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Open without a state dir: %v, want ErrInvalidConfig", err)
	}
}
