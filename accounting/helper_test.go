package accounting

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/mountinfo"
	"github.com/scoped-io/scoped/internal/testutil"
)

// testRoot is the cgroup root the tests work under; nothing is left there
// after a test (testutil.CheckLeaks checks every hierarchy).
const testRoot = "/scoped-test-accounting"

// loadHelper is the helper process of the tests: its argument is the mode
// (see helper).
var loadHelper = testutil.Helper("accounting-load", func(args []string) int {
	if len(args) != 1 {
		return 2
	}
	return helper(args[0])
})

func TestMain(m *testing.M) {
	testutil.RunHelper()
	release := holdStaticKeysOnTCG()
	code := m.Run()
	release()
	os.Exit(code)
}

// holdStaticKeysOnTCG keeps what the eBPF source switches on enabled for
// the whole test run when it runs in a guest that qemu emulates with TCG.
//
// The first program attached to a tracepoint or a cgroup hook, and the last
// one detached, switch a static key, and so does BPF_ENABLE_STATS; each
// switch live-patches kernel text (text_poke_bp: int3, then IPIs), here
// code that runs on every context switch. Under multi-threaded TCG a vCPU
// can then loop on the int3 and the guest hangs: reproduced with an empty
// tp_btf program attached and detached a few dozen times while two threads
// ping-pong, gone with -accel tcg,thread=single, never seen under KVM or on
// hardware. With an empty program holding each hook (and the statistics
// held on), the tests' Open and Close patch nothing; and the holding itself
// is done, and undone, with the other CPUs offline, where no vCPU can race
// the patching.
func holdStaticKeysOnTCG() (release func()) {
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	if os.Geteuid() != 0 || !strings.Contains(string(cpuinfo), "QEMU TCG CPU") {
		return func() {}
	}
	var held []io.Closer
	release = func() {
		online := offlineOthers()
		for i := len(held) - 1; i >= 0; i-- {
			held[i].Close()
		}
		online()
	}
	online := offlineOthers()
	defer online()
	fail := func(what string, err error) func() {
		fmt.Fprintf(os.Stderr, "TCG guest: cannot hold %s: %v\n", what, err)
		return release
	}
	ret1 := asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}
	for _, tp := range []string{"sched_switch", "sched_wakeup", "sched_wakeup_new"} {
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: tp, License: "GPL", Instructions: ret1,
		})
		if err != nil {
			return fail(tp, err)
		}
		held = append(held, p)
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			return fail(tp, err)
		}
		held = append(held, l)
	}
	root, err := mountinfo.UnifiedMount()
	if err != nil {
		return fail("cgroup_skb hooks", err)
	}
	for _, at := range []ebpf.AttachType{ebpf.AttachCGroupInetIngress, ebpf.AttachCGroupInetEgress} {
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.CGroupSKB, AttachType: at, License: "GPL", Instructions: ret1, // 1: pass
		})
		if err != nil {
			return fail(at.String(), err)
		}
		held = append(held, p)
		l, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: at, Program: p})
		if err != nil {
			return fail(at.String(), err)
		}
		held = append(held, l)
	}
	st, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		return fail("BPF statistics", err)
	}
	held = append(held, st)
	fmt.Fprintln(os.Stderr, "TCG guest: scheduler tracepoints, cgroup_skb hooks and BPF statistics held on for the whole run")
	return release
}

// offlineOthers takes every CPU but the first offline and returns what
// brings them back.
func offlineOthers() (online func()) {
	cpus, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*/online")
	var off []string
	for _, f := range cpus {
		if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == "1" {
			if err := os.WriteFile(f, []byte("0"), 0o644); err == nil {
				off = append(off, f)
			} else {
				fmt.Fprintf(os.Stderr, "TCG guest: %s: %v\n", f, err)
			}
		}
	}
	return func() {
		for _, f := range off {
			if err := os.WriteFile(f, []byte("1"), 0o644); err != nil {
				fmt.Fprintf(os.Stderr, "TCG guest: %s: %v\n", f, err)
			}
		}
	}
}

// helper is the child process's side. It says "ready", then waits for a
// line on stdin, so that the test can move it into a cgroup first (a socket
// belongs to the cgroup of the task that creates it); the line carries the
// mode's arguments. Then it works until it is done, killed, or a safety
// limit runs out.
//
//	spin [D]        busy loop on one thread (for the duration D, then exit)
//	spin-cpu0       the same, with all threads pinned to CPU 0
//	send ADDR N     connect to ADDR over TCP, send N bytes, wait for EOF
//	recv            listen on 127.0.0.1, print the port, receive one
//	                connection until EOF and print the byte count
//	pingpong N CPU  PingPong(N, CPU), print ns per switch
func helper(mode string) int {
	// The test joins us to a cgroup once we say we are ready, so that no
	// thread of ours is on a CPU then: eBPF accounting charges a task's
	// time from its first switch-in inside a tracked scope.
	fmt.Println("ready")
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil {
		return 0 // the test went away before releasing us
	}
	args := strings.Fields(line)
	const safety = time.Minute
	switch mode {
	case "spin", "spin-cpu0":
		runtime.LockOSThread()
		if mode == "spin-cpu0" {
			if err := pinAllToCPU0(); err != nil {
				fmt.Fprintln(os.Stderr, "sched_setaffinity:", err)
				return 2
			}
		}
		deadline := time.Now().Add(safety)
		if len(args) > 0 {
			d, err := time.ParseDuration(args[0])
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			deadline = time.Now().Add(d)
		}
		for x := uint64(1); ; x++ {
			if x%(1<<20) == 0 && time.Now().After(deadline) {
				return 0
			}
		}
	case "send":
		// send <addr> <n>: sends n bytes, waits for the receiver to close,
		// then prints the data bytes TCP sent (resends included).
		n, _ := strconv.Atoi(args[1])
		c, err := net.DialTimeout("tcp4", args[0], 5*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		buf := make([]byte, 128<<10)
		for n > 0 {
			w, err := c.Write(buf[:min(n, len(buf))])
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			n -= w
		}
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c) // until the receiver closes
		sent, err := tcpBytesSent(c.(*net.TCPConn))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		c.Close()
		fmt.Println(sent)
		return 0
	case "recv":
		// recv: prints its port, then, once the sender is done, the bytes
		// received and the data bytes it sent itself (none: only ACKs).
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		l.Close()
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		sent, err := tcpBytesSent(c.(*net.TCPConn))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		c.Close()
		fmt.Println(n)
		fmt.Println(sent)
		return 0
	case "pingpong":
		n, _ := strconv.Atoi(args[0])
		cpu, _ := strconv.Atoi(args[1])
		d, err := PingPong(n, cpu)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Println(d.Nanoseconds())
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

// pinAllToCPU0 pins every thread of this process to CPU 0 (see the cgroups
// tests: with only the spinning thread pinned the split is noisier).
func pinAllToCPU0() error {
	var set unix.CPUSet
	set.Set(0)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return err
		}
	}
	return nil
}

// child is a process started by a test.
type child struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	done   chan struct{}
}

// startHelper starts the test binary in helper mode; it waits for release.
func startHelper(t testing.TB, mode string) *child {
	t.Helper()
	cmd := testutil.HelperCommand(t, loadHelper, mode)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	// An os.Pipe rather than StdoutPipe: Wait would close the latter
	// while the last line is still unread.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	c := &child{t: t, cmd: cmd, stdin: stdin, stdout: bufio.NewReader(r), done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.done
		r.Close()
	})
	if l := c.line(); l != "ready" {
		t.Fatalf("helper %s said %q, want ready", mode, l)
	}
	// Until its threads are all asleep in a system call.
	for deadline := time.Now().Add(5 * time.Second); !asleep(c.pid()) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	return c
}

// asleep reports whether no thread of pid is running or runnable.
func asleep(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return false
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			return false
		}
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		if f := strings.Fields(rest); len(f) == 0 || f[0] == "R" {
			return false
		}
	}
	return true
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// release lets the child start its work, with args.
func (c *child) release(args ...string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, strings.Join(args, " ")+"\n"); err != nil {
		c.t.Fatalf("release pid %d: %v", c.pid(), err)
	}
}

// line reads one line the child printed.
func (c *child) line() string {
	c.t.Helper()
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := c.stdout.ReadString('\n')
		ch <- res{strings.TrimSpace(s), err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			c.t.Fatalf("pid %d: read its output: %v", c.pid(), r.err)
		}
		return r.s
	case <-time.After(30 * time.Second):
		c.t.Fatalf("pid %d printed nothing for 30 s", c.pid())
	}
	return ""
}

// wait waits at most d for the child to exit, and reports whether it exited
// with status 0.
func (c *child) wait(d time.Duration) bool {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(d):
		_ = c.cmd.Process.Kill()
		<-c.done
		c.t.Errorf("pid %d still running after %s", c.pid(), d)
	}
	return c.cmd.ProcessState.Success()
}

// env is a test's cgroup tree and the options that match it.
type env struct {
	tree *cgroups.Tree
	opts Options
}

// newEnv opens the test tree (removed with everything below it when the
// test ends) and checks for leaks.
func newEnv(t testing.TB) *env {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresUnified(t)
	testutil.CheckLeaks(t, testRoot)
	tree, err := cgroups.Open(testRoot)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := tree.Cleanup(); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
		if err := tree.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	root, err := cgroups.Load(testRoot)
	if err != nil {
		t.Fatal(err)
	}
	id, err := root.ID()
	if err != nil {
		t.Fatal(err)
	}
	level, err := Level(root.UnifiedDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cgroup mode %s; root %s id %d level %d", tree.Mode(), root.UnifiedDir(), id, level)
	return &env{tree: tree, opts: Options{
		RootID:     id,
		RootLevel:  level,
		ScopeLevel: level + 3,
		Logger:     slog.New(slog.NewTextHandler(t.Output(), nil)),
	}}
}

// scope creates the scope free/acme/name with a worker leaf per name in
// workers (removed when the test ends) and returns them with its id.
func (e *env) scope(t testing.TB, name string, workers ...string) (*cgroups.Node, []*cgroups.Node, uint64) {
	t.Helper()
	n, err := e.tree.Node(cgroups.Limits{}, "free", "acme", name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Remove(); err != nil {
			t.Errorf("Remove %s: %v", n.Path(), err)
		}
	})
	var ws []*cgroups.Node
	for _, w := range workers {
		wn, err := n.Child(w, cgroups.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, wn)
	}
	id, err := n.ID()
	if err != nil {
		t.Fatal(err)
	}
	return n, ws, id
}

// join moves c into n.
func join(t testing.TB, n *cgroups.Node, c *child) {
	t.Helper()
	if err := n.Join(c.pid()); err != nil {
		t.Fatal(err)
	}
}

// requireEBPF skips t where eBPF accounting cannot work by design: no
// kernel BTF, or a kernel older than 5.14 (task_struct has no __state).
// Anywhere else a failure to load is a failure of the test.
func requireEBPF(t testing.TB) {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresFile(t, "/sys/kernel/btf/vmlinux", "kernel BTF for eBPF accounting")
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	var major, minor int
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err == nil && (major < 5 || major == 5 && minor < 14) {
		t.Skipf("needs Linux 5.14 or later for eBPF accounting, this is %s", release)
	}
}

// openSource opens the eBPF source, closes it when the test ends and then
// checks that none of its kernel objects remain.
func openSource(t testing.TB, opts Options) *ebpfSource {
	t.Helper()
	requireEBPF(t)
	opts, err := opts.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	s, err := openEBPF(opts)
	if err != nil {
		t.Fatalf("eBPF accounting does not load on this kernel: %v", err)
	}
	objs := kernelObjects(t, s)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		wantGone(t, objs)
	})
	return s
}

// objects are the ids of a source's kernel objects.
type objects struct {
	progs []ebpf.ProgramID
	maps  []ebpf.MapID
	links []link.ID
}

// kernelObjects lists s's programs, every map they use (.rodata too) and
// its links, the cgroup ones included.
func kernelObjects(t testing.TB, s *ebpfSource) objects {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var o objects
	for _, p := range s.programs() {
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		o.progs = append(o.progs, id)
		ids, _ := info.MapIDs()
		for _, m := range ids {
			if !contains(o.maps, m) {
				o.maps = append(o.maps, m)
			}
		}
	}
	ls := append([]link.Link(nil), s.tps...)
	for _, sc := range s.scopes {
		ls = append(ls, sc.links...)
	}
	for _, l := range ls {
		info, err := l.Info()
		if err != nil {
			t.Fatal(err)
		}
		o.links = append(o.links, info.ID)
	}
	return o
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// wantGone fails unless every object of o is gone from the kernel within a
// few seconds (the kernel frees them after an RCU grace period).
func wantGone(t testing.TB, o objects) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		left = left[:0]
		for _, id := range o.progs {
			if p, err := ebpf.NewProgramFromID(id); err == nil {
				p.Close()
				left = append(left, fmt.Sprintf("program %d", id))
			}
		}
		for _, id := range o.maps {
			if m, err := ebpf.NewMapFromID(id); err == nil {
				m.Close()
				left = append(left, fmt.Sprintf("map %d", id))
			}
		}
		for _, id := range o.links {
			if l, err := link.NewFromID(id); err == nil {
				l.Close()
				left = append(left, fmt.Sprintf("link %d", id))
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, l := range left {
		t.Errorf("left in the kernel after Close: %s", l)
	}
}

func track(t testing.TB, s Source, id uint64, n *cgroups.Node) {
	t.Helper()
	if err := s.Track(id, n); err != nil {
		t.Fatal(err)
	}
}

func readScope(t testing.TB, s Source, id uint64) Counters {
	t.Helper()
	c, err := s.Read(id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func cpuUsage(t testing.TB, n *cgroups.Node) time.Duration {
	t.Helper()
	st, err := n.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st.CPUUsage
}

// tcpBytesSent is the kernel's count of data bytes c sent, resends included
// (TCP_INFO tcpi_bytes_sent): what a per-socket byte counter must see on
// top of the headers.
func tcpBytesSent(c *net.TCPConn) (uint64, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var info *unix.TCPInfo
	var serr error
	if err := rc.Control(func(fd uintptr) {
		info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, fmt.Errorf("TCP_INFO: %w", serr)
	}
	return info.Bytes_sent, nil
}
