package sandbox_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/testutil"
	"github.com/scoped-io/scoped/sandbox"
)

// hostWant says what a seccomp case must give unsandboxed, on the host.
type hostWant int

const (
	hostSkip           hostWant = iota // it would change the host: not run there
	hostSame                           // the kernel's own answer, the same as in the sandbox
	hostOther                          // the filter's answer: the host's kernel answers otherwise
	hostOtherIfBuiltIn                 // hostOther, unless the host's kernel lacks the feature too
)

// seccompCase is one system call made in the sandbox and the errno the
// filter must give it (0: allowed).
type seccompCase struct {
	name string
	call func(dir string) unix.Errno
	want unix.Errno
	host hostWant
}

func raw(nr uintptr, args ...uintptr) unix.Errno {
	var a [6]uintptr
	copy(a[:], args)
	r, _, e := unix.Syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5])
	if e == 0 && nr == unix.SYS_SOCKET {
		unix.Close(int(r))
	}
	return e
}

func mknod(dir, name string, mode uint32) unix.Errno {
	p := filepath.Join(dir, name)
	err := unix.Mknodat(unix.AT_FDCWD, p, mode|0o600, 0)
	os.Remove(p)
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

var seccompCases = []seccompCase{
	// Not in the allow list: ENOSYS.
	{"syscall 1000 (none yet)", func(string) unix.Errno { return raw(1000) }, unix.ENOSYS, hostSame},
	{"process_madvise", func(string) unix.Errno {
		return raw(unix.SYS_PROCESS_MADVISE, ^uintptr(0), 0, 0, 0, 0)
	}, unix.ENOSYS, hostOther},
	{"clone3 (libc falls back to clone)", func(string) unix.Errno { return raw(unix.SYS_CLONE3, 0, 0) }, unix.ENOSYS, hostOther},
	{"personality ADDR_NO_RANDOMIZE", func(string) unix.Errno {
		return raw(unix.SYS_PERSONALITY, 0x0040000) // ADDR_NO_RANDOMIZE
	}, unix.ENOSYS, hostOther},
	// Denied: EPERM.
	{"unshare(0)", func(string) unix.Errno { return raw(unix.SYS_UNSHARE, 0) }, unix.EPERM, hostOther},
	{"io_uring_setup", func(string) unix.Errno { return raw(unix.SYS_IO_URING_SETUP, 0, 0) }, unix.EPERM, hostOther},
	{"acct", func(string) unix.Errno { return raw(unix.SYS_ACCT, 0) }, unix.EPERM, hostSkip},
	{"mknod char device", func(dir string) unix.Errno { return mknod(dir, "chr", unix.S_IFCHR) }, unix.EPERM, hostSkip},
	// Sockets by family and netlink protocol.
	{"socket AF_UNIX", func(string) unix.Errno { return raw(unix.SYS_SOCKET, unix.AF_UNIX, unix.SOCK_STREAM, 0) }, 0, hostSame},
	{"socket AF_INET", func(string) unix.Errno { return raw(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM, 0) }, 0, hostSame},
	{"socket AF_INET6", func(string) unix.Errno { return raw(unix.SYS_SOCKET, unix.AF_INET6, unix.SOCK_DGRAM, 0) }, 0, hostSame},
	{"socket netlink route", func(string) unix.Errno {
		return raw(unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE)
	}, 0, hostSame},
	{"socket netlink uevent", func(string) unix.Errno {
		return raw(unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_KOBJECT_UEVENT)
	}, unix.EPROTONOSUPPORT, hostOther},
	{"socket AF_PACKET", func(string) unix.Errno { return raw(unix.SYS_SOCKET, unix.AF_PACKET, unix.SOCK_DGRAM, 0) }, unix.EAFNOSUPPORT, hostOtherIfBuiltIn},
	{"socket AF_BRIDGE", func(string) unix.Errno { return raw(unix.SYS_SOCKET, unix.AF_BRIDGE, unix.SOCK_DGRAM, 0) }, unix.EAFNOSUPPORT, hostSkip},
	// Allowed by their arguments.
	{"mknod fifo", func(dir string) unix.Errno { return mknod(dir, "fifo", unix.S_IFIFO) }, 0, hostSame},
	{"personality query", func(string) unix.Errno { return raw(unix.SYS_PERSONALITY, 0xffffffff) }, 0, hostSame},
	{"clone without namespaces (fork)", func(string) unix.Errno {
		return errnoOf(exec.Command("/bin/sh", "-c", "exit 0").Run())
	}, 0, hostSame},
}

func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	if err != nil {
		return unix.EIO
	}
	return 0
}

func init() {
	// The modes run by the test binary inside a sandbox (see inside).
	probes["seccomp-calls"] = seccompCalls
	probes["go-workload"] = goWorkload
	probes["exec"] = func() error {
		// Replace the test binary by the program of EXEC_ARGS: it runs
		// under the filter the sandbox set up.
		args := strings.Fields(os.Getenv("EXEC_ARGS"))
		if len(args) == 0 {
			return errors.New("no EXEC_ARGS")
		}
		return unix.Exec(args[0], args, os.Environ())
	}
}

// onHostEnv set tells seccompCalls that it runs on the host.
const onHostEnv = "SECCOMP_ON_HOST"

// seccompCalls makes each call of seccompCases and prints "CALL i errno";
// on the host it leaves out the hostSkip ones (errno -1).
func seccompCalls() error {
	dir := os.TempDir()
	onHost := os.Getenv(onHostEnv) != ""
	for i, c := range seccompCases {
		e := -1
		if !onHost || c.host != hostSkip {
			e = int(c.call(dir))
		}
		fmt.Printf("CALL %d %d\n", i, e)
	}
	return nil
}

// callResults parses the output of seccompCalls.
func callResults(t *testing.T, out string) map[int]unix.Errno {
	t.Helper()
	res := map[int]unix.Errno{}
	s := bufio.NewScanner(strings.NewReader(out))
	for s.Scan() {
		var i, e int
		if n, _ := fmt.Sscanf(s.Text(), "CALL %d %d", &i, &e); n == 2 {
			res[i] = unix.Errno(e)
		}
	}
	if len(res) != len(seccompCases) {
		t.Fatalf("%d results of %d calls:\n%s", len(res), len(seccompCases), out)
	}
	return res
}

func errnoName(e unix.Errno) string {
	if e == 0 {
		return "OK"
	}
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return e.Error()
}

// TestSeccompProfile: the calls of seccompCases get their errno in the
// sandbox; on the host, unfiltered, the harmless ones show the kernel's own
// answer, which differs where the filter answers.
func TestSeccompProfile(t *testing.T) {
	e := newEnv(t)
	b := e.start("alpha", cgroups.Limits{}, "seccomp-calls")
	in := callResults(t, b.wait(t))

	cmd := testutil.HelperCommand(t, insideHelper, "seccomp-calls")
	cmd.Env = []string{testutil.HelperEnv(insideHelper), onHostEnv + "=1", "TMPDIR=" + t.TempDir()}
	hostOut, err := cmd.Output()
	if err != nil {
		t.Fatalf("on the host: %v: %s", err, hostOut)
	}
	host := callResults(t, string(hostOut))

	for i, c := range seccompCases {
		hostName := "(not run)"
		if c.host != hostSkip {
			hostName = errnoName(host[i])
		}
		t.Logf("%-36s sandbox %-16s host %s", c.name, errnoName(in[i]), hostName)
		if in[i] != c.want {
			t.Errorf("%s in the sandbox: %s, want %s", c.name, errnoName(in[i]), errnoName(c.want))
		}
		switch c.host {
		case hostSame:
			if host[i] != c.want {
				t.Errorf("%s on the host: %s, want %s", c.name, errnoName(host[i]), errnoName(c.want))
			}
		case hostOther, hostOtherIfBuiltIn:
			if host[i] == c.want && c.host == hostOtherIfBuiltIn {
				t.Logf("%s: the host's kernel lacks it too (a module not loaded)", c.name)
			} else if host[i] == c.want {
				t.Errorf("%s on the host: %s as in the sandbox: the filter is not what refuses it", c.name, errnoName(host[i]))
			}
		}
	}
}

// shellScript exercises the shell and common tools: pipes, subshells,
// command substitution, a fifo, background jobs, files in /tmp.
const shellScript = `#!/bin/sh
set -eu
cd "${TMPDIR:-/tmp}"
printf 'pear\napple\nfig\n' | sort | tr a-z A-Z > sorted
[ "$(head -n 1 sorted)" = APPLE ]
n=$( (echo one; echo two) | wc -l ); [ "$n" -eq 2 ]
[ "$(echo hello world | sed 's/world/sandbox/')" = "hello sandbox" ]
if command -v awk >/dev/null; then
	[ "$(seq 1 100 | awk '{s += $1} END {print s}')" = 5050 ]
fi
[ "$(echo a:b:c | cut -d: -f2)" = b ]
mkfifo fifo
(echo through-fifo > fifo) &
read -r line < fifo; wait
[ "$line" = through-fifo ]
mkdir -p d/e; cp sorted d/e/x; mv d/e/x d/y; ln -s y d/z; [ -L d/z ]
chmod 600 d/y; rm -r d
sleep 0.05 &
wait $!
id -u >/dev/null; uname -a >/dev/null; date +%s >/dev/null
ls -la / /usr/bin >/dev/null
grep -c APPLE sorted >/dev/null
env | grep -q ^PATH=
echo SHELL-OK
`

// pythonScript exercises Python 3: threads, subprocess, json, hashlib,
// sockets, os.urandom, time, files and a thread pool.
const pythonScript = `
import concurrent.futures, hashlib, json, os, selectors, socket, subprocess, tempfile, threading, time

results = []
def work(i):
    results.append(hashlib.sha256(str(i).encode()).hexdigest())
threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
assert len(results) == 8

with concurrent.futures.ThreadPoolExecutor(4) as ex:
    assert sum(ex.map(lambda x: x * x, range(10))) == 285

out = subprocess.run(["/bin/sh", "-c", "echo py | tr a-z A-Z"], capture_output=True, check=True).stdout
assert out == b"PY\n", out
p = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
assert p.communicate(b"piped")[0] == b"piped"

assert json.loads(json.dumps({"a": [1, 2.5, None]})) == {"a": [1, 2.5, None]}
assert len(os.urandom(32)) == 32
assert hashlib.md5(b"x").hexdigest() and hashlib.blake2b(b"x").hexdigest()

a, b = socket.socketpair(socket.AF_UNIX)
a.sendall(b"ping"); assert b.recv(4) == b"ping"
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname())
conn, _ = srv.accept(); c.sendall(b"tcp"); assert conn.recv(3) == b"tcp"
sel = selectors.DefaultSelector(); sel.register(conn, selectors.EVENT_READ)
c.sendall(b"!"); assert sel.select(timeout=5)

t0 = time.monotonic(); time.sleep(0.01); assert time.monotonic() > t0
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "f")
    with open(path, "w") as f: f.write("data")
    os.rename(path, path + "2"); assert os.listdir(d) == ["f2"]
    os.mkfifo(os.path.join(d, "fifo"))
print("PY-OK")
`

// goWorkload exercises a Go program: goroutines, os/exec, TCP and unix
// sockets, netlink (net.Interfaces), files, signals, timers, crypto/rand.
func goWorkload() error {
	var wg sync.WaitGroup
	sums := make([][32]byte, 16)
	for i := range sums {
		wg.Add(1)
		go func() { defer wg.Done(); sums[i] = sha256.Sum256([]byte{byte(i)}) }()
	}
	wg.Wait()

	out, err := exec.Command("/bin/sh", "-c", "echo go | tr a-z A-Z").Output()
	if err != nil || string(out) != "GO\n" {
		return fmt.Errorf("exec: %q %v", out, err)
	}
	for _, network := range []string{"tcp", "unix"} {
		addr := "127.0.0.1:0"
		if network == "unix" {
			addr = filepath.Join(os.TempDir(), "sock")
		}
		if err := echo(network, addr); err != nil {
			return fmt.Errorf("%s: %w", network, err)
		}
	}
	if _, err := net.Interfaces(); err != nil {
		return fmt.Errorf("interfaces: %w", err)
	}

	f, err := os.CreateTemp("", "w")
	if err != nil {
		return err
	}
	if _, err := f.Write(bytes.Repeat([]byte("x"), 1<<16)); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	f.Close()
	if err := os.Rename(f.Name(), f.Name()+".2"); err != nil {
		return err
	}
	if err := os.Remove(f.Name() + ".2"); err != nil {
		return err
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGUSR1)
	if err := unix.Kill(os.Getpid(), unix.SIGUSR1); err != nil {
		return err
	}
	select {
	case <-sig:
	case <-time.After(10 * time.Second):
		return errors.New("no SIGUSR1")
	}

	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	time.Sleep(time.Millisecond)
	debug.FreeOSMemory()
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return err
	}
	fmt.Println("GO-OK")
	return nil
}

// echo sends a line through a listener of network and back.
func echo(network, addr string) error {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Fprint(c, line)
	}()
	c, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintln(c, "echo")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "echo\n" {
		return fmt.Errorf("echo: %q %v", line, err)
	}
	return nil
}

// TestSeccompPrograms: a Go program, a shell script with common tools and
// a Python 3 script run under the profile.
func TestSeccompPrograms(t *testing.T) {
	e := newEnv(t)
	for name, text := range map[string]string{"probe.sh": shellScript, "probe.py": pythonScript} {
		if err := os.WriteFile(filepath.Join(e.bundle, name), []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name, want string
		args       []string
	}{
		{"go", "GO-OK", nil},
		{"shell", "SHELL-OK", []string{sandbox.BundlePath + "/probe.sh"}},
		{"python3", "PY-OK", []string{"/usr/bin/python3", sandbox.BundlePath + "/probe.py"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b *box
			if c.args == nil {
				b = e.start("alpha", cgroups.Limits{}, "go-workload")
			} else {
				if _, err := os.Stat(c.args[0]); err != nil && !strings.HasPrefix(c.args[0], sandbox.BundlePath) {
					t.Skipf("%s: %v", c.args[0], err)
				}
				b = e.start("alpha", cgroups.Limits{}, "exec", "EXEC_ARGS="+strings.Join(c.args, " "), "PYTHONDONTWRITEBYTECODE=1")
			}
			out := b.wait(t)
			st, _ := b.Wait()
			if !strings.Contains(out, c.want) || st == nil || !st.Success() {
				t.Errorf("%s: exit %v, stdout %q, stderr %q", c.name, st, out, b.stderr.String())
			}
		})
	}
}
