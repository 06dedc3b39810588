package bench

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/cgroups"
)

// Machine describes the host for a report's list of facts: "Kernel:
// <release>; cgroup mode: <mode>; CPUs: <n> (<model>)", the model left out
// where /proc/cpuinfo does not name it.
func Machine() string {
	info, _ := os.ReadFile("/proc/cpuinfo")
	return fmt.Sprintf("Kernel: %s; cgroup mode: %s; CPUs: %d%s", kernelRelease(), cgroups.HostMode(), runtime.NumCPU(), cpuModel(string(info)))
}

// kernelRelease is uname's release, or "unknown".
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// cpuModel is " (<model name>)" from the first model name line of the
// /proc/cpuinfo text info, or "".
func cpuModel(info string) string {
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return " (" + strings.TrimSpace(v) + ")"
		}
	}
	return ""
}

// LoadAvg is the first three fields of /proc/loadavg (the 1, 5 and 15
// minute load averages), or "unknown".
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return loadAvg(string(b))
}

func loadAvg(s string) string {
	f := strings.Fields(s)
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// MachineBusy is the CPU time all CPUs have been busy or stolen since boot
// (cgroups.HostBusy), 0 when unreadable.
func MachineBusy() time.Duration {
	d, _ := cgroups.HostBusy()
	return d
}

// QuoteArgs joins a command's arguments for a report, quoting for the shell
// those that are empty or hold a space or another special character.
func QuoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = a
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}

// Command is a report's "Command:" fact for a run of base (the `go run`
// command) with the flags args (as QuoteArgs gives them): `sudo make bench`
// when args are the Makefile's "-o BENCHMARKS.md", else the command run as
// root.
func Command(base, args string) string {
	cmd := base
	if args != "" {
		cmd += " " + args
	}
	if args == "-o BENCHMARKS.md" {
		return "Command: `sudo make bench`, which runs `" + cmd + "`"
	}
	return "Command: `" + cmd + "`, as root"
}

// BusyWindow is the CPU time the machine was busy (all CPUs) in the next
// 100 ms.
func BusyWindow() time.Duration {
	b0 := MachineBusy()
	time.Sleep(100 * time.Millisecond)
	return MachineBusy() - b0
}

// Settle waits, at most max, until the machine's busy CPU time over 100 ms
// (BusyWindow) is at most baseline plus share of its capacity, so that what
// a run left to the kernel does not run into the next measurement. It
// returns how long it waited and whether the machine settled.
func Settle(max, baseline time.Duration, share float64) (time.Duration, bool) {
	t0 := time.Now()
	limit := baseline + time.Duration(share*float64(100*time.Millisecond*time.Duration(runtime.NumCPU())))
	for time.Since(t0) < max {
		if BusyWindow() <= limit {
			return time.Since(t0), true
		}
	}
	return time.Since(t0), false
}

// Date is now, as the reports give it: "2006-01-02 15:04 UTC".
func Date() string { return time.Now().UTC().Format("2006-01-02 15:04 UTC") }

// Facts are the first lines of a report's list of facts: the command
// (see Command), the date and the machine.
func Facts(base, args string) string {
	return "- " + Command(base, args) + "\n- Date: " + Date() + "\n- " + Machine() + "\n"
}
