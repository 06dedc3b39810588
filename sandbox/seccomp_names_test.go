//go:build cgo && seccomp

package sandbox

import (
	"errors"
	"slices"
	"testing"

	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"

	"github.com/opencontainers/runc/libcontainer/configs"
)

// newerThanLibseccomp are names of the lists, calls of recent kernels, that
// the libseccomp of a build may not know (Debian 12's 2.5.4 knows those up
// to Linux 6.7). libcontainer skips a name libseccomp does not know, so
// with such a library these calls get ENOSYS.
var newerThanLibseccomp = []string{
	"fchmodat2", "map_shadow_stack", "futex_wake", "futex_wait", "futex_requeue",
	"mseal", "uretprobe", "uprobe", "setxattrat", "getxattrat", "listxattrat",
	"removexattrat", "file_getattr", "file_setattr",
}

// TestSeccompNames catches a misspelt name, which libcontainer would skip
// silently: every name of the lists is a system call of amd64 or arm64 for
// libseccomp (or one newer than it), and is in one list only.
func TestSeccompNames(t *testing.T) {
	major, minor, micro := libseccomp.GetLibraryVersion()
	t.Logf("libseccomp %d.%d.%d", major, minor, micro)
	conditional := []string{"clone", "socket", "mknod", "mknodat", "personality"}
	seen := map[string]string{}
	for _, l := range []struct {
		list  string
		names []string
	}{{"allowed", allowedSyscalls}, {"denied", deniedSyscalls}, {"conditional", conditional}} {
		for _, name := range l.names {
			if other, ok := seen[name]; ok {
				t.Errorf("%s is in the %s list and in the %s list", name, other, l.list)
			}
			seen[name] = l.list
			known, native := false, false
			for _, arch := range []libseccomp.ScmpArch{libseccomp.ArchAMD64, libseccomp.ArchARM64} {
				nr, err := libseccomp.GetSyscallFromNameByArch(name, arch)
				switch {
				case errors.Is(err, libseccomp.ErrSyscallDoesNotExist):
				case err != nil:
					t.Fatalf("%s: %v", name, err)
				default:
					known = true
					native = native || nr >= 0 // negative: a pseudo number, not of arch
				}
			}
			if !known && !slices.Contains(newerThanLibseccomp, name) {
				t.Errorf("%s (%s list): not a system call libseccomp knows", name, l.list)
			}
			if known && !native {
				t.Errorf("%s (%s list): not a system call of amd64 or arm64", name, l.list)
			}
		}
	}
	for _, name := range newerThanLibseccomp {
		if _, err := libseccomp.GetSyscallFromName(name); err == nil {
			t.Logf("%s is known to this libseccomp: it is allowed", name)
		}
	}
}

// TestSeccompProfileShape: ENOSYS by default, clone3 left to it, and
// every rule well formed.
func TestSeccompProfileShape(t *testing.T) {
	s := seccompProfile()
	if s.DefaultAction != configs.Errno || s.DefaultErrnoRet == nil || *s.DefaultErrnoRet != uint(unix.ENOSYS) {
		t.Fatalf("default action %v errno %v, want ENOSYS", s.DefaultAction, s.DefaultErrnoRet)
	}
	for _, r := range s.Syscalls {
		if r.Name == "clone3" {
			t.Errorf("clone3 has a rule; it must get ENOSYS, the default")
		}
		if r.Action == configs.Errno && (r.ErrnoRet == nil || *r.ErrnoRet == uint(unix.ENOSYS)) {
			t.Errorf("%s: errno rule without an errno other than the default's", r.Name)
		}
		for _, a := range r.Args {
			if a.Index > 5 {
				t.Errorf("%s: argument %d", r.Name, a.Index)
			}
		}
	}
}
