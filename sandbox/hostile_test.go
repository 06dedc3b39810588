package sandbox_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/sandbox"
)

// inside is the program the test binary runs inside a sandbox. Hostile
// modes try one escape and print "REFUSED: ..." when every try failed or
// "ESCAPED: ..." when one worked; other modes serve the tests. It returns
// the exit code.
func inside(mode string) int {
	f, ok := attempts[mode]
	if !ok {
		f, ok = probes[mode]
	}
	if ok {
		if err := f(); err != nil {
			fmt.Printf("ESCAPED: %v\n", err)
			return 1
		}
		fmt.Println("REFUSED: " + strings.Join(refusals, "; "))
		return 0
	}
	switch mode {
	case "hello":
		host, _ := os.Hostname()
		uidmap, _ := os.ReadFile("/proc/self/uid_map")
		fmt.Printf("hello from %s pid %d uid_map %q\n", host, os.Getpid(), uidmap)
		var names []string
		ifaces, _ := net.Interfaces()
		for _, i := range ifaces {
			names = append(names, fmt.Sprintf("%s:%v", i.Name, i.Flags&net.FlagUp != 0))
		}
		fmt.Printf("interfaces %s\n", strings.Join(names, " "))
		cg, _ := os.ReadFile("/proc/self/cgroup")
		fmt.Printf("cgroup %q\n", cg)
		return 0
	case "sleep":
		time.Sleep(time.Hour)
		return 0
	case "tmp-secret":
		// Leave a secret in /tmp, say so, and stay alive.
		if err := os.WriteFile("/tmp/secret", []byte("alpha's secret"), 0o600); err != nil {
			fmt.Println("write:", err)
			return 1
		}
		fmt.Println("written")
		time.Sleep(time.Hour)
		return 0
	case "plugin":
		servePlugin()
		return 0
	case "describe":
		describe()
		return 0
	case "ps":
		fmt.Println(strings.Join(pids(), " "))
		return 0
	case "rlimits":
		var nofile, core unix.Rlimit
		_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile)
		_ = unix.Getrlimit(unix.RLIMIT_CORE, &core)
		fmt.Fprintln(os.Stderr, "to stderr")
		fmt.Printf("nofile %d %d core %d %d\n", nofile.Cur, nofile.Max, core.Cur, core.Max)
		return 0
	}
	fmt.Printf("unknown mode %q\n", mode)
	return 2
}

// pids lists the processes visible in /proc.
func pids() []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// try is one escape attempt and how it ended.
type try struct {
	what string
	err  error
}

// refusals records why each try failed, for the test log.
var refusals []string

func allFailed(tries ...try) error {
	var escaped []string
	for _, t := range tries {
		if t.err == nil {
			escaped = append(escaped, t.what)
		} else {
			refusals = append(refusals, t.what+": "+t.err.Error())
		}
	}
	if len(escaped) > 0 {
		return errors.New(strings.Join(escaped, "; "))
	}
	return nil
}

func open(path string, flag int) error {
	f, err := os.OpenFile(path, flag, 0o644)
	if err == nil {
		f.Close()
	}
	return err
}

func envInt(key string) int {
	n, _ := strconv.Atoi(os.Getenv(key))
	return n
}

// attempts are the escapes a hostile tenant tries; each must fail.
var attempts = map[string]func() error{
	"see-host-processes": func() error {
		// Only the sandbox's own process may be visible, as pid 1.
		if p := pids(); len(p) != 1 || p[0] != "1" {
			return fmt.Errorf("sees processes %v", p)
		}
		host := envInt("HOST_PID")
		_, err := os.Stat(fmt.Sprintf("/proc/%d/cmdline", host))
		return allFailed(try{fmt.Sprintf("stat host pid %d", host), err})
	},
	"read-outside": func() error {
		var tries []try
		for _, p := range []string{"/root", "/home", "/var", "/run", "/boot", "/etc/shadow",
			"/proc/1/root/etc/shadow", "/proc/1/root/root", "/sys/fs/cgroup", "/etc/passwd-"} {
			_, err := os.Stat(p)
			tries = append(tries, try{"stat " + p, err})
		}
		// The host's /etc/passwd is not the one the sandbox sees.
		b, _ := os.ReadFile("/etc/passwd")
		if strings.Count(string(b), "\n") > 2 {
			tries = append(tries, try{"host /etc/passwd visible", nil})
		}
		return allFailed(tries...)
	},
	"write-rootfs": func() error {
		return allFailed(
			try{"create /x", open("/x", os.O_CREATE|os.O_WRONLY)},
			try{"create /usr/x", open("/usr/x", os.O_CREATE|os.O_WRONLY)},
			try{"write /usr/bin/env", open("/usr/bin/env", os.O_WRONLY)},
			try{"create /ext/x", open(sandbox.BundlePath+"/x", os.O_CREATE|os.O_WRONLY)},
			try{"write /ext/manifest", open(sandbox.BundlePath+"/manifest", os.O_WRONLY)},
			try{"write /etc/passwd", open("/etc/passwd", os.O_WRONLY)},
			try{"write /worker", open(sandbox.WorkerPath, os.O_WRONLY)},
			try{"mkdir /etc/x", os.Mkdir("/etc/x", 0o755)},
			try{"chmod /ext", os.Chmod(sandbox.BundlePath, 0o777)},
		)
	},
	"connect-host-loopback": func() error {
		addr := os.Getenv("HOST_ADDR")
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.Close()
		}
		return allFailed(try{"connect " + addr, err})
	},
	"signal-outside": func() error {
		host := envInt("HOST_PID")
		return allFailed(
			try{"kill host pid", unix.Kill(host, unix.SIGKILL)},
			try{"kill -1 reaches another process", killAllOthers()},
		)
	},
	"ptrace": func() error {
		host := envInt("HOST_PID")
		_, _, e1 := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_ATTACH, uintptr(host), 0, 0, 0, 0)
		_, _, e2 := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_TRACEME, 0, 0, 0, 0, 0)
		return allFailed(try{"ptrace attach host pid", errnoErr(e1)}, try{"ptrace traceme", errnoErr(e2)})
	},
	"mount": func() error {
		_ = os.Mkdir("/tmp/m", 0o755)
		return allFailed(
			try{"mount tmpfs", unix.Mount("tmpfs", "/tmp/m", "tmpfs", 0, "")},
			try{"remount / rw", unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND, "")},
			try{"bind /usr", unix.Mount("/usr", "/tmp/m", "", unix.MS_BIND, "")},
			try{"umount /ext", unix.Unmount(sandbox.BundlePath, unix.MNT_DETACH)},
			try{"umount /proc", unix.Unmount("/proc", unix.MNT_DETACH)},
		)
	},
	"load-bpf": func() error {
		// BPF_MAP_CREATE of an array map: the smallest bpf() that works
		// anywhere bpf() is allowed.
		attr := [5]uint32{2 /* BPF_MAP_TYPE_ARRAY */, 4, 4, 1, 0}
		fd, _, e := unix.Syscall(unix.SYS_BPF, 0 /* BPF_MAP_CREATE */, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		if e == 0 {
			unix.Close(int(fd))
		}
		runtime.KeepAlive(&attr)
		return allFailed(try{"bpf map create", errnoErr(e)})
	},
	"create-device": func() error {
		return allFailed(
			try{"mknod /tmp/null", unix.Mknod("/tmp/null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))},
			try{"mknod /tmp/sda", unix.Mknod("/tmp/sda", unix.S_IFBLK|0o666, int(unix.Mkdev(8, 0)))},
			try{"open /dev/mem", open("/dev/mem", os.O_RDONLY)},
			try{"open /dev/kmsg", open("/dev/kmsg", os.O_RDONLY)},
		)
	},
	"gain-root": func() error {
		status, _ := os.ReadFile("/proc/self/status")
		var tries []try
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "CapEff:"); ok && strings.Trim(strings.TrimSpace(v), "0") != "" {
				tries = append(tries, try{"has capabilities " + strings.TrimSpace(v), nil})
			}
			if v, ok := strings.CutPrefix(line, "NoNewPrivs:"); ok && strings.TrimSpace(v) != "1" {
				tries = append(tries, try{"no_new_privs unset", nil})
			}
		}
		uidmap, _ := os.ReadFile("/proc/self/uid_map")
		if f := strings.Fields(string(uidmap)); len(f) < 2 || f[1] == "0" {
			tries = append(tries, try{"uid 0 maps to host root: " + string(uidmap), nil})
		}
		cmd := exec.Command("/usr/bin/true")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER}
		tries = append(tries,
			try{"unshare user namespace", unix.Unshare(unix.CLONE_NEWUSER)},
			try{"clone user namespace", cmd.Run()},
			try{"setns host mount ns", setns("/proc/1/ns/mnt")},
			try{"write uid_map", os.WriteFile("/proc/self/uid_map", []byte("0 0 1"), 0)},
			try{"sethostname", unix.Sethostname([]byte("pwned"))},
			try{"set time", unix.Settimeofday(&unix.Timeval{Sec: 1})},
			try{"write /proc/sys", os.WriteFile("/proc/sys/kernel/hostname", []byte("pwned"), 0)},
			try{"write /proc/sysrq-trigger", os.WriteFile("/proc/sysrq-trigger", []byte("h"), 0)},
			try{"keyctl", keyctl()},
		)
		return allFailed(tries...)
	},
	"overwrite-self-exe": func() error {
		return allFailed(
			try{"open /proc/self/exe for writing", open("/proc/self/exe", os.O_WRONLY)},
			try{"open /proc/1/exe for writing", open("/proc/1/exe", os.O_WRONLY)},
			try{"truncate /proc/self/exe", os.Truncate("/proc/self/exe", 0)},
			try{"open /worker for writing", open(sandbox.WorkerPath, os.O_WRONLY|os.O_TRUNC)},
		)
	},
	"fill-tmp": func() error {
		// Write until the tmpfs is full; report how far it got.
		f, err := os.Create("/tmp/fill")
		if err != nil {
			return err
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		var n int64
		for n < 1<<30 {
			w, err := f.Write(buf)
			n += int64(w)
			if err != nil {
				if errors.Is(err, unix.ENOSPC) {
					if n > int64(envInt("TMP_CAP")) {
						return fmt.Errorf("wrote %d bytes, more than the cap", n)
					}
					return allFailed(try{fmt.Sprintf("write past %d bytes", n), err})
				}
				return fmt.Errorf("unexpected error after %d bytes: %v", n, err)
			}
		}
		return fmt.Errorf("wrote %d bytes without hitting the cap", n)
	},
}

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// killAllOthers sends SIGKILL to every process it may signal; within the
// sandbox there are none besides itself, so it must find nobody (ESRCH).
func killAllOthers() error {
	return unix.Kill(-1, unix.SIGKILL)
}

func setns(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	runtime.LockOSThread() // the thread may change namespace; let it die
	return unix.Setns(fd, 0)
}

func keyctl() error {
	_, err := unix.KeyctlJoinSessionKeyring("pwned")
	return err
}

// probes report like attempts but need set-up by their test, so TestHostile
// does not run them.
var probes = map[string]func() error{
	// Reads of the files in READ_PATHS, another sandbox's, must all fail.
	"read-other-tmp": func() error {
		var tries []try
		for _, p := range strings.Fields(os.Getenv("READ_PATHS")) {
			_, err := os.ReadFile(p)
			tries = append(tries, try{"read " + p, err})
		}
		return allFailed(tries...)
	},
}
