package sandbox

import (
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// deniedSyscalls fail with EPERM inside every sandbox. The list is a deny
// list on top of what the user namespace and the empty capability sets
// already refuse, so that the kernel code behind these calls is not even
// reachable: mounts, tracing, BPF, keys, kexec, modules, perf, namespaces,
// clocks, swap, reboot and other host-wide knobs.
var deniedSyscalls = []string{
	// mounts and file system views
	"mount", "umount", "umount2", "pivot_root", "chroot", "mount_setattr",
	"move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
	"open_by_handle_at", "name_to_handle_at", "quotactl", "quotactl_fd",
	// tracing and other processes' memory
	"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
	// BPF, perf, keys
	"bpf", "perf_event_open", "keyctl", "add_key", "request_key",
	// kernel and modules
	"kexec_load", "kexec_file_load", "init_module", "finit_module",
	"delete_module", "create_module", "reboot", "syslog", "acct",
	"swapon", "swapoff", "iopl", "ioperm", "lookup_dcookie", "nfsservctl",
	"uselib", "vhangup", "get_kernel_syms", "query_module", "_sysctl",
	"sethostname", "setdomainname", "settimeofday", "clock_settime",
	"clock_adjtime", "adjtimex", "stime",
	// namespaces
	"unshare", "setns",
	// device nodes
	"mknod", "mknodat",
	// fragile or escape-prone interfaces
	"userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
	"personality",
}

// seccompProfile builds the filter: allow by default, EPERM for
// deniedSyscalls, EPERM for clone with CLONE_NEWUSER (the one namespace an
// unprivileged task may still create) and ENOSYS for clone3, whose flags sit
// in memory seccomp cannot read, so that libc falls back to clone.
func seccompProfile() *configs.Seccomp {
	eperm, enosys := uint(unix.EPERM), uint(unix.ENOSYS)
	s := &configs.Seccomp{DefaultAction: configs.Allow}
	for _, name := range deniedSyscalls {
		s.Syscalls = append(s.Syscalls, &configs.Syscall{Name: name, Action: configs.Errno, ErrnoRet: &eperm})
	}
	s.Syscalls = append(s.Syscalls,
		&configs.Syscall{Name: "clone3", Action: configs.Errno, ErrnoRet: &enosys},
		&configs.Syscall{
			Name: "clone", Action: configs.Errno, ErrnoRet: &eperm,
			Args: []*configs.Arg{{Index: 0, Value: unix.CLONE_NEWUSER, ValueTwo: unix.CLONE_NEWUSER, Op: configs.MaskEqualTo}},
		},
	)
	return s
}
