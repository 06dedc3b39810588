// Command deploybench measures whether one tenant's large deploys stall
// another tenant's invocations: tenant b calls the whoami example back to
// back through the daemon, in phases that take turns — idle, and while
// tenant a deploys a bundle of -size bytes (new content every time, so each
// is written and synced in full) back to back. It reports b's latencies per
// phase kind and their ratio (target: p99 during deploys within 2× of idle).
//
// The benchmark builds the daemon (-tags seccomp), scoped-exec and the
// whoami bundle with `go build` in the repository root, runs as root, owns
// the cgroup root /scoped-bench-deploy and removes what it made. With -o it
// writes its section of BENCHMARKS.md between marker comments.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/client"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

const (
	markStart    = "<!-- deploybench:start -->"
	markEnd      = "<!-- deploybench:end -->"
	sectionTitle = "## Invocations during another tenant's large deploys"
	baseCommand  = "go run -tags seccomp ./bench/cmd/deploybench"
	cgroupRoot   = "/scoped-bench-deploy"
	cgroupMark   = "scoped-bench-deploy"
)

type options struct {
	phases int
	phase  time.Duration
	size   int
	out    string
	args   string
}

func main() {
	var o options
	flag.IntVar(&o.phases, "phases", 4, "phases of each kind (idle, deploying), taking turns")
	flag.DurationVar(&o.phase, "phase", 5*time.Second, "length of one phase")
	flag.IntVar(&o.size, "size", 60<<20, "bytes of the bundle tenant a deploys (at most [limits] max_bundle, 64 MiB)")
	flag.StringVar(&o.out, "o", "", "replace (or add) this program's section in this markdown `file`")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "deploybench: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	o.args = benchmd.QuoteArgs(os.Args[1:])
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "deploybench:", err)
		os.Exit(1)
	}
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", a...)
}

func run(o options) (retErr error) {
	switch {
	case os.Geteuid() != 0:
		return errors.New("must run as root (sudo make bench)")
	case o.phases < 1 || o.phase < 100*time.Millisecond || o.size < 1 || o.size > 63<<20:
		return errors.New("need -phases ≥ 1, -phase ≥ 100ms, -size in 1..63 MiB")
	}
	if mine, _ := benchmd.CgroupsLeft(cgroupMark); len(mine) > 0 {
		return fmt.Errorf("cgroups of an earlier run are left (%s); is one running?", strings.Join(mine, " "))
	}
	root, err := benchmd.RepoRoot()
	if err != nil {
		return err
	}
	work, err := benchmd.WorkDir("scoped-bench-deploy-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin, err := benchmd.BuildDaemon(root, filepath.Join(work, "bin"))
	if err != nil {
		return err
	}
	whoami, err := benchmd.BuildBundle(root, filepath.Join(work, "whoami"), "whoami")
	if err != nil {
		return err
	}
	if err := benchmd.ChmodDirs(work); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	d, err := benchmd.StartDaemon(ctx, bin, filepath.Join(work, "d"), cgroupRoot, "[metrics]\nlisten = \"off\"\n", logf)
	if err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, d.Stop()) }()
	c, err := client.Dial(ctx, d.Socket, client.WithMaxMessageSize(80<<20))
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Deploy(ctx, &scopedv1.DeployRequest{Tenant: "b", Environment: "production", Name: "whoami", Bundle: whoami}); err != nil {
		return err
	}
	call := func() (time.Duration, error) {
		t0 := time.Now()
		_, err := c.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: "b", Environment: "production", Extension: "whoami", Payload: []byte("x")})
		return time.Since(t0), err
	}
	for range 200 { // warm: worker started, connections up
		if _, err := call(); err != nil {
			return err
		}
	}
	var idle, busy, deploys []time.Duration
	blob := make([]byte, o.size)
	for p := range 2 * o.phases {
		deploying := p%2 == 1
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var derr error
		if deploying {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					_, _ = rand.Read(blob[:4096]) // new content, new version
					b := &scopedv1.Bundle{Files: []*scopedv1.File{
						{Path: "manifest.toml", Mode: 0o644, Content: []byte("runtime = \"exec\"\nentrypoint = \"run.sh\"\n")},
						{Path: "run.sh", Mode: 0o755, Content: []byte("#!/bin/sh\ncat\n")},
						{Path: "blob", Mode: 0o644, Content: blob},
					}}
					t0 := time.Now()
					if _, err := c.Deploy(ctx, &scopedv1.DeployRequest{Tenant: "a", Environment: "production", Name: "big", Bundle: b}); err != nil {
						derr = err
						return
					}
					deploys = append(deploys, time.Since(t0))
				}
			}()
		}
		var lat []time.Duration
		for end := time.Now().Add(o.phase); time.Now().Before(end); {
			dt, err := call()
			if err != nil {
				close(stop)
				wg.Wait()
				return err
			}
			lat = append(lat, dt)
		}
		close(stop)
		wg.Wait()
		if derr != nil {
			return fmt.Errorf("deploy of tenant a: %w", derr)
		}
		if deploying {
			busy = append(busy, lat...)
		} else {
			idle = append(idle, lat...)
		}
		logf("phase %d (deploying: %v): %d calls, p99 %s", p+1, deploying, len(lat), benchmd.Percentile(lat, 99))
	}
	text := report(o, idle, busy, deploys)
	fmt.Println(text)
	if o.out != "" {
		return benchmd.WriteSection(o.out, markStart, markEnd, text)
	}
	return nil
}

func report(o options, idle, busy, deploys []time.Duration) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("%s\n%s\n\n", markStart, sectionTitle)
	p("Tenant b calls whoami back to back through the daemon (one caller, its worker warm) in phases of %s\n", o.phase)
	p("that take turns: idle, and while tenant a deploys a %d MiB bundle (new content each time: written and\n", o.size>>20)
	p("synced in full) back to back. %d phases of each kind. The store writes and syncs a bundle with no lock\n", o.phases)
	p("held (issue 13): b's calls share only the machine's 2 CPUs and disk with a's deploys.\n\n")
	p("- %s\n", benchmd.Command(baseCommand, o.args))
	p("- %s; %s\n\n", benchmd.Machine(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	p("| tenant b's calls | calls | p50 | p90 | p99 | max |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	row := func(name string, ds []time.Duration) {
		s := slices.Clone(ds)
		slices.Sort(s)
		p("| %s | %d | %s | %s | %s | %s |\n", name, len(s), ms(benchmd.Percentile(s, 50)), ms(benchmd.Percentile(s, 90)),
			ms(benchmd.Percentile(s, 99)), ms(s[len(s)-1]))
	}
	row("idle", idle)
	row("during tenant a's deploys", busy)
	p("\n**p99 during deploys / idle: %.2f** (p50: %.2f); %d deploys of tenant a, median %s each.\n",
		float64(benchmd.Percentile(busy, 99))/float64(benchmd.Percentile(idle, 99)),
		float64(benchmd.Percentile(busy, 50))/float64(benchmd.Percentile(idle, 50)),
		len(deploys), ms(benchmd.Median(deploys)))
	p("%s\n", markEnd)
	return b.String()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
