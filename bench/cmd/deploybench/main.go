// Command deploybench measures whether one tenant's large deploys stall
// another's invocations: tenant b calls whoami back to back in phases that
// take turns: idle; while tenant a's application does a deploy's work itself
// (the machine's floor); while tenant a deploys large bundles through the
// daemon. Tenant a is this program again, in a cgroup of its own.
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
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/client"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

var logf = benchmd.Logger("", true)

const (
	cgroupRoot = "/scoped-bench-deploy"
	appCgroup  = "/scoped-bench-deploy-app" // tenant a's application
	cgroupMark = "scoped-bench-deploy"
	// deployerEnv makes this program tenant a's deployer: "<target> <size>".
	deployerEnv = "SCOPED_DEPLOYBENCH_DEPLOYER"
)

type options struct {
	phases    int
	phase     time.Duration
	size      int
	daemonLog string
}

func main() {
	if v := os.Getenv(deployerEnv); v != "" {
		target, size, _ := strings.Cut(v, " ")
		n, err := strconv.Atoi(size)
		if err == nil {
			err = deployLoop(target, n)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "deploybench deployer:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.IntVar(&o.phases, "phases", 4, "phases of each kind (idle, deploying), taking turns")
	flag.DurationVar(&o.phase, "phase", 5*time.Second, "length of one phase")
	flag.IntVar(&o.size, "size", 60<<20, "bytes of the bundle tenant a deploys (at most [limits] max_bundle, 64 MiB)")
	flag.StringVar(&o.daemonLog, "daemon-log", "", "keep a copy of the daemon's log in this `file`")
	benchmd.Main("deploybench", true, func(ctx context.Context, args string) ([]string, error) {
		if o.phases < 1 || o.phase < 100*time.Millisecond || o.size < 1 || o.size > 63<<20 {
			return nil, errors.New("need -phases ≥ 1, -phase ≥ 100ms, -size in 1..63 MiB")
		}
		return run(ctx, o, args)
	})
}

func run(ctx context.Context, o options, args string) (_ []string, retErr error) {
	kit, err := benchmd.NewKit(cgroupMark, logf)
	if err != nil {
		return nil, err
	}
	defer func() { retErr = errors.Join(retErr, kit.Close()) }()
	kit.Logs.Path = o.daemonLog
	whoami, err := kit.Bundle("./examples/whoami")
	if err != nil {
		return nil, err
	}
	d, err := kit.StartDaemon(ctx, "d", cgroupRoot, "[metrics]\nlisten = \"off\"\n")
	if err != nil {
		return nil, err
	}
	if err := d.Deploy(ctx, "b", "production", "whoami", whoami); err != nil {
		return nil, err
	}
	call := func() (time.Duration, error) {
		_, took, err := d.Invoke(ctx, time.Minute, &scopedv1.InvokeRequest{Tenant: "b", Environment: "production", Extension: "whoami", Payload: []byte("x")})
		return took, err
	}
	for range 200 { // warm: worker started, connections up
		if _, err := call(); err != nil {
			return nil, err
		}
	}
	app, err := cgroups.Open(appCgroup)
	if err != nil {
		return nil, err
	}
	defer func() { retErr = errors.Join(retErr, app.Close()) }()
	appNode, err := cgroups.Load(appCgroup)
	if err != nil {
		return nil, err
	}
	local := filepath.Join(kit.Work, "local")
	if err := os.Mkdir(local, 0o700); err != nil {
		return nil, err
	}
	kinds := []struct{ name, target string }{{"", ""}, {"local", "local:" + local}, {"deploys", d.Socket}} // "": idle
	lats, works := map[string][]time.Duration{}, map[string][]time.Duration{}
	for p := range len(kinds) * o.phases {
		k := kinds[p%len(kinds)]
		var dep *deployer
		if k.target != "" {
			if dep, err = startDeployer(k.target, o.size, appNode); err != nil {
				return nil, err
			}
		}
		var lat []time.Duration
		for end := time.Now().Add(o.phase); time.Now().Before(end) && err == nil; {
			var dt time.Duration
			dt, err = call()
			lat = append(lat, dt)
		}
		if dep != nil {
			ds, derr := dep.stop()
			works[k.name], err = append(works[k.name], ds...), errors.Join(err, derr)
		}
		if err != nil {
			return nil, fmt.Errorf("phase %d (%s): %w", p+1, cmp.Or(k.name, "idle"), err)
		}
		lats[k.name] = append(lats[k.name], lat...)
		logf("phase %d (%s): %d calls, p99 %s", p+1, cmp.Or(k.name, "idle"), len(lat), benchmd.Percentile(lat, 99))
	}
	return []string{report(o, args, lats, works)}, nil
}

// deployer is a running child process that deploys as tenant a.
type deployer struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

// startDeployer starts this program as the deployer to target in the
// cgroup app and waits until it has connected and made its bundle.
func startDeployer(target string, size int, app *cgroups.Node) (*deployer, error) {
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d", deployerEnv, target, size))
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

// deployLoop is the deployer: until its stdin closes, it deploys a
// size-byte bundle as tenant a back to back, new content each time, to the
// daemon at target, or for target "local:<dir>" does that work itself
// (encode, decode, hash, write and sync in dir), and writes how long each
// took to stdout.
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

// localDeploy is a deploy's work without the daemon: the request encoded
// and decoded once, each file hashed, written and synced in dir.
func localDeploy(dir string, req *scopedv1.DeployRequest) error {
	wire, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	var got scopedv1.DeployRequest
	if err := proto.Unmarshal(wire, &got); err != nil {
		return err
	}
	for i, f := range got.GetBundle().GetFiles() {
		_ = sha256.Sum256(f.GetContent())
		w, err := os.Create(filepath.Join(dir, fmt.Sprint(i)))
		if err != nil {
			return err
		}
		_, err = w.Write(f.GetContent())
		if err := errors.Join(err, w.Sync(), w.Close()); err != nil {
			return err
		}
	}
	return nil
}

func report(o options, args string, lats, works map[string][]time.Duration) string {
	pc := benchmd.Percentile
	r := benchmd.NewReport("deploybench", "## Invocations during another tenant's large deploys")
	r.P("Tenant b calls whoami back to back through the daemon (one caller, its worker warm) in phases of %s\n", o.phase)
	r.P("that take turns: idle; while tenant a's application does the work of a %d MiB deploy itself, no\n", o.size>>20)
	r.P("daemon involved (encode, decode, sha256, write and fsync, back to back: the machine's floor for that\n")
	r.P("work); and while tenant a deploys a %d MiB bundle through the daemon (new content each time: written\n", o.size>>20)
	r.P("and synced in full) back to back. Tenant a is an application of its own: its own process, cgroup and\n")
	r.P("connection. %d phases of each kind. The store writes and syncs a bundle with no lock held (issue 13):\n", o.phases)
	r.P("b's calls share only the machine's 2 CPUs and disk with a's deploys.\n\n")
	r.P("- %s\n", benchmd.Command("go run -tags seccomp ./bench/cmd/deploybench", args))
	r.P("- %s; %s\n\n", benchmd.Machine(), benchmd.Date())
	r.P("| tenant b's calls | calls | p50 | p90 | p99 | max | p99 / idle |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	idle99 := float64(pc(lats[""], 99))
	for _, row := range []struct{ name, kind string }{{"idle", ""},
		{"during tenant a's own deploy work, no daemon (floor)", "local"}, {"during tenant a's deploys through the daemon", "deploys"}} {
		s := lats[row.kind]
		r.P("| %s | %d | %s | %s | %s | %s | %.2f |\n", row.name, len(s), benchmd.Ms(pc(s, 50)), benchmd.Ms(pc(s, 90)),
			benchmd.Ms(pc(s, 99)), benchmd.Ms(pc(s, 100)), float64(pc(s, 99))/idle99)
	}
	r.P("\n**p99 during deploys / idle: %.2f** (target ≤ 2; the floor: %.2f); p50 during deploys / idle: %.2f.\n",
		float64(pc(lats["deploys"], 99))/idle99, float64(pc(lats["local"], 99))/idle99, float64(pc(lats["deploys"], 50))/float64(pc(lats[""], 50)))
	r.P("Tenant a: %d deploys, median %s each; %d rounds of its own work, median %s each.\n",
		len(works["deploys"]), benchmd.Ms(benchmd.Median(works["deploys"])), len(works["local"]), benchmd.Ms(benchmd.Median(works["local"])))
	return r.End()
}
