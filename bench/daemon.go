package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/scoped-io/scoped/client"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// stopWait is how long Stop waits for the daemon to exit after SIGTERM.
const stopWait = 60 * time.Second

// Daemon is a scoped daemon that a benchmark runs with a private
// configuration, its stdout and stderr in a log file.
type Daemon struct {
	Socket  string         // its API socket
	LogPath string         // its stdout and stderr
	C       *client.Client // one connection to it while it serves

	cmd        *exec.Cmd
	bin        string
	args       []string
	cgroupRoot string
	logFile    *os.File
	exited     chan struct{}
	logf       func(format string, a ...any)
}

// StartDaemon starts the daemon binary bin (built with -tags seccomp, next
// to scoped-exec) with a configuration in the new directory dir: socket,
// reattach file, state and runtime directories in dir, cgroup root
// cgroupRoot, then settings. Its log is dir+".log". It waits up to 20 s for
// the daemon to answer ListExtensions, and stops it if it does not. The
// daemon gets SIGTERM if the benchmark dies. logf is the benchmark's log:
// it gets a line when the daemon serves and, from Stop, the warnings and
// errors in the daemon's log.
func StartDaemon(ctx context.Context, bin, dir, cgroupRoot, settings string, logf func(format string, a ...any)) (*Daemon, error) {
	if err := os.Mkdir(dir, 0o711); err != nil {
		return nil, err
	}
	run := filepath.Join(dir, "run")
	socket := filepath.Join(run, "scoped.sock")
	cfg := fmt.Sprintf("socket = %q\nreattach_file = %q\nstate_dir = %q\nruntime_dir = %q\ncgroup_root = %q\n",
		socket, filepath.Join(run, "reattach.json"), filepath.Join(dir, "state"), run, cgroupRoot) + settings
	config := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(config, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	d, err := spawn(dir+".log", logf, bin, "--config", config, "--grace", "5s")
	if err != nil {
		return nil, err
	}
	d.Socket, d.cgroupRoot = socket, cgroupRoot
	if err := d.waitServing(ctx, 20*time.Second); err != nil {
		return nil, err
	}
	return d, nil
}

// maxMessage bounds the client's messages: bundles of up to 64 MiB.
const maxMessage = 128 << 20

// waitServing waits up to wait for the daemon to answer ListExtensions,
// keeping that client as C, and stops it if it does not.
func (d *Daemon) waitServing(ctx context.Context, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		c, err := client.Dial(ctx, d.Socket, client.WithMaxMessageSize(maxMessage))
		if err == nil {
			if _, err = c.ListExtensions(ctx, &scopedv1.ListExtensionsRequest{}); err == nil {
				d.C = c
				d.logf("daemon (pid %d) serving on %s, cgroup root %s", d.Pid(), d.Socket, d.cgroupRoot)
				return nil
			}
			c.Close()
		}
		select {
		case <-d.exited:
			d.logFile.Close()
			return fmt.Errorf("scoped exited at start:\n%s", d.LogTail())
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return errors.Join(fmt.Errorf("scoped does not serve %s within %s: %w\n%s", d.Socket, wait, err, d.LogTail()), d.Stop())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// spawn starts bin with args, its stdout and stderr to a new file logPath.
func spawn(logPath string, logf func(string, ...any), bin string, args ...string) (*Daemon, error) {
	d := &Daemon{logf: logf, bin: bin, args: args}
	return d, d.start(logPath)
}

// start runs d's binary and arguments afresh, its output to logPath.
func (d *Daemon) start(logPath string) error {
	d.LogPath, d.exited = logPath, make(chan struct{})
	var err error
	if d.logFile, err = os.Create(d.LogPath); err != nil {
		return err
	}
	d.cmd = exec.Command(d.bin, d.args...)
	d.cmd.Stdout, d.cmd.Stderr = d.logFile, d.logFile
	// If the benchmark dies, the daemon stops and cleans up.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := d.cmd.Start(); err != nil {
		d.logFile.Close()
		return err
	}
	exited := d.exited
	go func() { _ = d.cmd.Wait(); close(exited) }()
	return nil
}

// Pid is the daemon's process id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Stop sends SIGTERM and waits for a clean exit (killing the daemon after
// a minute). Warnings and errors at the end of its log go to logf.
func (d *Daemon) Stop() error {
	_, err := d.StopWithin(stopWait)
	return err
}

// StopWithin is Stop that waits up to wait for the daemon to exit, and
// returns how long it took from SIGTERM to its exit.
func (d *Daemon) StopWithin(wait time.Duration) (time.Duration, error) {
	defer d.logFile.Close()
	d.closeClient()
	select {
	case <-d.exited:
		return 0, fmt.Errorf("scoped (pid %d) had exited (%v) before the benchmark stopped it:\n%s",
			d.cmd.Process.Pid, d.cmd.ProcessState, d.LogTail())
	default:
	}
	t0 := time.Now()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(wait):
		_ = d.cmd.Process.Kill()
		<-d.exited
		return time.Since(t0), fmt.Errorf("scoped did not stop within %s of SIGTERM:\n%s", wait, d.LogTail())
	}
	took := time.Since(t0)
	if st := d.cmd.ProcessState; !st.Success() {
		return took, fmt.Errorf("scoped exited with %v:\n%s", st, d.LogTail())
	}
	// Warnings at stop (anything left) go to the benchmark's stderr.
	for _, line := range strings.Split(d.LogTail(), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			d.logf("daemon: %s", line)
		}
	}
	return took, nil
}

// Kill kills the daemon with SIGKILL, as a crash would, and waits for it
// to exit: it removes nothing. Restart starts its successor.
func (d *Daemon) Kill() error {
	defer d.logFile.Close()
	d.closeClient()
	select {
	case <-d.exited:
		return fmt.Errorf("scoped (pid %d) had exited (%v) before the benchmark killed it:\n%s",
			d.cmd.Process.Pid, d.cmd.ProcessState, d.LogTail())
	default:
	}
	_ = d.cmd.Process.Kill()
	<-d.exited
	return nil
}

// Restart starts the daemon again after Kill, with the same binary and
// configuration, so on the state and runtime directories and the cgroup
// root its predecessor left, its output to logPath. It waits up to wait for
// the daemon to serve, and returns how long that took from its start: the
// time the daemon took to recover what its predecessor left.
func (d *Daemon) Restart(ctx context.Context, logPath string, wait time.Duration) (time.Duration, error) {
	select {
	case <-d.exited:
	default:
		return 0, fmt.Errorf("scoped (pid %d) still runs: Kill it first", d.cmd.Process.Pid)
	}
	t0 := time.Now()
	if err := d.start(logPath); err != nil {
		return 0, err
	}
	if err := d.waitServing(ctx, wait); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

func (d *Daemon) closeClient() {
	if d.C != nil {
		_ = d.C.Close()
		d.C = nil
	}
}

// LogTail is the last 40 lines of the daemon's log.
func (d *Daemon) LogTail() string {
	f, err := os.Open(d.LogPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		lines = append(lines, s.Text())
		if len(lines) > 40 {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// Deploy deploys bundle as the extension name of tenant in env.
func (d *Daemon) Deploy(ctx context.Context, tenant, env, name string, bundle *scopedv1.Bundle) error {
	_, err := d.C.Deploy(ctx, &scopedv1.DeployRequest{Tenant: tenant, Environment: env, Name: name, Bundle: bundle})
	if err != nil {
		return fmt.Errorf("deploy %s for %s/%s: %w", name, tenant, env, err)
	}
	return nil
}

// Invoke makes req with a client deadline of timeout and returns the reply
// and the client's latency.
func (d *Daemon) Invoke(ctx context.Context, timeout time.Duration, req *scopedv1.InvokeRequest) (*scopedv1.InvokeResponse, time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0 := time.Now()
	resp, err := d.C.Invoke(cctx, req)
	took := time.Since(t0)
	if err != nil {
		return nil, took, fmt.Errorf("invoke %s for %s/%s/%s: %w", req.GetExtension(), req.GetTenant(), req.GetEnvironment(), req.GetUser(), err)
	}
	return resp, took, nil
}

// ColdStart is a scope's cold start as the client saw it, in the phases
// the daemon reports (Figures.cold_start): the one source of the phases.
type ColdStart struct {
	Total            time.Duration // the client's latency
	Queued, Duration time.Duration // Figures.queued (worker acquisition) and .duration
	Scope            time.Duration // receipt → the worker's start: checks, admission, the scope's cgroups
	Network          time.Duration // the worker's network (0 in mode none)
	Sandbox          time.Duration // worker cgroup, rootfs, libcontainer create + run
	Handshake        time.Duration // the worker's start up to its handshake and gRPC connection
	Reply            time.Duration // the rest of Total: gRPC to and from the daemon, Dispense, the call
	ScopeKey         string
}

// ColdStart makes req, the first invocation of whoami in a new scope, and
// checks that it was cold, echoed its payload and came with its phases.
func (d *Daemon) ColdStart(ctx context.Context, timeout time.Duration, req *scopedv1.InvokeRequest) (ColdStart, error) {
	resp, took, err := d.Invoke(ctx, timeout, req)
	if err != nil {
		if ctx.Err() != nil {
			return ColdStart{}, fmt.Errorf("interrupted: %w", ctx.Err())
		}
		return ColdStart{}, fmt.Errorf("%w\ndaemon log:\n%s", err, d.LogTail())
	}
	f := resp.GetFigures()
	if !f.GetCold() {
		return ColdStart{}, fmt.Errorf("the first invocation of tenant %s was not cold (worker %s)", req.GetTenant(), f.GetWorker())
	}
	if err := CheckWhoami(resp.GetResult(), string(req.GetPayload())); err != nil {
		return ColdStart{}, err
	}
	cs := f.GetColdStart()
	if cs == nil {
		return ColdStart{}, fmt.Errorf("the cold invocation of tenant %s has no cold-start phases in its figures", req.GetTenant())
	}
	c := ColdStart{Total: took, Queued: f.GetQueued().AsDuration(), Duration: f.GetDuration().AsDuration(),
		Scope: cs.GetScope().AsDuration(), Network: cs.GetNetwork().AsDuration(), Sandbox: cs.GetSandbox().AsDuration(),
		Handshake: cs.GetHandshake().AsDuration(), ScopeKey: f.GetScope()}
	c.Reply = took - c.Scope - c.Network - c.Sandbox - c.Handshake
	return c, nil
}
