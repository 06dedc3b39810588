//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package netns

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/scoped-io/scoped/internal/testutil"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The addresses the helper process gives its own namespace's lo.
const (
	probeSrvAddr = "198.18.0.1" // a TCP and a UDP server on probeSrvPort, made outside the scope
	probeSrvPort = 8080
	probeV6Addr  = "2001:db8::1"
)

// requirePolicy skips t unless the test runs as root on a kernel with the
// program types the policy needs, and returns the cgroup2 mount point.
func requirePolicy(t *testing.T) string {
	t.Helper()
	testutil.RequiresRoot(t)
	for _, pt := range []ebpf.ProgramType{ebpf.CGroupSockAddr, ebpf.CGroupSKB} {
		if err := features.HaveProgramType(pt); err != nil {
			t.Skipf("needs BPF program type %s: %v", pt, err)
		}
	}
	mnt := testutil.RequiresUnified(t)
	return mnt
}

// policyCgroupID is the id of the cgroup v2 directory dir.
func policyCgroupID(t *testing.T, dir string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// policyCgroups makes <mnt>/scoped-nettest-<pid>/{scope/worker,outside} and
// returns the scope, worker and outside directories and the scope's level.
func policyCgroups(t *testing.T, mnt string) (scope, worker, outside string, level uint32) {
	t.Helper()
	root := filepath.Join(mnt, fmt.Sprintf("scoped-nettest-%d", os.Getpid()))
	scope = filepath.Join(root, "scope")
	worker = filepath.Join(scope, "worker")
	outside = filepath.Join(root, "outside")
	dirs := []string{root, scope, worker, outside}
	t.Cleanup(func() {
		for _, d := range slices.Backward(dirs) {
			// Just-reaped processes leave their cgroup a little later.
			deadline := time.Now().Add(5 * time.Second)
			for {
				err := unix.Rmdir(d)
				if err == nil || errors.Is(err, unix.ENOENT) {
					break
				}
				if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
					t.Errorf("remove test cgroup: %v", err)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("test cgroup: %v", err)
		}
	}
	rel, _ := filepath.Rel(mnt, scope)
	return scope, worker, outside, uint32(strings.Count(rel, "/") + 1)
}

// probe is one attempt of the helper process to reach Addr.
type probe struct {
	Kind    string // tcp, udp (by connect/sendto), rawudp, icmp (raw sockets)
	Addr    string // ip:port, or ip for icmp
	Want    string // ok (connected, sent), refused (ECONNREFUSED), eperm
	Deliver bool   // a server must receive it (tcp, udp, rawudp to probeSrvAddr)
}

func (p probe) name() string { return p.Kind + " " + p.Addr }

// probeJob is what the helper process is told to do.
type probeJob struct {
	NewNet bool   // in a new namespace: set up addresses and servers
	Worker string // the cgroup to move into once set up ("": stay)
	Probes []probe
}

// probeResult is what the helper process reports.
type probeResult struct {
	Verdicts  map[string]string
	Delivered []string
	Err       string
}

const (
	probeHelperMarker = "POLICY-HELPER-RESULT "
)

// runProbeHelper runs the helper process in cgroup dir (in a new network
// namespace if job.NewNet) and checks its verdicts.
func runProbeHelper(t *testing.T, dir string, job probeJob) {
	t.Helper()
	if _, err := os.Stat("/proc/net/if_inet6"); err != nil { // no IPv6: no IPv6 probes
		job.Probes = slices.DeleteFunc(job.Probes, func(p probe) bool { return strings.Count(p.Addr, ":") > 1 })
	}
	spec, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	cg, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := testutil.HelperCommandContext(ctx, t, probeHelperName, string(spec))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	if job.NewNet {
		cmd.SysProcAttr.Cloneflags = unix.CLONE_NEWNET
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper process: %v\n%s%s", err, out, stderr.Bytes())
	}
	var res probeResult
	_, line, ok := strings.Cut(string(out), probeHelperMarker)
	if !ok {
		t.Fatalf("helper process said no result:\n%s%s", out, stderr.Bytes())
	}
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		t.Fatalf("helper process result %q: %v", line, err)
	}
	if res.Err != "" {
		t.Fatalf("helper process: %s", res.Err)
	}
	for _, p := range job.Probes {
		if got := res.Verdicts[p.name()]; got != p.Want {
			t.Errorf("%s: %s, want %s", p.name(), got, p.Want)
		}
		if p.Deliver && p.Want == "ok" && !slices.Contains(res.Delivered, p.name()) {
			t.Errorf("%s: sent but not received", p.name())
		}
	}
}

// probeHelperName is the helper process of runProbeHelper; its argument is
// the probeJob as JSON.
var probeHelperName = testutil.Helper("netns-probe", func(args []string) int {
	if len(args) != 1 {
		return 2
	}
	spec := args[0]
	var job probeJob
	res := probeResult{Verdicts: map[string]string{}}
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		res.Err = err.Error()
	} else if err := runProbes(job, &res); err != nil {
		res.Err = err.Error()
	}
	b, _ := json.Marshal(res)
	fmt.Printf("\n%s%s\n", probeHelperMarker, b)
	return 0
})

// runProbes sets up the namespace, probes and fills res.
func runProbes(job probeJob, res *probeResult) error {
	var mu sync.Mutex
	delivered := map[string]bool{}
	got := func(s string) {
		mu.Lock()
		delivered[s] = true
		mu.Unlock()
	}
	if job.NewNet {
		if err := setupProbeNet(); err != nil {
			return err
		}
		// The servers' sockets are made before the move: they belong to
		// a cgroup without the programs, as a remote server would.
		l, err := net.Listen("tcp4", net.JoinHostPort(probeSrvAddr, strconv.Itoa(probeSrvPort)))
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					var b bytes.Buffer
					_, _ = b.ReadFrom(c)
					got(b.String())
				}()
			}
		}()
		u, err := net.ListenPacket("udp4", net.JoinHostPort(probeSrvAddr, strconv.Itoa(probeSrvPort)))
		if err != nil {
			return err
		}
		go func() {
			buf := make([]byte, 1500)
			for {
				n, _, err := u.ReadFrom(buf)
				if err != nil {
					return
				}
				got(string(buf[:n]))
			}
		}()
	}
	if job.Worker != "" {
		if err := os.WriteFile(filepath.Join(job.Worker, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			return fmt.Errorf("move to the worker cgroup: %w", err)
		}
	}
	for _, p := range job.Probes {
		res.Verdicts[p.name()] = probeVerdict(tryProbe(p))
	}
	// Wait for what should arrive.
	deadline := time.Now().Add(3 * time.Second)
	for _, p := range job.Probes {
		for p.Deliver && res.Verdicts[p.name()] == "ok" && time.Now().Before(deadline) {
			mu.Lock()
			ok := delivered[p.name()]
			mu.Unlock()
			if ok {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	mu.Lock()
	for s := range delivered {
		res.Delivered = append(res.Delivered, s)
	}
	mu.Unlock()
	return nil
}

// setupProbeNet brings lo up with the test's addresses (on lo: kernels
// without the dummy link type).
func setupProbeNet() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	for _, a := range []string{"198.18.0.1/32", "198.18.0.2/32", "198.18.0.3/32", "198.18.0.4/32", probeV6Addr + "/128"} {
		if a == probeV6Addr+"/128" {
			if _, err := os.Stat("/proc/net/if_inet6"); err != nil {
				continue
			}
		}
		ipn, err := netlink.ParseIPNet(a)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: ipn, Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("address %s: %w", a, err)
		}
	}
	return nil
}

// tryProbe makes p's attempt with a new socket.
func tryProbe(p probe) error {
	host, port := p.Addr, 0
	if p.Kind != "icmp" {
		h, ps, err := net.SplitHostPort(p.Addr)
		if err != nil {
			return err
		}
		host = h
		port, _ = strconv.Atoi(ps)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return err
	}
	var sa unix.Sockaddr
	family := unix.AF_INET6
	if ip.Is4() {
		family = unix.AF_INET
		sa = &unix.SockaddrInet4{Addr: ip.As4(), Port: port}
	} else {
		sa = &unix.SockaddrInet6{Addr: ip.As16(), Port: port}
	}
	var typ, proto int
	var msg []byte
	switch p.Kind {
	case "tcp":
		typ = unix.SOCK_STREAM
	case "udp":
		typ, msg = unix.SOCK_DGRAM, []byte(p.name())
	case "rawudp":
		typ, proto = unix.SOCK_RAW, unix.IPPROTO_UDP
		msg = binary.BigEndian.AppendUint16(nil, 40000)
		msg = binary.BigEndian.AppendUint16(msg, uint16(port))
		msg = binary.BigEndian.AppendUint16(msg, uint16(8+len(p.name())))
		msg = append(msg, 0, 0) // no checksum
		msg = append(msg, p.name()...)
		sa = &unix.SockaddrInet4{Addr: ip.As4()}
	case "icmp":
		typ, proto = unix.SOCK_RAW, unix.IPPROTO_ICMP
		msg = []byte{8, 0, 0, 0, 0, 1, 0, 1} // echo request
		if family == unix.AF_INET6 {
			proto, msg[0] = unix.IPPROTO_ICMPV6, 128 // the kernel sums
		} else {
			binary.BigEndian.PutUint16(msg[2:], inetChecksum(msg))
		}
	default:
		return fmt.Errorf("probe kind %q", p.Kind)
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if p.Kind != "tcp" {
		return unix.Sendto(fd, msg, 0, sa)
	}
	// A dropped SYN would be retried: give up after 2s.
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return err
	}
	if err := unix.Connect(fd, sa); err != nil {
		return err
	}
	_, err = unix.Write(fd, []byte(p.name()))
	return err
}

// probeVerdict names what tryProbe returned.
func probeVerdict(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, unix.EPERM):
		return "eperm"
	case errors.Is(err, unix.ECONNREFUSED):
		return "refused"
	default:
		return err.Error()
	}
}

// inetChecksum is the Internet checksum of b (RFC 1071).
func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// policyAttachTypes are the attach types of the policy's programs.
var policyAttachTypes = []ebpf.AttachType{
	ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupInet6Connect,
	ebpf.AttachCGroupUDP4Sendmsg, ebpf.AttachCGroupUDP6Sendmsg,
	ebpf.AttachCGroupInetEgress,
}

// attachedPrograms is how many programs of each attach type dir has.
func attachedPrograms(t *testing.T, dir string) map[ebpf.AttachType]int {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[ebpf.AttachType]int{}
	for _, at := range policyAttachTypes {
		q, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
		if err != nil {
			t.Fatalf("query %s programs: %v", at, err)
		}
		out[at] = len(q.Programs)
	}
	return out
}

// mapEntries counts a map's entries.
func mapEntries(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	n := 0
	var k []byte
	it := m.Iterate()
	for it.Next(&k, new([]byte)) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatalf("iterate %v: %v", m, err)
	}
	return n
}

func mustPrefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// TestPolicy runs processes in a scope's cgroup and checks what they reach.
func TestPolicy(t *testing.T) {
	mnt := requirePolicy(t)
	scope, worker, outside, level := policyCgroups(t, mnt)
	cookie, err := hostNetnsCookie()
	if err != nil {
		t.Fatal(err)
	}
	p, err := loadPolicy(level, cookie)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	detach, err := p.attach(scope)
	if err != nil {
		t.Fatal(err)
	}
	for at, n := range attachedPrograms(t, scope) {
		if n != 1 {
			t.Errorf("%d %s programs attached to the scope, want 1", n, at)
		}
	}
	id := policyCgroupID(t, scope)
	// As the manager's: loopback is denied too, and allowed in a scope's
	// own namespace all the same.
	deny := mustPrefixes("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "198.18.0.4/32")
	if err := p.setDeny(deny); err != nil {
		t.Fatal(err)
	}
	srv := net.JoinHostPort(probeSrvAddr, strconv.Itoa(probeSrvPort))

	t.Run("allow-list", func(t *testing.T) {
		if err := p.setScope(id, mustRules(t, srv, "198.18.0.3")); err != nil {
			t.Fatal(err)
		}
		runProbeHelper(t, outside, probeJob{NewNet: true, Worker: worker, Probes: []probe{
			{Kind: "tcp", Addr: srv, Want: "ok", Deliver: true},
			{Kind: "tcp", Addr: "198.18.0.1:8081", Want: "eperm"},
			{Kind: "tcp", Addr: "198.18.0.2:8080", Want: "eperm"},
			{Kind: "tcp", Addr: "198.18.0.3:9000", Want: "refused"},
			{Kind: "tcp", Addr: "198.18.0.4:8080", Want: "eperm"},
			{Kind: "tcp", Addr: "127.0.0.1:9000", Want: "refused"},
			{Kind: "tcp", Addr: "[::1]:9000", Want: "refused"},
			{Kind: "tcp", Addr: "[" + probeV6Addr + "]:8080", Want: "eperm"},
			{Kind: "tcp", Addr: "[::ffff:198.18.0.1]:8080", Want: "ok", Deliver: true},
			{Kind: "tcp", Addr: "[::ffff:198.18.0.2]:8080", Want: "eperm"},
			{Kind: "tcp", Addr: "[::ffff:127.0.0.1]:9000", Want: "refused"},
			{Kind: "udp", Addr: srv, Want: "ok", Deliver: true},
			{Kind: "udp", Addr: "198.18.0.1:8081", Want: "eperm"},
			{Kind: "udp", Addr: "198.18.0.2:8080", Want: "eperm"},
			{Kind: "udp", Addr: "[::ffff:198.18.0.1]:8080", Want: "ok", Deliver: true},
			{Kind: "udp", Addr: "[::ffff:198.18.0.2]:8080", Want: "eperm"},
			{Kind: "udp", Addr: "[" + probeV6Addr + "]:8080", Want: "eperm"},
			{Kind: "udp", Addr: "127.0.0.1:9000", Want: "ok"},
			{Kind: "udp", Addr: "[::1]:9000", Want: "ok"},
			// Raw sockets skip the sock_addr programs: cgroup_skb decides.
			{Kind: "rawudp", Addr: srv, Want: "ok", Deliver: true},
			{Kind: "rawudp", Addr: "198.18.0.1:8081", Want: "eperm"},
			{Kind: "rawudp", Addr: "198.18.0.2:8080", Want: "eperm"},
			{Kind: "icmp", Addr: "198.18.0.3", Want: "ok"},
			{Kind: "icmp", Addr: "198.18.0.1", Want: "eperm"},
			{Kind: "icmp", Addr: "127.0.0.1", Want: "ok"},
			{Kind: "icmp", Addr: "::1", Want: "ok"},
			{Kind: "icmp", Addr: probeV6Addr, Want: "eperm"},
		}})
	})

	t.Run("deny-list", func(t *testing.T) {
		if err := p.setScope(id, mustRules(t, "0.0.0.0/0")); err != nil {
			t.Fatal(err)
		}
		if n := mapEntries(t, p.objs.PolicyAllow); n != 1 {
			t.Errorf("%d allow-list entries after setScope with one rule, want 1", n)
		}
		runProbeHelper(t, outside, probeJob{NewNet: true, Worker: worker, Probes: []probe{
			{Kind: "tcp", Addr: "198.18.0.4:8080", Want: "eperm"},
			{Kind: "udp", Addr: "198.18.0.4:8080", Want: "eperm"},
			{Kind: "rawudp", Addr: "198.18.0.4:8080", Want: "eperm"},
			{Kind: "icmp", Addr: "198.18.0.4", Want: "eperm"},
			{Kind: "tcp", Addr: "198.18.0.2:8080", Want: "refused"},
			{Kind: "tcp", Addr: "198.18.0.1:8081", Want: "refused"},
			{Kind: "icmp", Addr: "198.18.0.2", Want: "ok"},
			{Kind: "tcp", Addr: "[" + probeV6Addr + "]:8080", Want: "eperm"},
		}})
	})

	t.Run("host-netns", func(t *testing.T) {
		// Only loopback, where the test listens itself: a scope in the
		// host's namespace may not reach it, whatever the lists say.
		if err := p.setDeny(mustPrefixes("198.18.0.4/32")); err != nil {
			t.Fatal(err)
		}
		l4, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l4.Close()
		u4, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer u4.Close()
		probes := []probe{
			{Kind: "tcp", Addr: l4.Addr().String(), Want: "eperm"},
			{Kind: "tcp", Addr: "[::ffff:127.0.0.1]:" + strconv.Itoa(l4.Addr().(*net.TCPAddr).Port), Want: "eperm"},
			{Kind: "udp", Addr: u4.LocalAddr().String(), Want: "eperm"},
		}
		if l6, err := net.Listen("tcp6", "[::1]:0"); err == nil {
			defer l6.Close()
			probes = append(probes, probe{Kind: "tcp", Addr: l6.Addr().String(), Want: "eperm"},
				probe{Kind: "udp", Addr: l6.Addr().String(), Want: "eperm"})
		}
		runProbeHelper(t, worker, probeJob{Probes: probes})
		if err := p.setDeny(deny); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("forget", func(t *testing.T) {
		if err := p.forget(id); err != nil {
			t.Fatal(err)
		}
		if n := mapEntries(t, p.objs.PolicyAllow); n != 0 {
			t.Errorf("%d allow-list entries after forget, want 0", n)
		}
		runProbeHelper(t, outside, probeJob{NewNet: true, Worker: worker, Probes: []probe{
			{Kind: "tcp", Addr: srv, Want: "eperm"},
			{Kind: "udp", Addr: srv, Want: "eperm"},
			{Kind: "rawudp", Addr: srv, Want: "eperm"},
			{Kind: "icmp", Addr: "198.18.0.3", Want: "eperm"},
			{Kind: "tcp", Addr: "127.0.0.1:9000", Want: "refused"},
			{Kind: "tcp", Addr: "[::1]:9000", Want: "refused"},
		}})
	})

	// Teardown: nothing left in the maps, attached or loaded.
	if err := detach(); err != nil {
		t.Fatal(err)
	}
	if err := detach(); err != nil {
		t.Errorf("second detach: %v", err)
	}
	for at, n := range attachedPrograms(t, scope) {
		if n != 0 {
			t.Errorf("%d %s programs attached to the scope after detach", n, at)
		}
	}
	if err := p.setDeny(nil); err != nil {
		t.Fatal(err)
	}
	if n := mapEntries(t, p.objs.PolicyDeny); n != 0 {
		t.Errorf("%d deny entries after setDeny(nil)", n)
	}
	var progIDs []ebpf.ProgramID
	for _, prog := range []*ebpf.Program{p.objs.PolicyConnect4, p.objs.PolicyConnect6, p.objs.PolicySendmsg4, p.objs.PolicySendmsg6, p.objs.PolicyEgress} {
		info, err := prog.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		progIDs = append(progIDs, id)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := p.setScope(id, nil); err == nil {
		t.Error("setScope after Close succeeded")
	}
	// The kernel frees programs after an RCU grace period.
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range progIDs {
		for {
			prog, err := ebpf.NewProgramFromID(pid)
			if errors.Is(err, os.ErrNotExist) {
				break
			}
			if err == nil {
				prog.Close()
			}
			if time.Now().After(deadline) {
				t.Errorf("program %d still loaded after Close (%v)", pid, err)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestPolicyAttachClose checks that Close detaches what detach did not.
func TestPolicyAttachClose(t *testing.T) {
	mnt := requirePolicy(t)
	scope, _, _, level := policyCgroups(t, mnt)
	cookie, err := hostNetnsCookie()
	if err != nil {
		t.Fatal(err)
	}
	p, err := loadPolicy(level, cookie)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.attach(filepath.Join(scope, "no-such-cgroup")); err == nil {
		t.Error("attach to a missing cgroup succeeded")
	}
	detach, err := p.attach(scope)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for at, n := range attachedPrograms(t, scope) {
		if n != 0 {
			t.Errorf("%d %s programs attached to the scope after Close", n, at)
		}
	}
	if err := detach(); err != nil {
		t.Errorf("detach after Close: %v", err)
	}
}

// TestPolicySetScope checks the allow-list's entries and setScope's errors.
func TestPolicySetScope(t *testing.T) {
	requirePolicy(t)
	cookie, err := hostNetnsCookie()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loadPolicy(2, 0); err == nil {
		t.Error("loadPolicy without a host cookie succeeded")
	}
	p, err := loadPolicy(2, cookie)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.setScope(0, nil); err == nil {
		t.Error("setScope(0) succeeded")
	}
	if err := p.setScope(7, mustRules(t, "10.0.0.0/8", "10.1.0.0/16:80", "10.1.2.3:22-23")); err != nil {
		t.Fatal(err)
	}
	if err := p.setScope(8, mustRules(t, "10.0.0.0/8:443")); err != nil {
		t.Fatal(err)
	}
	want := map[policyBPFAllowKey][]PortRange{
		allowKey(7, netip.MustParsePrefix("10.0.0.0/8")):  {{0, 65535}},
		allowKey(7, netip.MustParsePrefix("10.1.0.0/16")): {{0, 65535}},
		allowKey(7, netip.MustParsePrefix("10.1.2.3/32")): {{0, 65535}},
		allowKey(8, netip.MustParsePrefix("10.0.0.0/8")):  {{443, 443}},
	}
	checkAllowEntries(t, p, want)

	// Replacing: new entries in, stale ones out, the other scope kept.
	if err := p.setScope(7, mustRules(t, "10.1.0.0/16:80", "10.1.2.3:22-23", "192.0.2.0/24:53")); err != nil {
		t.Fatal(err)
	}
	delete(want, allowKey(7, netip.MustParsePrefix("10.0.0.0/8")))
	want[allowKey(7, netip.MustParsePrefix("10.1.0.0/16"))] = []PortRange{{80, 80}}
	want[allowKey(7, netip.MustParsePrefix("10.1.2.3/32"))] = []PortRange{{22, 23}, {80, 80}}
	want[allowKey(7, netip.MustParsePrefix("192.0.2.0/24"))] = []PortRange{{53, 53}}
	checkAllowEntries(t, p, want)

	// Too many ranges after the union: refused, nothing changed.
	var a, b []string
	for i := range 9 {
		a, b = append(a, strconv.Itoa(1000+2*i)), append(b, strconv.Itoa(2000+2*i))
	}
	err = p.setScope(7, mustRules(t, "10.0.0.0/8:"+strings.Join(a, ","), "10.0.0.1:"+strings.Join(b, ",")))
	if !errors.Is(err, ErrInvalidRule) {
		t.Errorf("setScope with 18 ranges at a prefix: %v, want ErrInvalidRule", err)
	}
	if err := p.setScope(7, []Rule{{Prefix: netip.MustParsePrefix("2001:db8::/32")}}); !errors.Is(err, ErrInvalidRule) {
		t.Errorf("setScope with an IPv6 rule: %v, want ErrInvalidRule", err)
	}
	checkAllowEntries(t, p, want)

	if err := p.setScope(7, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.forget(8); err != nil {
		t.Fatal(err)
	}
	if err := p.forget(9); err != nil {
		t.Errorf("forget of an unknown scope: %v", err)
	}
	checkAllowEntries(t, p, nil)
	if len(p.scopes) != 0 || p.nAllow != 0 {
		t.Errorf("still tracked: %v, %d entries", p.scopes, p.nAllow)
	}

	// The deny list: IPv4 (masked), IPv4-mapped, IPv6 ignored.
	if err := p.setDeny(mustPrefixes("10.1.2.3/8", "::ffff:192.0.2.0/120", "2001:db8::/32")); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(p.deny, map[netip.Prefix]bool{netip.MustParsePrefix("10.0.0.0/8"): true, netip.MustParsePrefix("192.0.2.0/24"): true}) {
		t.Errorf("deny set %v", p.deny)
	}
	if n := mapEntries(t, p.objs.PolicyDeny); n != 2 {
		t.Errorf("%d deny entries, want 2", n)
	}
	if err := p.setDeny(mustPrefixes("10.0.0.0/8")); err != nil {
		t.Fatal(err)
	}
	if n := mapEntries(t, p.objs.PolicyDeny); n != 1 {
		t.Errorf("%d deny entries, want 1", n)
	}
}

// checkAllowEntries compares policy_allow with want.
func checkAllowEntries(t *testing.T, p *policy, want map[policyBPFAllowKey][]PortRange) {
	t.Helper()
	got := map[policyBPFAllowKey][]PortRange{}
	var k policyBPFAllowKey
	var v policyBPFAllowVal
	it := p.objs.PolicyAllow.Iterate()
	for it.Next(&k, &v) {
		var rs []PortRange
		for _, r := range v.Ranges[:v.Count] {
			rs = append(rs, PortRange{r.Lo, r.Hi})
		}
		got[k] = rs
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("allow-list entries:\n got %v\nwant %v", got, want)
	}
}

// ownUnifiedCgroup is the unified cgroup directory of the test process and its
// level.
func ownUnifiedCgroup(t *testing.T, mnt string) (string, uint32) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			level := uint32(strings.Count(path, "/"))
			if path == "/" {
				level = 0
			}
			return filepath.Join(mnt, path), level
		}
	}
	t.Skip("the test process is in no unified cgroup")
	return "", 0
}

// testPacket is an Ethernet frame for BPF_PROG_TEST_RUN.
type testPacket struct {
	proto   uint8  // IPv4 protocol
	dst     string // IPv4 or IPv6 destination
	dport   uint16
	ihl     uint8  // IPv4 header words, 5 if 0
	fragOff uint16 // in 8-byte units
	noL4    bool   // stop after the IP header
	arp     bool
}

func (p testPacket) bytes() []byte {
	eth := []byte{0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x08, 0x00}
	if p.arp {
		eth[12], eth[13] = 0x08, 0x06
		return append(eth, make([]byte, 28)...)
	}
	dst := netip.MustParseAddr(p.dst)
	l4 := binary.BigEndian.AppendUint16(nil, 40000)
	l4 = binary.BigEndian.AppendUint16(l4, p.dport)
	l4 = append(l4, make([]byte, 16)...)
	if p.noL4 {
		l4 = nil
	}
	if dst.Is6() {
		eth[12], eth[13] = 0x86, 0xdd
		h := make([]byte, 40)
		h[0] = 6 << 4
		binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
		h[6], h[7] = p.proto, 64
		h[23] = 1 // from ::1
		a := dst.As16()
		copy(h[24:], a[:])
		return append(append(eth, h...), l4...)
	}
	ihl := p.ihl
	if ihl == 0 {
		ihl = 5
	}
	h := make([]byte, max(int(ihl)*4, 20))
	h[0] = 4<<4 | ihl
	binary.BigEndian.PutUint16(h[2:], uint16(len(h)+len(l4)))
	binary.BigEndian.PutUint16(h[6:], p.fragOff)
	h[8], h[9] = 64, p.proto
	copy(h[12:], []byte{198, 18, 0, 9})
	a := dst.As4()
	copy(h[16:], a[:])
	binary.BigEndian.PutUint16(h[10:], inetChecksum(h))
	return append(append(eth, h...), l4...)
}

// TestPolicyEgress runs the cgroup_skb program on crafted packets
// (BPF_PROG_TEST_RUN), as sent by a socket of the test process's own
// cgroup, which is the scope here.
func TestPolicyEgress(t *testing.T) {
	mnt := requirePolicy(t)
	dir, level := ownUnifiedCgroup(t, mnt)
	cookie, err := hostNetnsCookie()
	if err != nil {
		t.Fatal(err)
	}
	p, err := loadPolicy(level, cookie)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	id := policyCgroupID(t, dir)
	if err := p.setScope(id, mustRules(t, "198.18.0.1:8080", "198.18.0.3", "198.18.0.0/16:9999")); err != nil {
		t.Fatal(err)
	}
	if err := p.setDeny(mustPrefixes("127.0.0.0/8", "198.18.0.4/32")); err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, name string, in testPacket, want uint32) {
		t.Helper()
		ret, err := p.objs.PolicyEgress.Run(&ebpf.RunOptions{Data: in.bytes()})
		if errors.Is(err, ebpf.ErrNotSupported) {
			t.Skipf("BPF_PROG_TEST_RUN of cgroup_skb: %v", err)
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if ret != want {
			t.Errorf("%s: %d, want %d", name, ret, want)
		}
	}
	const tcp, udp, icmp = unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_ICMP
	for _, c := range []struct {
		name string
		in   testPacket
		want uint32
	}{
		{"tcp allowed port", testPacket{proto: tcp, dst: "198.18.0.1", dport: 8080}, 1},
		{"udp allowed port", testPacket{proto: udp, dst: "198.18.0.1", dport: 8080}, 1},
		{"port of the enclosing rule", testPacket{proto: tcp, dst: "198.18.0.1", dport: 9999}, 1},
		{"other port", testPacket{proto: tcp, dst: "198.18.0.1", dport: 8081}, 0},
		{"udp other port", testPacket{proto: udp, dst: "198.18.0.1", dport: 53}, 0},
		{"enclosing rule only", testPacket{proto: tcp, dst: "198.18.0.2", dport: 9999}, 1},
		{"enclosing rule, other port", testPacket{proto: tcp, dst: "198.18.0.2", dport: 8080}, 0},
		{"rule without ports", testPacket{proto: tcp, dst: "198.18.0.3", dport: 1}, 1},
		{"denied", testPacket{proto: tcp, dst: "198.18.0.4", dport: 9999}, 0},
		{"no rule", testPacket{proto: tcp, dst: "192.0.2.1", dport: 8080}, 0},
		{"icmp, rule without ports", testPacket{proto: icmp, dst: "198.18.0.3"}, 1},
		{"icmp, rule with ports", testPacket{proto: icmp, dst: "198.18.0.1"}, 0},
		{"icmp denied", testPacket{proto: icmp, dst: "198.18.0.4"}, 0},
		{"loopback", testPacket{proto: tcp, dst: "127.0.0.1", dport: 1}, 1},
		{"loopback icmp", testPacket{proto: icmp, dst: "127.1.2.3"}, 1},
		{"ip options", testPacket{proto: tcp, dst: "198.18.0.1", dport: 8080, ihl: 6}, 1},
		{"ip options, other port", testPacket{proto: tcp, dst: "198.18.0.1", dport: 8081, ihl: 6}, 0},
		{"header too short", testPacket{proto: tcp, dst: "198.18.0.1", dport: 8080, ihl: 4}, 0},
		{"no transport header", testPacket{proto: tcp, dst: "198.18.0.1", noL4: true}, 0},
		{"later fragment, allowed address", testPacket{proto: udp, dst: "198.18.0.1", dport: 1, fragOff: 185}, 1},
		{"later fragment, other address", testPacket{proto: udp, dst: "192.0.2.1", dport: 8080, fragOff: 185}, 0},
		{"ipv6 loopback", testPacket{proto: tcp, dst: "::1", dport: 1}, 1},
		{"ipv6", testPacket{proto: tcp, dst: "2001:db8::1", dport: 8080}, 0},
		{"ipv4-mapped ipv6", testPacket{proto: tcp, dst: "::ffff:198.18.0.1", dport: 8080}, 0},
		{"arp", testPacket{arp: true}, 1},
	} {
		run(t, c.name, c.in, c.want)
	}
	if err := p.forget(id); err != nil {
		t.Fatal(err)
	}
	run(t, "forgotten scope", testPacket{proto: tcp, dst: "198.18.0.1", dport: 8080}, 0)
	run(t, "forgotten scope, loopback", testPacket{proto: tcp, dst: "127.0.0.1", dport: 8080}, 1)
}
