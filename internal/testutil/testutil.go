// Package testutil holds the helpers scoped's tests share: skipping with a
// reason where root or a kernel feature is missing, and checking that a test
// left no cgroup, mount, process or file descriptor behind; re-running the
// test binary as a helper process (Helper, HelperCommand); a SyncBuffer for
// a child's output.
package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scoped-io/scoped/internal/mountinfo"
)

// RequiresRoot skips t unless the test runs as root, and under -short
// (make test-unit) even as root: root tests change the host's cgroups,
// mounts and namespaces.
func RequiresRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs root: not run under -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (run the tests with sudo make test)")
	}
}

// RequiresFile skips t unless path exists; feature names what it proves.
func RequiresFile(t testing.TB, path, feature string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("needs %s (%s: %v)", feature, path, err)
	}
}

// Snapshot is what a process holds that a test could leak.
type Snapshot struct {
	FDs      map[string]string // fd number -> target
	Mounts   []string          // mount points of this mount namespace
	Children []int             // direct child processes
	Cgroups  []string          // cgroup directories below the watched roots
}

// Take records the state of the current process and of the cgroup
// directories below roots (absolute cgroup paths, like "/scoped-test").
func Take(roots ...string) Snapshot {
	s := Snapshot{FDs: map[string]string{}}
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // closed meanwhile (or the directory's own fd)
		}
		s.FDs[e.Name()] = target
	}
	ms, _ := mountinfo.Self()
	for _, m := range ms {
		s.Mounts = append(s.Mounts, m.Point)
	}
	s.Children = children(os.Getpid())
	for _, root := range roots {
		mnts, _ := mountinfo.CgroupMounts()
		for _, mnt := range mnts {
			_ = filepath.WalkDir(filepath.Join(mnt, root), func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					s.Cgroups = append(s.Cgroups, p)
				}
				return nil
			})
		}
	}
	slices.Sort(s.Mounts)
	slices.Sort(s.Cgroups)
	return s
}

func children(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parens.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		f := strings.Fields(rest)
		if len(f) > 1 && f[0] != "Z" && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// cachedFD reports whether target is a descriptor that a library opens once
// and keeps for the life of the process: the Go runtime's poller, the cgroup
// library's openat2 handle on /sys/fs/cgroup, runc's detached procfs handle
// (which reads back as "/").
func cachedFD(target string) bool {
	return strings.Contains(target, "eventpoll") || strings.Contains(target, "eventfd") ||
		target == "/sys/fs/cgroup" || target == "/"
}

// Leaks lists what after holds that before did not. Descriptors that
// libraries cache for the life of the process are not counted.
func Leaks(before, after Snapshot) []string {
	var out []string
	for fd, target := range after.FDs {
		if before.FDs[fd] == target || cachedFD(target) {
			continue
		}
		out = append(out, fmt.Sprintf("fd %s -> %s", fd, target))
	}
	for _, m := range after.Mounts {
		if !slices.Contains(before.Mounts, m) {
			out = append(out, "mount "+m)
		}
	}
	for _, c := range after.Children {
		if !slices.Contains(before.Children, c) {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c))
			out = append(out, fmt.Sprintf("process %d (%s)", c, strings.TrimSpace(string(comm))))
		}
	}
	for _, c := range after.Cgroups {
		if !slices.Contains(before.Cgroups, c) {
			out = append(out, "cgroup "+c)
		}
	}
	slices.Sort(out)
	return out
}

// CheckLeaks snapshots now and registers a cleanup, run after every cleanup
// registered later, that fails t if anything new remains: file descriptors,
// mounts, child processes, or cgroup directories below roots. Leaks that
// vanish within a few seconds (a process being reaped) are not reported.
func CheckLeaks(t testing.TB, roots ...string) {
	t.Helper()
	before := Take(roots...)
	t.Cleanup(func() {
		var leaks []string
		for deadline := time.Now().Add(5 * time.Second); ; {
			leaks = Leaks(before, Take(roots...))
			if len(leaks) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		for _, l := range leaks {
			t.Errorf("leaked: %s", l)
		}
	})
}
