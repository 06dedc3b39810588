package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// profiler records system-wide CPU profiles with perf(1) while the warm
// calls of the largest caller count run, one per path, and summarises them
// (-perf): which processes, binaries and functions the CPUs spent the
// calls on, kernel included (seccomp, eBPF programs, the scheduler).
type profiler struct {
	dir   string   // perf.data files, one per path and slice
	files []string // recorded, in order
	paths map[string][]string
}

func newProfiler() (*profiler, error) {
	if _, err := exec.LookPath("perf"); err != nil {
		return nil, fmt.Errorf("-perf needs perf(1) (Debian: apt-get install linux-perf): %w", err)
	}
	dir, err := os.MkdirTemp("", "scoped-bench-perf-")
	if err != nil {
		return nil, err
	}
	return &profiler{dir: dir, paths: map[string][]string{}}, nil
}

// record runs perf record on every CPU (with call graphs, at 499 Hz) while
// run runs, into a file of path.
func (p *profiler) record(ctx context.Context, path string, run func() error) error {
	file := filepath.Join(p.dir, fmt.Sprintf("%s-%d.data", path, len(p.files)))
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "perf", "record", "-a", "-g", "-F", "499", "-q", "-o", file)
	cmd.Stderr = &stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 30 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("perf record: %w", err)
	}
	time.Sleep(200 * time.Millisecond) // perf has its events open
	err := run()
	_ = cmd.Process.Signal(syscall.SIGINT)
	if werr := cmd.Wait(); werr != nil && !isInterrupted(werr) {
		err = errors.Join(err, fmt.Errorf("perf record: %w: %s", werr, strings.TrimSpace(stderr.String())))
	}
	p.files = append(p.files, file)
	p.paths[path] = append(p.paths[path], file)
	return err
}

func isInterrupted(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && (ee.ExitCode() == 130 || ee.ExitCode() == -1)
}

// report is each path's profile as markdown: the share of samples by
// process and binary, then the top functions of the daemon and the worker.
func (p *profiler) report(callers int, comms map[string][]string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "CPU profiles of the warm calls with %d callers (`perf record -a -g -F 499` on every CPU while the\n", callers)
	fmt.Fprintf(&b, "path's measured slices ran; `perf report --no-children`, so each function counts its own samples).\n")
	for _, path := range slices.Sorted(func(yield func(string) bool) {
		for k := range p.paths {
			if !yield(k) {
				return
			}
		}
	}) {
		files := p.paths[path]
		fmt.Fprintf(&b, "\n#### %s\n\nBy process and binary (at least 1 %% of the samples):\n\n```\n", path)
		out, err := perfReport(files, "--sort", "comm,dso", "--percent-limit", "1")
		if err != nil {
			return "", err
		}
		b.WriteString(out)
		b.WriteString("```\n")
		for _, comm := range comms[path] {
			fmt.Fprintf(&b, "\nFunctions of `%s` (at least 0.5 %% of all samples):\n\n```\n", comm)
			out, err := perfReport(files, "--comms", comm, "--sort", "dso,sym", "--percent-limit", "0.5")
			if err != nil {
				return "", err
			}
			b.WriteString(out)
			b.WriteString("```\n")
		}
	}
	return b.String(), nil
}

// perfReport is perf report's table over files (merged in order) without
// its comments.
func perfReport(files []string, args ...string) (string, error) {
	var all strings.Builder
	for _, f := range files {
		var stderr bytes.Buffer
		cmd := exec.Command("perf", append([]string{"report", "-i", f, "--stdio", "--no-children", "-g", "none", "-q"}, args...)...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("perf report %s: %w: %s", f, err, strings.TrimSpace(stderr.String()))
		}
		fmt.Fprintf(&all, "# %s\n", filepath.Base(f))
		for _, l := range strings.Split(string(out), "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
				all.WriteString(strings.TrimRight(l, " ") + "\n")
			}
		}
	}
	return all.String(), nil
}

func (p *profiler) close() error {
	if p == nil {
		return nil
	}
	return os.RemoveAll(p.dir)
}
