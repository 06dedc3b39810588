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
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/scoped-io/scoped/cgroups"
	"golang.org/x/sys/unix"
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

// ModuleVersion is the version of the module path in the Go binary bin,
// or in this benchmark for bin "", or "unknown".
func ModuleVersion(bin, path string) string {
	bi, ok := debug.ReadBuildInfo()
	if bin != "" {
		b, err := buildinfo.ReadFile(bin)
		bi, ok = b, err == nil
	}
	for i := 0; ok && i < len(bi.Deps); i++ {
		if bi.Deps[i].Path == path {
			return bi.Deps[i].Version
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

// intro opens a BENCHMARKS.md that WriteSection creates.
const intro = `# Benchmarks

Each section below comes from one benchmark program under ` + "`bench/cmd`" + `. A program
runs all its variants side by side in one run, interleaved round-robin, so that
machine noise hits them alike: read the ratios between variants, which carry
over to other machines far better than the absolute times. Reproduce them with
` + "`sudo make bench`" + ` (root; it installs bubblewrap and runc on Debian or Ubuntu),
which reruns every benchmark and replaces its section here.
`

// WriteSection replaces one program's section of a markdown file (the
// lines from markStart to markEnd) with section, appends it if the file has
// none, or creates the file starting with the benchmarks' intro. The file
// is replaced atomically; mismatched markers are an error.
func WriteSection(path, markStart, markEnd, section string) error {
	old, err := os.ReadFile(path)
	var doc string
	switch {
	case errors.Is(err, os.ErrNotExist):
		doc = intro + "\n" + section
	case err != nil:
		return err
	default:
		s := string(old)
		i := strings.Index(s, markStart)
		j := strings.Index(s, markEnd)
		switch {
		case i >= 0 && j > i:
			end := j + len(markEnd)
			if end < len(s) && s[end] == '\n' {
				end++
			}
			doc = s[:i] + section + s[end:]
		case i >= 0 || j >= 0:
			return fmt.Errorf("%s: unmatched %s / %s markers; fix them by hand", path, markStart, markEnd)
		default:
			doc = strings.TrimRight(s, "\n") + "\n\n" + section
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// Report is one section of BENCHMARKS.md being written: NewReport writes
// its start marker and title, End its end marker.
type Report struct {
	strings.Builder
	mark string
}

// NewReport starts the section marked <!-- mark:start --> with the
// heading title.
func NewReport(mark, title string) *Report {
	r := &Report{mark: mark}
	r.P("<!-- %s:start -->\n%s\n\n", mark, title)
	return r
}

// P appends a formatted text.
func (r *Report) P(format string, a ...any) { fmt.Fprintf(&r.Builder, format, a...) }

// End appends the end marker and returns the section.
func (r *Report) End() string {
	r.P("<!-- %s:end -->\n", r.mark)
	return r.String()
}

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
