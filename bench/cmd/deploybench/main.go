// Command deploybench measures whether one tenant's large deploys stall
// another tenant's invocations: tenant b calls the whoami example back to
// back through the daemon, in phases that take turns — idle; while tenant
// a's application does the work of a deploy itself, with no daemon (encode
// and decode a bundle of -size bytes, hash it, write and sync it: the
// machine's floor for that much work); and while tenant a deploys such a
// bundle (new content every time, so each is written and synced in full)
// back to back. Tenant a is an application of its own: a process (this
// program again, with -deployer) in a cgroup of its own, with its own
// connection. It reports b's latencies per phase kind and their ratios to
// idle (target: p99 during deploys within 2× of idle).
//
// The benchmark builds the daemon (-tags seccomp), scoped-exec and the
// whoami bundle with `go build` in the repository root, runs as root, owns
// the cgroup roots /scoped-bench-deploy and /scoped-bench-deploy-app and
// removes what it made. With -o it writes its section of BENCHMARKS.md
// between marker comments.
package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/client"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
	"google.golang.org/protobuf/proto"
)

var logf = benchmd.Logger("", true)

const (
	markStart    = "<!-- deploybench:start -->"
	markEnd      = "<!-- deploybench:end -->"
	sectionTitle = "## Invocations during another tenant's large deploys"
	baseCommand  = "go run -tags seccomp ./bench/cmd/deploybench"
	cgroupRoot   = "/scoped-bench-deploy"
	appCgroup    = "/scoped-bench-deploy-app" // tenant a's application
	cgroupMark   = "scoped-bench-deploy"
)

type options struct {
	phases int
	phase  time.Duration
	size   int
	out    string
	args   string

	daemonLog string // keep a copy of the daemon's log here
	deployer  string // (internal) deploy as tenant a to this socket, or "local:<dir>", until stdin closes
}

func main() {
	var o options
	flag.IntVar(&o.phases, "phases", 4, "phases of each kind (idle, deploying), taking turns")
	flag.DurationVar(&o.phase, "phase", 5*time.Second, "length of one phase")
	flag.IntVar(&o.size, "size", 60<<20, "bytes of the bundle tenant a deploys (at most [limits] max_bundle, 64 MiB)")
	flag.StringVar(&o.out, "o", "", "replace (or add) this program's section in this markdown `file`")
	flag.StringVar(&o.daemonLog, "daemon-log", "", "keep a copy of the daemon's log in this `file`")
	flag.StringVar(&o.deployer, "deployer", "", "(internal) deploy as tenant a to this `socket` (or do the work in local:<dir>) until stdin closes")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "deploybench: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if o.deployer != "" {
		if err := deployLoop(o.deployer, o.size); err != nil {
			fmt.Fprintln(os.Stderr, "deploybench -deployer:", err)
			os.Exit(1)
		}
		return
	}
	o.args = benchmd.QuoteArgs(os.Args[1:])
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "deploybench:", err)
		os.Exit(1)
	}
}

func run(o options) (retErr error) {
	switch {
	case os.Geteuid() != 0:
		return errors.New("must run as root (sudo make bench)")
	case o.phases < 1 || o.phase < 100*time.Millisecond || o.size < 1 || o.size > 63<<20:
		return errors.New("need -phases ≥ 1, -phase ≥ 100ms, -size in 1..63 MiB")
	}
	kit, err := benchmd.NewKit(cgroupMark, logf)
	if err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, kit.Close()) }()
	kit.Logs.Path = o.daemonLog
	whoami, err := kit.Bundle("./examples/whoami")
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	d, err := kit.StartDaemon(ctx, "d", cgroupRoot, "[metrics]\nlisten = \"off\"\n")
	if err != nil {
		return err
	}
	defer func() {
		_, err := kit.StopDaemon(d, 0)
		retErr = errors.Join(retErr, err)
	}()
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
	self, err := os.Executable()
	if err != nil {
		return err
	}
	app, err := cgroups.Open(appCgroup)
	if err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, app.Close()) }()
	appNode, err := cgroups.Load(appCgroup)
	if err != nil {
		return err
	}
	local := filepath.Join(kit.Work, "local")
	if err := os.Mkdir(local, 0o700); err != nil {
		return err
	}
	kinds := []struct {
		name   string // "" idle
		target string // the deployer's -deployer
	}{{"", ""}, {"local", "local:" + local}, {"deploys", d.Socket}}
	lats := make(map[string][]time.Duration)
	works := make(map[string][]time.Duration)
	for p := range len(kinds) * o.phases {
		k := kinds[p%len(kinds)]
		var dep *deployer
		if k.target != "" {
			if dep, err = startDeployer(self, k.target, o.size, appNode); err != nil {
				return err
			}
		}
		var lat []time.Duration
		for end := time.Now().Add(o.phase); time.Now().Before(end); {
			dt, err := call()
			if err != nil {
				if dep != nil {
					_, _ = dep.stop()
				}
				return err
			}
			lat = append(lat, dt)
		}
		if dep != nil {
			ds, err := dep.stop()
			if err != nil {
				return fmt.Errorf("tenant a's %s: %w", k.name, err)
			}
			works[k.name] = append(works[k.name], ds...)
		}
		lats[k.name] = append(lats[k.name], lat...)
		logf("phase %d (%s): %d calls, p99 %s", p+1, cmp.Or(k.name, "idle"), len(lat), benchmd.Percentile(lat, 99))
	}
	return benchmd.Output(o.out, markStart, markEnd, report(o, lats, works), logf)
}

// deployer is a running child process that deploys as tenant a.
type deployer struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

// startDeployer starts self -deployer target in the cgroup app and waits
// until it has connected and made its bundle.
func startDeployer(self, target string, size int, app *cgroups.Node) (*deployer, error) {
	cmd := exec.Command(self, "-deployer", target, "-size", fmt.Sprint(size))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if err := app.Join(cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, err
	}
	dep := &deployer{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	if !dep.out.Scan() || dep.out.Text() != "ready" {
		_, err := dep.stop()
		return nil, fmt.Errorf("deployer did not start: %w", err)
	}
	return dep, nil
}

// stop closes the deployer's stdin (it finishes the deploy under way) and
// returns how long each of its deploys took.
func (dep *deployer) stop() ([]time.Duration, error) {
	dep.stdin.Close()
	var ds []time.Duration
	for dep.out.Scan() {
		d, err := time.ParseDuration(dep.out.Text())
		if err != nil {
			_ = dep.cmd.Process.Kill()
			_ = dep.cmd.Wait()
			return nil, fmt.Errorf("deployer wrote %q", dep.out.Text())
		}
		ds = append(ds, d)
	}
	return ds, dep.cmd.Wait()
}

// deployLoop is the deployer process: until its stdin closes, it deploys
// a size-byte bundle as tenant a back to back, new content each time, to
// the daemon at target — or, for target "local:<dir>", does that work
// itself (encode, decode, hash, write and sync in dir) — and writes how
// long each took to stdout.
func deployLoop(target string, size int) error {
	var do func(*scopedv1.DeployRequest) error
	if dir, ok := strings.CutPrefix(target, "local:"); ok {
		do = func(req *scopedv1.DeployRequest) error { return localDeploy(dir, req) }
	} else {
		c, err := client.Dial(context.Background(), target, client.WithMaxMessageSize(80<<20))
		if err != nil {
			return err
		}
		defer c.Close()
		do = func(req *scopedv1.DeployRequest) error {
			_, err := c.Deploy(context.Background(), req)
			return err
		}
	}
	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	blob := make([]byte, size)
	fmt.Println("ready")
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		_, _ = rand.Read(blob[:4096]) // new content, new version
		req := &scopedv1.DeployRequest{Tenant: "a", Environment: "production", Name: "big", Bundle: &scopedv1.Bundle{Files: []*scopedv1.File{
			{Path: "manifest.toml", Mode: 0o644, Content: []byte("runtime = \"exec\"\nentrypoint = \"run.sh\"\n")},
			{Path: "run.sh", Mode: 0o755, Content: []byte("#!/bin/sh\ncat\n")},
			{Path: "blob", Mode: 0o644, Content: blob},
		}}}
		t0 := time.Now()
		if err := do(req); err != nil {
			return err
		}
		fmt.Println(time.Since(t0))
	}
}

// localDeploy is the work of a deploy without the daemon: the request
// encoded and decoded once, each file hashed, written and synced in dir.
func localDeploy(dir string, req *scopedv1.DeployRequest) error {
	wire, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	var got scopedv1.DeployRequest
	if err := proto.Unmarshal(wire, &got); err != nil {
		return err
	}
	h := sha256.New()
	for i, f := range got.GetBundle().GetFiles() {
		h.Write(f.GetContent())
		if err := writeSync(filepath.Join(dir, fmt.Sprint(i)), f.GetContent()); err != nil {
			return err
		}
	}
	_ = h.Sum(nil)
	return nil
}

func writeSync(p string, b []byte) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return errors.Join(err, f.Sync(), f.Close())
}

func report(o options, lats, works map[string][]time.Duration) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("%s\n%s\n\n", markStart, sectionTitle)
	p("Tenant b calls whoami back to back through the daemon (one caller, its worker warm) in phases of %s\n", o.phase)
	p("that take turns: idle; while tenant a's application does the work of a %d MiB deploy itself, no\n", o.size>>20)
	p("daemon involved (encode, decode, sha256, write and fsync, back to back: the machine's floor for that\n")
	p("work); and while tenant a deploys a %d MiB bundle through the daemon (new content each time: written\n", o.size>>20)
	p("and synced in full) back to back. Tenant a is an application of its own: its own process, cgroup and\n")
	p("connection. %d phases of each kind. The store writes and syncs a bundle with no lock held (issue 13):\n", o.phases)
	p("b's calls share only the machine's 2 CPUs and disk with a's deploys.\n\n")
	p("- %s\n", benchmd.Command(baseCommand, o.args))
	p("- %s; %s\n\n", benchmd.Machine(), benchmd.Date())
	p("| tenant b's calls | calls | p50 | p90 | p99 | max | p99 / idle |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	idle99 := benchmd.Percentile(sorted(lats[""]), 99)
	row := func(name string, ds []time.Duration) {
		s := sorted(ds)
		p99 := benchmd.Percentile(s, 99)
		p("| %s | %d | %s | %s | %s | %s | %.2f |\n", name, len(s), benchmd.Ms(benchmd.Percentile(s, 50)), benchmd.Ms(benchmd.Percentile(s, 90)),
			benchmd.Ms(p99), benchmd.Ms(s[len(s)-1]), float64(p99)/float64(idle99))
	}
	row("idle", lats[""])
	row("during tenant a's own deploy work, no daemon (floor)", lats["local"])
	row("during tenant a's deploys through the daemon", lats["deploys"])
	p("\n**p99 during deploys / idle: %.2f** (target ≤ 2; the floor: %.2f); p50 during deploys / idle: %.2f.\n",
		float64(benchmd.Percentile(sorted(lats["deploys"]), 99))/float64(idle99),
		float64(benchmd.Percentile(sorted(lats["local"]), 99))/float64(idle99),
		float64(benchmd.Percentile(sorted(lats["deploys"]), 50))/float64(benchmd.Percentile(sorted(lats[""]), 50)))
	p("Tenant a: %d deploys, median %s each; %d rounds of its own work, median %s each.\n",
		len(works["deploys"]), benchmd.Ms(benchmd.Median(works["deploys"])), len(works["local"]), benchmd.Ms(benchmd.Median(works["local"])))
	p("%s\n", markEnd)
	return b.String()
}

func sorted(ds []time.Duration) []time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s
}
