package bench

import (
	"context"
	"debug/buildinfo"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
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

// Output prints sections and, when out is not "", replaces each in the
// markdown file out (WriteSection), saying so through logf. A section's
// first line is its start marker, its last line its end marker (Report).
func Output(out string, logf func(string, ...any), sections ...string) error {
	for _, section := range sections {
		fmt.Print(section)
		if out == "" {
			continue
		}
		lines := strings.Split(strings.TrimSuffix(section, "\n"), "\n")
		if err := WriteSection(out, lines[0], lines[len(lines)-1], section); err != nil {
			return err
		}
	}
	if out != "" && len(sections) > 0 {
		logf("wrote %s", out)
	}
	return nil
}

// Main is a benchmark program's main once its flags are defined; it adds
// -o. It parses them, refuses arguments (exit 2), and calls run with the
// flags as given (QuoteArgs, for the report) and a context that SIGINT and
// SIGTERM cancel. With root, it must run as root and holds the host-wide
// lock of name (Lock) meanwhile. It prints the sections run returns, also
// with an error, and writes them into the -o file (Output). It exits 1
// with "<name>: <error>" when something fails.
func Main(name string, root bool, run func(ctx context.Context, args string) ([]string, error)) {
	out := flag.String("o", "", "replace (or add) this program's section in this markdown `file`")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: unexpected arguments %q\n", name, flag.Args())
		os.Exit(2)
	}
	if err := mainRun(name, root, *out, run); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

func mainRun(name string, root bool, out string, run func(context.Context, string) ([]string, error)) error {
	if root {
		if os.Geteuid() != 0 {
			return errors.New("must run as root (sudo make bench)")
		}
		// Two runs at once would share the cgroup roots.
		lock, err := Lock(strings.TrimSuffix(name, "bench"))
		if err != nil {
			return err
		}
		defer lock.Close()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sections, err := run(ctx, QuoteArgs(os.Args[1:]))
	return errors.Join(Output(out, Logger(name+": ", false), sections...), err)
}
