package supervisor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/netns"
	"github.com/scoped-io/scoped/plugins"
	workerv1 "github.com/scoped-io/scoped/proto/worker/v1"
	"github.com/scoped-io/scoped/sandbox"
)

// scope is one live scope: its cgroup node, its host id range, its log
// ring and its workers, per extension version.
type scope struct {
	id      ScopeID
	tier    string // the tier it was created in
	node    *cgroups.Node
	ids     sandbox.IDRange
	ring    *logRing
	limits  cgroups.Limits
	created time.Time

	mu       sync.Mutex
	closed   bool
	workers  map[string][]*worker // by extension version key
	starting map[string]int
	changed  chan struct{} // closed and replaced whenever a slot frees
	oomSeen  uint64
	lastUsed time.Time
	oomLost  atomic.Uint64 // OOM kills counted in workers' cgroups only (v1, hybrid): added to the scope's figures

	use map[string]*extUse // by extension, for metering; guarded by mu

	invocations atomic.Int64
	active      atomic.Int64 // invocations in flight
	cgid        uint64       // unified cgroup id, the accounting key (0: not accounted)

	netMu sync.Mutex
	net   *netns.Net // the scope's egress network, made by its first egress worker
}

// versionKey names one stored bundle: the environment, because a scope may
// serve several environments, and the digest, because a version number is
// reused after the extension was removed.
func versionKey(e ExtensionInfo) string {
	return e.Environment + "/" + e.Name + "@" + e.Version + "/" + e.Digest
}

// worker is one sandboxed go-plugin worker serving one extension version.
type worker struct {
	id      string
	ext     ExtensionInfo
	started time.Time
	client  *plugin.Client
	rpc     workerv1.WorkerClient
	runner  *sandbox.Runner
	slots   chan struct{}
	exec    *execState // the exec runtime's; nil for Go workers

	invocations atomic.Int64
	inFlight    atomic.Int32
	current     atomic.Value // string: the invocation id when exactly one is in flight
	lastUsed    atomic.Int64 // unix nanos
	retired     atomic.Bool

	failOnce sync.Once
	failErr  error
	stopOnce sync.Once
	unhold   func() // gives back the worker's hold on its bundle version

	start workerStart // the phases of its start (coldstart.go)
}

func newWorkerID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "w" + hex.EncodeToString(b[:])
}

func (w *worker) pid() int {
	if w.runner == nil || w.runner.Sandbox() == nil {
		return 0
	}
	return w.runner.Sandbox().Pid()
}

func (w *worker) exited() bool {
	if w.runner == nil || w.runner.Sandbox() == nil {
		return true
	}
	select {
	case <-w.runner.Sandbox().Done():
		return true
	default:
		return w.client.Exited()
	}
}

// stop kills the worker and removes its sandbox; safe to call many times.
func (w *worker) stop() {
	w.stopOnce.Do(func() {
		if w.runner != nil {
			_ = w.runner.Kill(context.Background())
		}
		w.client.Kill()
		if w.unhold != nil {
			w.unhold()
		}
	})
}

// startWorker starts a worker for ext in sc's sandbox settings.
func (s *Supervisor) startWorker(ctx context.Context, sc *scope, ext ExtensionInfo) (*worker, error) {
	w := &worker{id: newWorkerID(), ext: ext, started: time.Now(), slots: make(chan struct{}, s.conf().Pool.MaxConcurrent)}
	w.current.Store("")
	w.lastUsed.Store(time.Now().UnixNano())
	cfg := sandbox.Config{
		ID:       w.id,
		StateDir: s.sandboxDir,
		Cgroup:   sc.node.Path() + "/" + w.id,
		Hostname: hostname(sc.id),
		IDs:      sc.ids,
		Bundle:   ext.Dir,
		TmpSize:  s.conf().Scope.TmpSize,
	}
	netPath, err := s.workerNetwork(sc, ext)
	if err != nil {
		return nil, err
	}
	cfg.NetNS = netPath
	w.start.network = time.Now()
	switch ext.Runtime {
	case RuntimeGo:
		cfg.Binary = filepath.Join(ext.Dir, filepath.FromSlash(ext.Entrypoint))
	case RuntimeExec:
		cfg.Binary = s.conf().execWorker()
		cfg.Env = []string{"SCOPED_EXEC_ENTRYPOINT=" + sandbox.BundlePath + "/" + ext.Entrypoint}
		// One invocation at a time: what runs in its cgroup is the
		// invocation's, and is killed when it ends (endExec).
		w.slots = make(chan struct{}, 1)
		if w.exec, err = newExecState(cfg.Cgroup); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: runtime %q", ErrInvalid, ext.Runtime)
	}
	tag := func(stream string) *ringWriter {
		return &ringWriter{ring: sc.ring, scope: sc.id.Key(), worker: w.id, ext: ext.Name, stream: stream,
			current: func() string { return w.current.Load().(string) },
			out:     sc.ring.workerLog(s.log, sc.id.Tenant, sc.id.Key())}
	}
	maxMsg := int(s.conf().Limits.MaxResult + s.conf().Limits.MaxPayload + 64<<10)
	// go-plugin would dial the translated path and follow whatever the
	// worker planted there; the runner connects only to a socket inside the
	// worker's socket directory (the last WithContextDialer wins).
	var unsafeSocket atomic.Pointer[error]
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		conn, err := w.runner.Dial(ctx)
		if errors.Is(err, sandbox.ErrUnsafeSocket) && unsafeSocket.CompareAndSwap(nil, &err) {
			s.log.Warn("worker refused: unsafe socket", "tenant", sc.id.Tenant, "scope", sc.id.Key(), "worker", w.id,
				"extension", ext.Name, "err", err)
		}
		return conn, err
	}
	w.unhold = s.store.Hold(ext) // every failure below goes through w.stop
	w.client = plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  plugins.Handshake,
		Plugins:          plugins.PluginSet(nil),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		SkipHostEnv:      true,
		StartTimeout:     s.conf().Pool.StartTimeout.Duration,
		UnixSocketConfig: &plugin.UnixSocketConfig{TempDir: s.socketDir},
		Logger:           newPluginLogger(s.pluginLog, filepath.Base(cfg.Binary)), // worker output: the ring and workerLog only
		Stderr:           tag("stderr"),
		SyncStdout:       tag("stdout"),
		SyncStderr:       tag("stderr"),
		// go-plugin reads the worker's stderr through a buffer of this
		// size (64 KiB by default: a quarter of an idle scope's cost in
		// the daemon); longer lines reach the ring in pieces, joined there.
		PluginLogBufferSize: 4 << 10,
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(maxMsg), grpc.MaxCallSendMsgSize(maxMsg)), grpc.WithContextDialer(dial)},
		RunnerFunc: func(_ hclog.Logger, cmd *exec.Cmd, dir string) (runner.Runner, error) {
			r, err := sandbox.NewRunner(cfg, cmd, dir)
			w.runner = r
			return r, err
		},
	})
	fail := func(err error) (*worker, error) {
		w.stop()
		return nil, fmt.Errorf("%w: start worker for %s: %w", ErrWorker, versionKey(ext), err)
	}
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
			return fail(r.err)
		}
		w.rpc = r.rpc
		w.start.sandbox, w.start.ready = w.runner.Started(), time.Now()
	case <-ctx.Done():
		// Kill makes the pending Client() return.
		w.stop()
		<-done
		return nil, fmt.Errorf("%w: while starting a worker for %s", ErrDeadline, versionKey(ext))
	}
	s.log.Debug("worker started", "tenant", sc.id.Tenant, "scope", sc.id.Key(), "worker", w.id,
		"extension", ext.Name, "version", ext.Version, "pid", w.pid())
	return w, nil
}

// notify wakes invocations waiting for a slot. Callers hold sc.mu.
func (sc *scope) notify() {
	close(sc.changed)
	sc.changed = make(chan struct{})
}

// acquire returns a worker of ext with a free slot, starting one when
// none is free and the pool may grow; cold is true when it started one.
func (s *Supervisor) acquire(ctx context.Context, sc *scope, ext ExtensionInfo, maxWorkers int) (w *worker, cold bool, err error) {
	key := versionKey(ext)
	for {
		sc.mu.Lock()
		if sc.closed {
			sc.mu.Unlock()
			return nil, false, ErrStopping
		}
		for _, w := range sc.workers[key] {
			if w.retired.Load() {
				continue
			}
			select {
			case w.slots <- struct{}{}:
				sc.lastUsed = time.Now()
				sc.mu.Unlock()
				return w, false, nil
			default:
			}
		}
		if len(sc.workers[key])+sc.starting[key] < maxWorkers {
			sc.starting[key]++
			sc.mu.Unlock()
			w, err := s.startWorker(ctx, sc, ext)
			sc.mu.Lock()
			if sc.starting[key]--; sc.starting[key] == 0 {
				delete(sc.starting, key)
			}
			if err == nil {
				if sc.closed {
					err = ErrStopping
					go w.stop()
				} else {
					w.slots <- struct{}{}
					sc.workers[key] = append(sc.workers[key], w)
					sc.lastUsed = time.Now()
				}
			}
			sc.notify()
			sc.mu.Unlock()
			if err != nil {
				return nil, true, err
			}
			return w, true, nil
		}
		ch := sc.changed
		sc.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, false, fmt.Errorf("%w: all %d workers of %s in scope %s stayed busy", ErrBusy, maxWorkers, key, sc.id.Key())
		}
	}
}

// release gives back w's slot, and retires w if it served its share.
func (s *Supervisor) release(sc *scope, w *worker) {
	n := w.invocations.Load()
	if (s.conf().Pool.RecycleAfter > 0 && n >= s.conf().Pool.RecycleAfter) ||
		(s.conf().Pool.MaxAge.Duration > 0 && time.Since(w.started) > s.conf().Pool.MaxAge.Duration) {
		s.retire(sc, w, "recycled")
	}
	<-w.slots
	sc.mu.Lock()
	if w.retired.Load() && len(w.slots) == 0 {
		go w.stop()
	}
	sc.notify()
	sc.mu.Unlock()
}

// retire takes w out of the pool; it is stopped once idle (or now, by the
// caller, when it failed).
func (s *Supervisor) retire(sc *scope, w *worker, why string) {
	if w.retired.Swap(true) {
		return
	}
	sc.mu.Lock()
	key := versionKey(w.ext)
	ws := sc.workers[key]
	for i, x := range ws {
		if x == w {
			sc.workers[key] = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(sc.workers[key]) == 0 {
		delete(sc.workers, key)
	}
	sc.notify()
	sc.mu.Unlock()
	s.log.Debug("worker retired", "tenant", sc.id.Tenant, "scope", sc.id.Key(), "worker", w.id, "reason", why,
		"invocations", w.invocations.Load())
}

// failure works out once why w broke (its process exited, the kernel
// OOM-killed it, or it stopped answering) and removes it from the pool.
func (s *Supervisor) failure(sc *scope, w *worker, cause error) error {
	w.failOnce.Do(func() {
		s.retire(sc, w, "failed")
		// The runner removes the sandbox once its process is gone, and
		// keeps the OOM count of its cgroup (where cgroup v1 counts it);
		// v2 counts it in the scope's node too.
		oom := false
		if w.runner != nil && w.runner.Sandbox() != nil {
			sb := w.runner.Sandbox()
			select {
			case <-sb.Done():
				_ = sb.Destroy() // idempotent; records the OOM count
				if n := sb.OOMKills(); n > w.oomBase() {
					oom = true
					sc.countOOM(n-w.oomBase(), sc.node.OOMKillsReachParents())
				}
			case <-time.After(time.Second):
			}
		}
		w.failErr = cause
		if st, err := sc.node.Stats(); err == nil {
			sc.mu.Lock()
			oom = oom || st.OOMKills > sc.oomSeen
			sc.oomSeen = st.OOMKills
			sc.mu.Unlock()
			if oom {
				w.failErr = fmt.Errorf("%w (limit %d MiB): the worker of %s was killed", ErrOutOfMemory, sc.limits.MemoryMax>>20, w.ext.Name)
			}
		}
		s.log.Warn("worker failed", "tenant", sc.id.Tenant, "scope", sc.id.Key(), "worker", w.id,
			"extension", w.ext.Name, "err", w.failErr)
		go w.stop()
	})
	return w.failErr
}

// stopAll stops every worker of sc and marks it closed.
func (sc *scope) stopAll() {
	sc.mu.Lock()
	sc.closed = true
	var all []*worker
	for _, ws := range sc.workers {
		all = append(all, ws...)
	}
	sc.workers = map[string][]*worker{}
	sc.notify()
	sc.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range all {
		wg.Add(1)
		go func() { defer wg.Done(); w.stop() }()
	}
	wg.Wait()
}

// idleWorkers returns workers idle longer than d beyond keep per version.
func (sc *scope) idleWorkers(d time.Duration, keep int) []*worker {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	var out []*worker
	for _, ws := range sc.workers {
		kept := 0
		for _, w := range ws {
			idle := len(w.slots) == 0 && time.Since(time.Unix(0, w.lastUsed.Load())) > d
			if idle && kept >= keep {
				out = append(out, w)
				continue
			}
			kept++
		}
	}
	return out
}

// hostname is the scope key, cut to the kernel's 64 bytes.
func hostname(id ScopeID) string {
	h := id.Key()
	if len(h) > 64 {
		h = h[:64]
	}
	return h
}
