// Package host is the daemon's side of the go-plugin workers: it starts a
// worker in its sandbox (sandbox.Runner) under a go-plugin client speaking
// worker.v1 over gRPC, and hands it to the supervisor's pools as a Worker.
// It is apart from package plugins, which worker binaries import (the Go
// SDK, scoped-exec), so that they do not link the sandbox.
package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/plugins"
	workerv1 "github.com/scoped-io/scoped/proto/worker/v1"
	"github.com/scoped-io/scoped/sandbox"
)

// Worker is a started worker as the supervisor's pools use it. Workers are
// hostile: nothing a Worker reports about its process is trusted beyond
// what the kernel says (pid, exit, OOM kills, CPU time of its cgroup).
type Worker interface {
	// Invoke runs one invocation. A result larger than the worker's
	// MaxMessage fails with plugins.ErrReplyTooLarge; any other failure of the
	// call is an error carrying the transport's message only.
	Invoke(ctx context.Context, req *workerv1.InvokeRequest) (*workerv1.InvokeResponse, error)
	// Pid is the worker process's pid in the host's namespace (0: none).
	Pid() int
	// Exited reports whether the worker's process is gone.
	Exited() bool
	// WaitExit waits up to d for the worker's process to be gone; once it
	// is, it removes the sandbox and returns the OOM kills counted in the
	// worker's own cgroup.
	WaitExit(d time.Duration) (oomKills uint64, exited bool)
	// CPUUsage is the CPU time the worker's cgroup has used.
	CPUUsage() (time.Duration, error)
	// Started is when the worker's sandboxed process was running (the
	// zero time: never).
	Started() time.Time
	// Stop kills the worker and removes its sandbox; safe to call many
	// times and concurrently.
	Stop()
}

// Spec is what Starter needs to start one worker.
type Spec struct {
	Sandbox      sandbox.Config // ID, cgroup, binary, bundle, ids, network ...
	StartTimeout time.Duration  // the worker must answer go-plugin's handshake within this
	SocketDir    string         // where go-plugin makes the worker's socket's directory
	MaxMessage   int            // largest gRPC message either way
	// Logger gets go-plugin's own messages (start, handshake, exit).
	Logger hclog.Logger
	// Log gets the starter's warnings about the worker (with the caller's
	// attributes: tenant, scope, worker ...).
	Log *slog.Logger
	// Output returns where the worker's stream ("stdout" or "stderr")
	// goes; it is called once per use go-plugin makes of it.
	Output func(stream string) io.Writer
}

// Starter starts sandboxed go-plugin workers (sandbox.Runner under a
// go-plugin client speaking worker.v1 over gRPC).
type Starter struct{}

// sandboxWorker is a Worker started by Starter.
type sandboxWorker struct {
	client *plugin.Client
	rpc    workerv1.WorkerClient
	cgroup string

	mu     sync.Mutex
	runner *sandbox.Runner // set by go-plugin's RunnerFunc
	once   sync.Once
}

// Start starts a worker as spec says and waits for its handshake. When ctx
// ends first, the worker is killed and the error wraps ctx's cause. On any
// error nothing of the worker is left.
func (Starter) Start(ctx context.Context, spec Spec) (Worker, error) {
	w := &sandboxWorker{cgroup: spec.Sandbox.Cgroup}
	cfg := spec.Sandbox
	// go-plugin would dial the translated path and follow whatever the
	// worker planted there; the runner connects only to a socket inside the
	// worker's socket directory (the last WithContextDialer wins).
	var unsafeSocket atomic.Pointer[error]
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		r := w.sandboxRunner()
		if r == nil {
			return nil, fmt.Errorf("worker %s: no runner to dial", cfg.ID)
		}
		conn, err := r.Dial(ctx)
		if errors.Is(err, sandbox.ErrUnsafeSocket) && unsafeSocket.CompareAndSwap(nil, &err) && spec.Log != nil {
			spec.Log.Warn("worker refused: unsafe socket", "err", err)
		}
		return conn, err
	}
	out := spec.Output
	if out == nil {
		out = func(string) io.Writer { return io.Discard }
	}
	w.client = plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  plugins.Handshake,
		Plugins:          plugins.PluginSet(nil),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		SkipHostEnv:      true,
		StartTimeout:     spec.StartTimeout,
		UnixSocketConfig: &plugin.UnixSocketConfig{TempDir: spec.SocketDir},
		Logger:           spec.Logger, // worker output: Output only
		Stderr:           out("stderr"),
		SyncStdout:       out("stdout"),
		SyncStderr:       out("stderr"),
		// go-plugin reads the worker's stderr through a buffer of this
		// size (64 KiB by default: a quarter of an idle scope's cost in
		// the daemon); longer lines reach the ring in pieces, joined there.
		PluginLogBufferSize: 4 << 10,
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(spec.MaxMessage), grpc.MaxCallSendMsgSize(spec.MaxMessage)), grpc.WithContextDialer(dial)},
		RunnerFunc: func(_ hclog.Logger, cmd *exec.Cmd, dir string) (runner.Runner, error) {
			r, err := sandbox.NewRunner(cfg, cmd, dir)
			w.mu.Lock()
			w.runner = r
			w.mu.Unlock()
			return r, err
		},
	})
	type result struct {
		rpc workerv1.WorkerClient
		err error
	}
	done := make(chan result, 1)
	go func() {
		cp, err := w.client.Client()
		if err != nil {
			done <- result{err: err}
			return
		}
		if p := unsafeSocket.Load(); p != nil { // Client dialled once
			done <- result{err: *p}
			return
		}
		raw, err := cp.Dispense(plugins.PluginName)
		if err != nil {
			done <- result{err: err}
			return
		}
		wc, ok := raw.(workerv1.WorkerClient)
		if !ok {
			done <- result{err: fmt.Errorf("dispensed %T", raw)}
			return
		}
		done <- result{rpc: wc}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			w.Stop()
			return nil, r.err
		}
		w.rpc = r.rpc
	case <-ctx.Done():
		// Kill makes the pending Client() return.
		w.Stop()
		<-done
		return nil, fmt.Errorf("worker %s not started: %w", cfg.ID, context.Cause(ctx))
	}
	return w, nil
}

func (w *sandboxWorker) sandboxRunner() *sandbox.Runner {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.runner
}

func (w *sandboxWorker) sandbox() *sandbox.Sandbox {
	if r := w.sandboxRunner(); r != nil {
		return r.Sandbox()
	}
	return nil
}

// Invoke calls the worker. Its errors carry no gRPC status: the worker
// client of package plugins maps them (a reply over the receive limit is
// plugins.ErrReplyTooLarge).
func (w *sandboxWorker) Invoke(ctx context.Context, req *workerv1.InvokeRequest) (*workerv1.InvokeResponse, error) {
	return w.rpc.Invoke(ctx, req)
}

func (w *sandboxWorker) Started() time.Time {
	if r := w.sandboxRunner(); r != nil {
		return r.Started()
	}
	return time.Time{}
}

func (w *sandboxWorker) Pid() int {
	if sb := w.sandbox(); sb != nil {
		return sb.Pid()
	}
	return 0
}

func (w *sandboxWorker) Exited() bool {
	sb := w.sandbox()
	if sb == nil {
		return true
	}
	select {
	case <-sb.Done():
		return true
	default:
		return w.client.Exited()
	}
}

func (w *sandboxWorker) WaitExit(d time.Duration) (uint64, bool) {
	sb := w.sandbox()
	if sb == nil {
		return 0, false
	}
	// The runner removes the sandbox once its process is gone, and keeps
	// the OOM count of its cgroup (where cgroup v1 counts it).
	select {
	case <-sb.Done():
		_ = sb.Destroy() // idempotent; records the OOM count
		return sb.OOMKills(), true
	case <-time.After(d):
		return 0, false
	}
}

func (w *sandboxWorker) CPUUsage() (time.Duration, error) {
	return cgroups.CPUUsage(w.cgroup)
}

func (w *sandboxWorker) Stop() {
	w.once.Do(func() {
		if r := w.sandboxRunner(); r != nil {
			_ = r.Kill(context.Background())
		}
		w.client.Kill()
	})
}
