package sandbox_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/sandbox"
)

// TestLaunchersSameIsolation starts the same sandbox with each launcher
// and compares what its process sees of its isolation: mounts and their
// options, credentials, capabilities, no_new_privs, seccomp, rlimits,
// the id map, hostname, network interfaces and its cgroup.
func TestLaunchersSameIsolation(t *testing.T) {
	e := newEnv(t)
	if l, err := sandbox.DefaultLauncher(); l != sandbox.LauncherNative {
		t.Skipf("the native launcher is not available here: %v", err)
	}
	var out [2]string
	for i, l := range []sandbox.Launcher{sandbox.LauncherNative, sandbox.LauncherLibcontainer} {
		b := e.startWith(l, "alpha", cgroups.Limits{}, "describe")
		out[i] = b.wait(t)
		if b.Launcher() != l {
			t.Errorf("started by %s, want %s", b.Launcher(), l)
		}
		if out[i] == "" {
			t.Fatalf("%s: no output; stderr %s", l, b.stderr.String())
		}
	}
	if out[0] != out[1] {
		a, b := strings.Split(out[0], "\n"), strings.Split(out[1], "\n")
		for _, l := range a {
			if !slices.Contains(b, l) {
				t.Errorf("native only:       %s", l)
			}
		}
		for _, l := range b {
			if !slices.Contains(a, l) {
				t.Errorf("libcontainer only: %s", l)
			}
		}
	}
	t.Log(out[0])
}

// describe prints what a sandboxed process sees of its isolation, one
// fact a line, sorted, without what differs between two sandboxes of one
// scope (pids, namespace and mount ids).
func describe() {
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.Fields(l)
			i := slices.Index(f, "-")
			if len(f) < 6 || i < 0 || i+3 > len(f) {
				add("mountinfo? %s", l)
				continue
			}
			// mount point, its options, fs type, super options (tmpfs
			// sizes, say); not ids, root or source. The root is a tmpfs
			// of the native launcher's, a host directory of
			// libcontainer's: its options only.
			if f[4] == "/" {
				add("mount / %s", f[5])
				continue
			}
			add("mount %s %s %s %s", f[4], f[5], f[i+1], f[i+3])
		}
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			for _, k := range []string{"Uid:", "Gid:", "Groups:", "Cap", "NoNewPrivs:", "Seccomp:", "Seccomp_filters:"} {
				if strings.HasPrefix(l, k) {
					add("status %s", strings.Join(strings.Fields(l), " "))
				}
			}
		}
	}
	for _, r := range []struct {
		name string
		res  int
	}{{"nofile", unix.RLIMIT_NOFILE}, {"core", unix.RLIMIT_CORE}, {"nproc", unix.RLIMIT_NPROC}, {"memlock", unix.RLIMIT_MEMLOCK}, {"stack", unix.RLIMIT_STACK}} {
		var l unix.Rlimit
		_ = unix.Getrlimit(r.res, &l)
		add("rlimit %s %d %d", r.name, l.Cur, l.Max)
	}
	for _, f := range []string{"/proc/self/uid_map", "/proc/self/gid_map", "/proc/self/setgroups", "/proc/self/cgroup"} {
		b, _ := os.ReadFile(f)
		add("%s %q", f, strings.Join(strings.Fields(string(b)), " "))
	}
	host, _ := os.Hostname()
	add("hostname %s", host)
	wd, _ := os.Getwd()
	add("cwd %s", wd)
	add("umask %03o", unix.Umask(0o22))
	if ifaces, err := net.Interfaces(); err == nil {
		for _, i := range ifaces {
			add("net %s %s", i.Name, i.Flags)
		}
	} else {
		add("net: %v", err)
	}
	for _, d := range []string{"/", "/dev", "/etc", "/tmp"} {
		ents, _ := os.ReadDir(d)
		var names []string
		for _, e := range ents {
			fi, _ := e.Info()
			names = append(names, fmt.Sprintf("%s:%v", e.Name(), fi.Mode()))
		}
		add("ls %s %s", d, strings.Join(names, " "))
	}
	slices.Sort(lines)
	fmt.Println(strings.Join(lines, "\n"))
}

// TestCleanupBadNativeState: a native state file that names no valid
// cgroup is removed, not followed, and does not fail Cleanup.
func TestCleanupBadNativeState(t *testing.T) {
	state := t.TempDir()
	dir := filepath.Join(state, "native")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"a": "../../etc", "b": "", "c": "/", "d": "relative/x", "e": "/x/../y"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n, err := sandbox.Cleanup(state)
	if err != nil || n != 0 {
		t.Fatalf("Cleanup: %d, %v; want 0, nil", n, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("%d state files left", len(entries))
	}
}

// TestStartFailsCleanly: a sandbox whose program cannot run, or whose
// config is wrong, fails Start with a clear error and leaves nothing behind
// (no process, cgroup, mount or state: newEnv's leak check and the state
// directories).
func TestStartFailsCleanly(t *testing.T) {
	e := newEnv(t)
	node, err := e.tree.Node(cgroups.Limits{}, "t", "alpha")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := e.ids.Acquire("alpha")
	if err != nil {
		t.Fatal(err)
	}
	defer e.ids.Release("alpha")
	for _, c := range []struct {
		name string
		cfg  sandbox.Config
		want error
	}{
		{"missing program", sandbox.Config{Args: []string{"/usr/bin/no-such-program"}}, sandbox.ErrStart},
		{"missing binary", sandbox.Config{Binary: "/no/such/binary"}, sandbox.ErrInvalidConfig},
		{"missing bind source", sandbox.Config{Args: []string{"/usr/bin/true"},
			Binds: []sandbox.Bind{{Source: "/no/such/dir", Target: "/x"}}}, sandbox.ErrInvalidConfig},
		{"relative bind target", sandbox.Config{Args: []string{"/usr/bin/true"},
			Binds: []sandbox.Bind{{Source: "/usr", Target: "../x"}}}, sandbox.ErrInvalidConfig},
		{"unknown launcher", sandbox.Config{Args: []string{"/usr/bin/true"}, Launcher: "runsc"}, sandbox.ErrInvalidConfig},
		{"bad id", sandbox.Config{ID: "../x", Args: []string{"/usr/bin/true"}}, sandbox.ErrInvalidConfig},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			if cfg.ID == "" {
				cfg.ID = "fail" + strconv.Itoa(int(seq.Add(1)))
			}
			cfg.StateDir, cfg.Cgroup, cfg.IDs = e.state, node.Path()+"/"+strings.ReplaceAll(cfg.ID, "/", "_"), ids
			if cfg.Launcher == "" {
				cfg.Launcher = sandbox.Launcher(*launcher)
			}
			s, err := sandbox.Start(cfg)
			if err == nil {
				_ = s.Destroy()
				t.Fatal("Start succeeded")
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Start: %v, want %v", err, c.want)
			}
			t.Log(err)
			for _, d := range []string{"containers", "rootfs", "native"} {
				entries, _ := os.ReadDir(filepath.Join(e.state, d))
				if len(entries) > 0 {
					t.Errorf("%s holds %d entries after a failed Start", d, len(entries))
				}
			}
		})
	}
	if pids, err := node.Pids(); err != nil || len(pids) > 0 {
		t.Errorf("processes left in the scope: %v (%v)", pids, err)
	}
}
