package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The readers of this file parse the kernel's text files that every user of
// cgroup figures needs (the controller, the supervisor, the benchmarks):
// pressure (PSI), cpu.stat and /proc/stat. The parsers take the file's
// text and fail with ErrInvalidStat on anything malformed, never panic.

// PSI is the cumulative stall time of one pressure file (cpu.pressure,
// memory.pressure, io.pressure).
type PSI struct {
	Some time.Duration // some tasks stalled
	Full time.Duration // all tasks stalled (0 where the kernel has no "full" line)
}

// maxUsec is the largest microsecond count a time.Duration holds.
const maxUsec = uint64(1<<63-1) / uint64(time.Microsecond)

// ReadPSI reads the pressure file of resource ("cpu", "memory", "io") in
// the cgroup2 directory dir (or /proc/pressure). It returns nil and no
// error when dir is "" or the kernel keeps no pressure there (no file, or
// PSI disabled); errors wrap ErrInvalidStat or the kernel's. In hybrid mode
// the unified directory has the file even with no controller enabled.
func ReadPSI(dir, resource string) (*PSI, error) {
	if dir == "" {
		return nil, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, resource+".pressure"))
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, unix.EOPNOTSUPP):
		return nil, nil
	case err != nil:
		return nil, err
	}
	p, err := ParsePSI(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return &p, nil
}

// ParsePSI parses a pressure file:
//
//	some avg10=0.00 avg60=0.00 avg300=0.00 total=1757784
//	full avg10=0.00 avg60=0.00 avg300=0.00 total=1757763
//
// where total is in microseconds. A missing "full" line (kernels before
// 5.13 for cpu) leaves Full zero; a missing "some" line is an error.
func ParsePSI(s string) (PSI, error) {
	var p PSI
	var some bool
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		var total string
		for _, kv := range f[1:] {
			if v, ok := strings.CutPrefix(kv, "total="); ok {
				total = v
			}
		}
		us, err := strconv.ParseUint(total, 10, 63)
		if err != nil || us > maxUsec {
			return PSI{}, fmt.Errorf("%w: pressure line %q", ErrInvalidStat, line)
		}
		d := time.Duration(us) * time.Microsecond
		switch f[0] {
		case "some":
			p.Some, some = d, true
		case "full":
			p.Full = d
		}
	}
	if !some {
		return PSI{}, fmt.Errorf("%w: pressure file has no \"some\" line", ErrInvalidStat)
	}
	return p, nil
}

// CPUStat is the part of a unified cgroup's cpu.stat that scoped reads.
// The kernel keeps the usage lines in every cgroup2 directory, with or
// without the cpu controller; the throttling lines only with it (zero
// where absent).
type CPUStat struct {
	Usage       time.Duration // usage_usec: CPU time of the cgroup and below
	User        time.Duration // user_usec
	System      time.Duration // system_usec
	NrPeriods   uint64        // nr_periods
	NrThrottled uint64        // nr_throttled
	Throttled   time.Duration // throttled_usec
}

// ReadCPUStat reads cpu.stat in the cgroup2 directory dir.
func ReadCPUStat(dir string) (CPUStat, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return CPUStat{}, err
	}
	st, err := ParseCPUStat(string(b))
	if err != nil {
		return CPUStat{}, fmt.Errorf("%s: %w", dir, err)
	}
	return st, nil
}

// ParseCPUStat parses a cgroup2 cpu.stat file, lines of "key value"; keys
// it does not know are skipped, usage_usec is required.
func ParseCPUStat(s string) (CPUStat, error) {
	var st CPUStat
	var usage bool
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return CPUStat{}, fmt.Errorf("%w: cpu.stat line %q", ErrInvalidStat, line)
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return CPUStat{}, fmt.Errorf("%w: cpu.stat line %q", ErrInvalidStat, line)
		}
		usec := func(d *time.Duration) error {
			if v > maxUsec {
				return fmt.Errorf("%w: cpu.stat line %q", ErrInvalidStat, line)
			}
			*d = time.Duration(v) * time.Microsecond
			return nil
		}
		switch f[0] {
		case "usage_usec":
			err, usage = usec(&st.Usage), true
		case "user_usec":
			err = usec(&st.User)
		case "system_usec":
			err = usec(&st.System)
		case "throttled_usec":
			err = usec(&st.Throttled)
		case "nr_periods":
			st.NrPeriods = v
		case "nr_throttled":
			st.NrThrottled = v
		}
		if err != nil {
			return CPUStat{}, err
		}
	}
	if !usage {
		return CPUStat{}, fmt.Errorf("%w: cpu.stat has no usage_usec", ErrInvalidStat)
	}
	return st, nil
}

// userHZ is the unit of /proc/stat's times: USER_HZ is 100 on Linux.
const userHZ = 100

// HostBusy is the CPU time all CPUs of the host have been busy or stolen
// since boot, from /proc/stat (see ParseProcStat).
func HostBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return ParseProcStat(string(b))
}

// ParseProcStat is the busy CPU time in the first line of a /proc/stat
// text: user (guest included), nice, system, irq, softirq and steal, not
// idle and iowait.
func ParseProcStat(stat string) (time.Duration, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("%w: /proc/stat first line %q", ErrInvalidStat, line)
	}
	var ticks uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		n, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil || n > uint64(1<<63-1)/uint64(time.Second/userHZ)-ticks {
			return 0, fmt.Errorf("%w: /proc/stat first line %q", ErrInvalidStat, line)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / userHZ), nil
}
