package bench

import (
	"debug/buildinfo"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// The number formats of the reports.

// Ms is d in milliseconds with two decimals: "1.25 ms".
func Ms(d time.Duration) string { return MsP(d, 2) }

// MsP is d in milliseconds with prec decimals.
func MsP(d time.Duration, prec int) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', prec, 64) + " ms"
}

// Us is d in whole microseconds: "125 µs".
func Us(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + " µs"
}

// Secs is d in seconds with one decimal: "1.5 s".
func Secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s" }

// Ratio is a/b with two decimals, "–" when b is 0.
func Ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return strconv.FormatFloat(a/b, 'f', 2, 64)
}

// DRatio is the Ratio of two durations.
func DRatio(a, b time.Duration) string { return Ratio(float64(a), float64(b)) }

// MiB is n bytes in MiB with one decimal, KiB in whole KiB.
func MiB(n float64) string { return strconv.FormatFloat(n/(1<<20), 'f', 1, 64) + " MiB" }

// KiB is n bytes in whole KiB.
func KiB(n float64) string { return strconv.FormatFloat(n/(1<<10), 'f', 0, 64) + " KiB" }

// Plural is word, with an s unless n is 1.
func Plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// Pcts is "p50 / p90 / p99" of ds, in milliseconds with prec decimals.
func Pcts(ds []time.Duration, prec int) string {
	return MsP(Median(ds), prec) + " / " + MsP(Percentile(ds, 90), prec) + " / " + MsP(Percentile(ds, 99), prec)
}

// ModuleVersion is the version of the module path in the running
// benchmark, or "unknown".
func ModuleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == path {
				return m.Version
			}
		}
	}
	return "unknown"
}

// BinaryModuleVersion is the version of the module path in the Go binary
// bin, or "unknown".
func BinaryModuleVersion(bin, path string) string {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "unknown"
	}
	for _, m := range bi.Deps {
		if m.Path == path {
			return m.Version
		}
	}
	return "unknown"
}

// ToolVersion is the first line of `tool --version`, without runc's
// "runc version " prefix.
func ToolVersion(tool string) string {
	out, err := exec.Command(tool, "--version").Output()
	if err != nil {
		return filepath.Base(tool) + " (version unknown)"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimPrefix(line, "runc version ")
}

// Logger is a benchmark's log to stderr: each line starts with prefix
// (e.g. "invokebench: "), with the time of day when clock is set.
func Logger(prefix string, clock bool) func(format string, a ...any) {
	return func(format string, a ...any) {
		if clock {
			format = time.Now().Format("15:04:05 ") + format
		}
		fmt.Fprintf(os.Stderr, prefix+format+"\n", a...)
	}
}

// Output prints a program's section to stdout and, when out is not "",
// replaces the section between markStart and markEnd in the markdown file
// out (WriteSection), saying so through logf.
func Output(out, markStart, markEnd, section string, logf func(string, ...any)) error {
	fmt.Print(section)
	if out == "" {
		return nil
	}
	if err := WriteSection(out, markStart, markEnd, section); err != nil {
		return err
	}
	logf("wrote %s", out)
	return nil
}

// Main is a benchmark program's main after its flags are defined: it
// parses them, refuses arguments (exit 2), and runs run with the flags as
// given (QuoteArgs, for the report's command), exiting 1 with
// "<name>: <error>" when it fails.
func Main(name string, run func(args string) error) {
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: unexpected arguments %q\n", name, flag.Args())
		os.Exit(2)
	}
	if err := run(QuoteArgs(os.Args[1:])); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}
