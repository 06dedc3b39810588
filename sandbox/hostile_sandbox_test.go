package sandbox_test

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/testutil"
)

// TestHostile runs one sandbox per escape attempt; each must report that
// every try failed, and the host must be unharmed.
func TestHostile(t *testing.T) {
	e := newEnv(t)

	// A host process to aim at, and a listener on the host's loopback.
	sleeper := exec.Command("/bin/sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			t.Errorf("the host listener accepted a connection from %s", c.RemoteAddr())
		}
	}()
	selfSum := fileSum(t, e.self)
	const tmpCap = 4 << 20

	for _, name := range slices.Sorted(maps.Keys(attempts)) {
		t.Run(name, func(t *testing.T) {
			b := e.start("hostile", cgroups.Limits{}, name,
				"HOST_PID="+strconv.Itoa(sleeper.Process.Pid),
				"HOST_ADDR="+ln.Addr().String(),
				"TMP_CAP="+strconv.Itoa(tmpCap))
			out := b.wait(t)
			if !strings.HasPrefix(lastLine(out), "REFUSED") {
				t.Errorf("attempt %s: %s (stderr %q)", name, out, b.stderr.String())
			} else {
				t.Log(strings.ReplaceAll(out, "\n", " | "))
			}
			if sleeper.ProcessState != nil {
				t.Fatal("the host process was killed")
			}
			if err := sleeper.Process.Signal(syscall.Signal(0)); err != nil {
				t.Fatalf("the host process is gone: %v", err)
			}
			if got := fileSum(t, e.self); got != selfSum {
				t.Fatal("the host binary was modified")
			}
		})
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestAttemptsWorkOnHost proves that the harmless attempts do detect an
// escape: run unsandboxed, as root on the host, they must report one. (The
// others would harm the host: kill -1, truncating the test binary, ….)
func TestAttemptsWorkOnHost(t *testing.T) {
	testutil.RequiresRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for _, name := range []string{"see-host-processes", "read-outside", "connect-host-loopback", "load-bpf"} {
		cmd := testutil.HelperCommand(t, insideHelper, name)
		cmd.Env = []string{testutil.HelperEnv(insideHelper), "HOST_PID=" + strconv.Itoa(os.Getpid()), "HOST_ADDR=" + ln.Addr().String()}
		out, _ := cmd.Output()
		if !strings.HasPrefix(lastLine(string(out)), "ESCAPED") {
			t.Errorf("%s on the host: %q, want ESCAPED", name, out)
		}
	}
}
