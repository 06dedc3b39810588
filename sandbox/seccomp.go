package sandbox

import (
	"slices"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// The seccomp profile is an allow list, modelled on the default profiles of
// Docker (moby profiles/seccomp/default.json) and containerd for a
// container without capabilities. A system call it does not name fails
// with ENOSYS: one that a future kernel adds, too, so that programs take
// the fallback they have for older kernels. Some calls get a clearer
// answer: EPERM for the refused ones a program may probe (deniedSyscalls,
// namespaced clone, device nodes) and EAFNOSUPPORT for socket families
// other than unix, inet, inet6 and netlink (route).
//
// Names are resolved by libseccomp for the native architecture; a name it
// does not know there (a call of another architecture, or one newer than
// the library) is skipped by libcontainer, and that call gets ENOSYS. The
// lists hold the calls of amd64 and arm64. The filter has the native
// architecture only: a 32-bit (compat) system call is killed (SIGSYS).
//
// An extension that needs a call missing here gets ENOSYS; add the call to
// allowedSyscalls after checking what it reaches in the kernel (see the
// README's sandbox section).

// allowedSyscalls are allowed with any arguments.
var allowedSyscalls = []string{
	// files and directories
	"access", "faccessat", "faccessat2", "chdir", "fchdir", "getcwd",
	"open", "openat", "openat2", "creat", "close", "close_range",
	"read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
	"preadv2", "pwritev2", "lseek", "sendfile", "copy_file_range",
	"splice", "tee", "vmsplice", "readahead", "fadvise64",
	"fallocate", "truncate", "ftruncate", "fsync", "fdatasync", "sync",
	"syncfs", "sync_file_range", "flock", "fcntl", "dup", "dup2", "dup3",
	"stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
	"getdents", "getdents64", "readlink", "readlinkat",
	"mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat",
	"renameat2", "link", "linkat", "symlink", "symlinkat",
	"chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "fchownat",
	"lchown", "umask", "utime", "utimes", "utimensat", "futimesat",
	"getxattr", "lgetxattr", "fgetxattr", "getxattrat", "setxattr", "lsetxattr",
	"fsetxattr", "setxattrat", "listxattr", "llistxattr", "flistxattr",
	"listxattrat", "removexattr", "lremovexattr", "fremovexattr",
	"removexattrat", "file_getattr", "file_setattr",
	"inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
	"ioctl", "memfd_create", "pipe", "pipe2",
	// asynchronous I/O (not io_uring, see deniedSyscalls)
	"io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents",
	"io_pgetevents",
	// waiting for events
	"select", "pselect6", "poll", "ppoll", "epoll_create", "epoll_create1",
	"epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
	"eventfd", "eventfd2", "signalfd", "signalfd4",
	"timerfd_create", "timerfd_settime", "timerfd_gettime",
	// memory
	"brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "msync",
	"mincore", "mlock", "mlock2", "mlockall", "munlock", "munlockall",
	"membarrier", "pkey_alloc", "pkey_free", "pkey_mprotect", "mseal",
	"map_shadow_stack",
	// processes and threads (clone: see seccompProfile)
	"fork", "vfork", "execve", "execveat", "exit", "exit_group",
	"wait4", "waitid", "kill", "tkill", "tgkill", "pidfd_open",
	"pidfd_send_signal", "process_mrelease",
	"set_tid_address", "set_robust_list", "get_robust_list", "rseq",
	"arch_prctl", "set_thread_area", "get_thread_area", "prctl",
	"capget", "capset", "seccomp", "landlock_create_ruleset",
	"landlock_add_rule", "landlock_restrict_self",
	"futex", "futex_waitv", "futex_wake", "futex_wait", "futex_requeue",
	"sched_yield", "sched_getaffinity", "sched_setaffinity",
	"sched_getparam", "sched_setparam", "sched_getscheduler",
	"sched_setscheduler", "sched_getattr", "sched_setattr",
	"sched_get_priority_max", "sched_get_priority_min",
	"sched_rr_get_interval", "getpriority", "setpriority",
	"ioprio_get", "ioprio_set", "getcpu",
	"getrlimit", "setrlimit", "prlimit64", "getrusage", "times", "sysinfo", "uname",
	"getrandom",
	// breakpoints the host's uprobes return through
	"uretprobe", "uprobe",
	// ids and sessions (inside the user namespace, without capabilities)
	"getpid", "getppid", "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid",
	"getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid",
	"getgroups", "setuid", "setgid", "setreuid", "setregid", "setresuid",
	"setresgid", "setfsuid", "setfsgid", "setgroups",
	// signals
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending",
	"rt_sigsuspend", "rt_sigtimedwait", "rt_sigqueueinfo",
	"rt_tgsigqueueinfo", "sigaltstack", "restart_syscall", "pause", "alarm",
	// time (reading it; setting it is refused)
	"clock_gettime", "clock_getres", "clock_nanosleep", "gettimeofday",
	"time", "nanosleep", "getitimer", "setitimer", "timer_create",
	"timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete",
	// sockets (socket: see seccompProfile)
	"socketpair", "bind", "listen", "accept", "accept4", "connect",
	"getsockname", "getpeername", "sendto", "recvfrom", "sendmsg", "recvmsg",
	"sendmmsg", "recvmmsg", "shutdown", "setsockopt", "getsockopt",
	// System V and POSIX IPC (the sandbox has its own IPC namespace)
	"shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop",
	"semctl", "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink",
	"mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
}

// deniedSyscalls fail with EPERM, an answer that says "not here" to a
// program probing for them, where ENOSYS would say "not in this kernel".
// The user namespace and the empty capability sets refuse most of them
// anyway; the filter keeps the kernel code behind them out of reach:
// mounts, tracing, BPF, keys, kexec, modules, perf, namespaces, clocks,
// swap, reboot and other host-wide knobs.
var deniedSyscalls = []string{
	// mounts and file system views
	"mount", "umount2", "pivot_root", "chroot", "mount_setattr",
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
	"clock_adjtime", "adjtimex",
	// namespaces
	"unshare", "setns",
	// fragile or escape-prone interfaces
	"userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
}

// Arguments of the calls allowed conditionally.
const (
	// nsCloneFlags are the clone flags that make a namespace.
	nsCloneFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS |
		unix.CLONE_NEWIPC | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET
	// personality(2) values: linux/personality.h.
	perLinux         = 0x0000
	perLinux32       = 0x0008
	uname26          = 0x0020000
	personalityQuery = 0xffffffff // reads the persona without changing it
)

// personalities are the personality(2) arguments Docker allows: PER_LINUX,
// PER_LINUX32, each with UNAME26, and the query. ADDR_NO_RANDOMIZE and the
// other flags get ENOSYS.
var personalities = []uint64{perLinux, perLinux32, uname26, uname26 | perLinux32, personalityQuery}

// socketFamilies are the address families a sandbox may open sockets of;
// AF_NETLINK also needs protocol NETLINK_ROUTE (for net.Interfaces and
// getifaddrs).
var socketFamilies = []uint64{unix.AF_UNIX, unix.AF_INET, unix.AF_INET6, unix.AF_NETLINK}

// seccompProfile builds the filter: ENOSYS by default, allowedSyscalls,
// EPERM for deniedSyscalls, and calls allowed by their arguments:
//
//   - clone without namespace flags (EPERM with them); clone3, whose flags
//     sit in memory seccomp cannot read, is left out so that it gets ENOSYS
//     and libc falls back to clone;
//   - socket of socketFamilies (netlink route only), EAFNOSUPPORT for the
//     other families and EPROTONOSUPPORT for other netlink protocols;
//   - mknod and mknodat of fifos, sockets and regular files (EPERM for
//     device nodes);
//   - personality with Docker's values.
func seccompProfile() *configs.Seccomp {
	enosys := uint(unix.ENOSYS)
	s := &configs.Seccomp{DefaultAction: configs.Errno, DefaultErrnoRet: &enosys}
	for _, name := range allowedSyscalls {
		s.Syscalls = append(s.Syscalls, &configs.Syscall{Name: name, Action: configs.Allow})
	}
	for _, name := range deniedSyscalls {
		s.Syscalls = append(s.Syscalls, errnoRule(name, unix.EPERM))
	}

	// clone: flags are argument 0 on amd64 and arm64 (not on s390x).
	var nsFlags []*configs.Arg
	for f := uint64(1); f <= nsCloneFlags; f <<= 1 {
		if f&nsCloneFlags != 0 {
			nsFlags = append(nsFlags, maskEq(0, f, f))
		}
	}
	s.Syscalls = append(s.Syscalls,
		allowRule("clone", maskEq(0, nsCloneFlags, 0)),
		// One rule per flag: libcontainer turns conditions on the same
		// argument into rules of their own, that is, an "or".
		errnoRule("clone", unix.EPERM, nsFlags...),
	)

	// socket(family, type, protocol).
	for _, fam := range socketFamilies {
		if fam == unix.AF_NETLINK {
			s.Syscalls = append(s.Syscalls,
				allowRule("socket", eq(0, fam), eq(2, unix.NETLINK_ROUTE)),
				errnoRule("socket", unix.EPROTONOSUPPORT, eq(0, fam), &configs.Arg{Index: 2, Value: unix.NETLINK_ROUTE, Op: configs.NotEqualTo}))
			continue
		}
		s.Syscalls = append(s.Syscalls, allowRule("socket", eq(0, fam)))
	}
	var otherFamilies []*configs.Arg
	for fam := uint64(0); fam <= unix.AF_NETLINK; fam++ {
		if !slices.Contains(socketFamilies, fam) {
			otherFamilies = append(otherFamilies, eq(0, fam))
		}
	}
	otherFamilies = append(otherFamilies, &configs.Arg{Index: 0, Value: unix.AF_NETLINK, Op: configs.GreaterThan})
	s.Syscalls = append(s.Syscalls, errnoRule("socket", unix.EAFNOSUPPORT, otherFamilies...))

	// mknod(path, mode, dev) and mknodat(dirfd, path, mode, dev).
	for _, c := range []struct {
		name string
		idx  uint
	}{{"mknod", 1}, {"mknodat", 2}} {
		name, idx := c.name, c.idx
		for _, typ := range []uint64{unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFREG, 0} {
			s.Syscalls = append(s.Syscalls, allowRule(name, maskEq(idx, unix.S_IFMT, typ)))
		}
		s.Syscalls = append(s.Syscalls, errnoRule(name, unix.EPERM,
			maskEq(idx, unix.S_IFMT, unix.S_IFCHR), maskEq(idx, unix.S_IFMT, unix.S_IFBLK)))
	}

	for _, p := range personalities {
		s.Syscalls = append(s.Syscalls, allowRule("personality", eq(0, p)))
	}
	return s
}

func allowRule(name string, args ...*configs.Arg) *configs.Syscall {
	return &configs.Syscall{Name: name, Action: configs.Allow, Args: args}
}

func errnoRule(name string, errno unix.Errno, args ...*configs.Arg) *configs.Syscall {
	ret := uint(errno)
	return &configs.Syscall{Name: name, Action: configs.Errno, ErrnoRet: &ret, Args: args}
}

func eq(idx uint, v uint64) *configs.Arg {
	return &configs.Arg{Index: idx, Value: v, Op: configs.EqualTo}
}

// maskEq matches when argument idx & mask == v.
func maskEq(idx uint, mask, v uint64) *configs.Arg {
	return &configs.Arg{Index: idx, Value: mask, ValueTwo: v, Op: configs.MaskEqualTo}
}
