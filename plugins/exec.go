package plugins

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultMaxResult is the largest result the exec runtime returns unless
// ExecOptions.MaxResult says otherwise.
const DefaultMaxResult = 4 << 20

// The environment variables the exec runtime sets for every invocation.
const (
	EnvInvocationID = "SCOPED_INVOCATION_ID"
	EnvExtension    = "SCOPED_EXTENSION"
	// EnvMetaPrefix + MetadataEnvKey(key) holds the value of metadata key.
	EnvMetaPrefix = "SCOPED_META_"
)

var (
	// ErrResultTooLarge: the program wrote more than MaxResult bytes to its
	// stdout; it was killed.
	ErrResultTooLarge = errors.New("result too large")
	// ErrExit: the program exited with a non-zero status or was killed by a
	// signal it was not sent for a deadline.
	ErrExit = errors.New("program failed")
	// ErrInvalidMetadata: a metadata value cannot be passed in the
	// environment (it holds a NUL byte).
	ErrInvalidMetadata = errors.New("invalid metadata")
)

const (
	// waitDelay bounds how long an invocation waits, once the program has
	// exited or been killed, for descendants that escaped its process group
	// and still hold its stdout or stderr.
	waitDelay = time.Second
	// maxLine is the longest stderr line forwarded in one piece; a longer
	// one is split.
	maxLine = 16 << 10
	// tailLines and tailLineMax bound the stderr tail in an ErrExit error.
	tailLines   = 8
	tailLineMax = 256
)

// ExecOptions adjust the exec runtime. The zero value is the default.
type ExecOptions struct {
	// MaxResult is the most bytes the program may write to stdout
	// (default DefaultMaxResult).
	MaxResult int64
	// Env is the program's base environment. Nil means the worker's own,
	// without go-plugin's variables and stale SCOPED_ invocation variables.
	Env []string
	// Dir is the program's working directory ("" means the worker's).
	Dir string
	// Stderr receives the program's stderr line by line (default the
	// worker's stderr, file descriptor 2, where the supervisor tags lines).
	Stderr io.Writer
	// Reap makes the worker reap every child process that has exited
	// whenever none of its programs runs (on SIGCHLD, and before and
	// after each program). Set it when the worker is pid 1 of its pid
	// namespace (or a child subreaper): the orphans of programs (double
	// forks, setsid daemons, whatever the supervisor killed) become its
	// children, and each stays a zombie, holding a pid of the cgroup's
	// pids.max, until reaped. It applies to the whole process, from the
	// first handler made with it. While a program runs, orphans that exit
	// wait for it to end: reaping any child then could take the exit
	// status os/exec waits for.
	Reap bool
	// OOMScoreAdj, when positive, is written to each program's
	// /proc/<pid>/oom_score_adj as soon as it started (its children
	// inherit it; raising needs no privilege), so that when the cgroup
	// runs out of memory the kernel's OOM killer picks the program or one
	// of its children rather than the worker. Best effort: a program may
	// fork before it is set.
	OOMScoreAdj int
	// SpareThreads, when positive, makes the worker start that many OS
	// threads ahead and keep them idle in the Go runtime (once, from the
	// first handler made with it). A program that exhausts the cgroup's
	// pids.max (a fork bomb) would otherwise make the runtime fail to
	// create a thread it needs meanwhile, which is fatal ("newosproc"):
	// the worker would die with the invocation.
	SpareThreads int
}

// workerStderr is file descriptor 2 as the process started with it, before
// go-plugin's Serve points os.Stderr at a pipe of its own.
var workerStderr io.Writer = os.Stderr

// stderrMu keeps the lines of concurrent invocations whole.
var stderrMu sync.Mutex

// Exec is the exec runtime with default options: see ExecWith.
func Exec(program string, args ...string) Handler {
	return ExecWith(ExecOptions{}, program, args...)
}

// ExecWith returns a Handler that runs program with args once per
// invocation, in a process group of its own: the payload on its stdin, its
// stdout the result (at most opts.MaxResult bytes, else ErrResultTooLarge),
// its stderr forwarded line by line to opts.Stderr. The invocation id, the
// extension and the metadata are in its environment as SCOPED_INVOCATION_ID,
// SCOPED_EXTENSION and SCOPED_META_<KEY> (see MetadataEnvKey). When ctx is
// done the whole process group is killed and the error wraps ctx.Err(); a
// non-zero exit is an ErrExit error with the exit status and the last lines
// of stderr. Whatever the program left running in its process group is
// killed when the invocation ends; processes that left the group (setsid)
// are the supervisor's to kill, by cgroup, once the reply is out (scoped
// does, for scoped-exec workers).
func ExecWith(opts ExecOptions, program string, args ...string) Handler {
	if opts.MaxResult <= 0 {
		opts.MaxResult = DefaultMaxResult
	}
	if opts.Stderr == nil {
		opts.Stderr = workerStderr
	}
	if opts.Reap {
		startReaper()
	}
	if opts.SpareThreads > 0 {
		spareOnce.Do(func() { spareThreads(opts.SpareThreads) })
	}
	return &execHandler{opts: opts, program: program, args: slices.Clone(args)}
}

var spareOnce sync.Once

// spareThreads makes the runtime start n OS threads, then leaves them idle
// in its pool of threads (which it never shrinks): n goroutines each hold
// a thread of their own (LockOSThread) at the same time, then let it go
// and end.
func spareThreads(n int) {
	var locked sync.WaitGroup
	release := make(chan struct{})
	for range n {
		locked.Add(1)
		go func() {
			runtime.LockOSThread()
			locked.Done()
			<-release
			runtime.UnlockOSThread() // the thread goes back to the pool
		}()
	}
	locked.Wait()
	close(release)
}

// reaper reaps orphans for ExecOptions.Reap. Programs start and are waited
// for under mu, and running counts them: the reaper waits for any child
// only while it is zero, so it never takes the exit status of a program
// that os/exec waits for.
var reaper struct {
	mu      sync.Mutex
	running int
	on      atomic.Bool
	once    sync.Once
}

func startReaper() {
	reaper.once.Do(func() {
		reaper.on.Store(true)
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGCHLD)
		go func() {
			for range ch {
				reaper.mu.Lock()
				reapLocked()
				reaper.mu.Unlock()
			}
		}()
	})
}

// reapLocked reaps every child that has exited, unless reaping is off or a
// program runs. The caller holds reaper.mu.
func reapLocked() {
	if reaper.running > 0 || !reaper.on.Load() {
		return
	}
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
	}
}

type execHandler struct {
	opts    ExecOptions
	program string
	args    []string
}

func (h *execHandler) Invoke(ctx context.Context, req *Request) ([]byte, error) {
	env, err := h.env(req)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, h.program, h.args...)
	cmd.Env = env
	cmd.Dir = h.opts.Dir
	cmd.Stdin = bytes.NewReader(req.Payload)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	killGroup := func() error {
		// The program leads its group: its pid is the group id.
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
		return os.ErrProcessDone
	}
	cmd.Cancel = killGroup
	cmd.WaitDelay = waitDelay
	// os/exec starts the copying goroutines after it has set cmd.Process,
	// so the stdout writer may kill the group.
	stdout := &boundedBuffer{max: h.opts.MaxResult, onOverflow: func() { _ = killGroup() }}
	cmd.Stdout = stdout
	stderr := &lineWriter{out: h.opts.Stderr}
	cmd.Stderr = stderr

	reaper.mu.Lock()
	reapLocked()
	if err := cmd.Start(); err != nil {
		reaper.mu.Unlock()
		return nil, fmt.Errorf("exec %s: %w", h.program, err)
	}
	reaper.running++
	reaper.mu.Unlock()
	if h.opts.OOMScoreAdj > 0 {
		setOOMScoreAdj(cmd.Process.Pid, h.opts.OOMScoreAdj)
	}
	err = cmd.Wait()
	_ = killGroup() // whatever the program left behind
	reaper.mu.Lock()
	reaper.running--
	reapLocked()
	reaper.mu.Unlock()
	stderr.flush()

	switch {
	case stdout.overflow:
		return nil, fmt.Errorf("exec %s: %w: more than %d bytes on stdout", h.program, ErrResultTooLarge, h.opts.MaxResult)
	case err == nil:
		return stdout.buf.Bytes(), nil
	case ctx.Err() != nil:
		return nil, fmt.Errorf("exec %s: killed: %w", h.program, ctx.Err())
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return nil, fmt.Errorf("exec %s: %w: %v%s", h.program, ErrExit, exitErr, stderr.tailText())
	}
	return nil, fmt.Errorf("exec %s: %w", h.program, err)
}

// setOOMScoreAdj writes adj to the oom_score_adj of pid, if it still runs.
func setOOMScoreAdj(pid, adj int) {
	f, err := os.OpenFile("/proc/"+strconv.Itoa(pid)+"/oom_score_adj", os.O_WRONLY, 0)
	if err != nil {
		return
	}
	_, _ = f.WriteString(strconv.Itoa(adj))
	_ = f.Close()
}

// env is the program's environment for req.
func (h *execHandler) env(req *Request) ([]string, error) {
	env := h.opts.Env
	if env == nil {
		env = workerEnv()
	}
	env = slices.Clip(env)
	env = append(env, EnvInvocationID+"="+req.InvocationID, EnvExtension+"="+req.Extension)
	keys := make([]string, 0, len(req.Metadata))
	for k := range req.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys) // colliding keys: the last in byte order wins, always
	for _, k := range keys {
		if k == "" {
			continue
		}
		v := req.Metadata[k]
		if strings.IndexByte(v, 0) >= 0 {
			return nil, fmt.Errorf("%w: the value of %q holds a NUL byte", ErrInvalidMetadata, k)
		}
		env = append(env, EnvMetaPrefix+MetadataEnvKey(k)+"="+v)
	}
	for _, s := range env {
		if strings.IndexByte(s, 0) >= 0 {
			return nil, fmt.Errorf("%w: a NUL byte in the environment", ErrInvalidMetadata)
		}
	}
	return env, nil
}

// workerEnv is the worker's environment without what belongs to go-plugin
// and without invocation variables the worker itself may have been given.
func workerEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == Handshake.MagicCookieKey, strings.HasPrefix(k, "PLUGIN_"),
			k == EnvInvocationID, k == EnvExtension, strings.HasPrefix(k, EnvMetaPrefix):
			continue
		}
		out = append(out, kv)
	}
	return out
}

// MetadataEnvKey turns a metadata key into the part of an environment
// variable name after SCOPED_META_: ASCII letters upper-cased, digits and
// '_' kept, every other character (a rune, or a byte of invalid UTF-8)
// replaced by '_'.
func MetadataEnvKey(key string) string {
	var b strings.Builder
	b.Grow(len(key))
	for _, r := range key {
		switch {
		case r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// boundedBuffer keeps at most max bytes; the write that would exceed it
// fails and calls onOverflow once.
type boundedBuffer struct {
	buf        bytes.Buffer
	max        int64
	overflow   bool
	onOverflow func()
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if b.overflow {
		return 0, ErrResultTooLarge
	}
	if int64(b.buf.Len())+int64(len(p)) > b.max {
		b.overflow = true
		b.onOverflow()
		return 0, ErrResultTooLarge
	}
	return b.buf.Write(p)
}

// lineWriter forwards whole lines (split at maxLine) to out and keeps the
// last tailLines of them, each cut at tailLineMax bytes.
type lineWriter struct {
	out  io.Writer
	buf  []byte
	tail []string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		end := i
		if i < 0 {
			end = len(p)
		}
		if room := maxLine - len(w.buf); end > room {
			w.buf = append(w.buf, p[:room]...)
			p = p[room:]
			w.emit()
			continue
		}
		w.buf = append(w.buf, p[:end]...)
		if i < 0 {
			break
		}
		p = p[i+1:]
		w.emit()
	}
	return n, nil
}

// flush emits a last line that did not end in a newline.
func (w *lineWriter) flush() {
	if len(w.buf) > 0 {
		w.emit()
	}
}

func (w *lineWriter) emit() {
	line := append(w.buf, '\n')
	stderrMu.Lock()
	_, _ = w.out.Write(line) // a lost log line must not fail the invocation
	stderrMu.Unlock()
	t := line[:len(line)-1]
	if len(t) > tailLineMax {
		t = t[:tailLineMax]
	}
	if len(w.tail) == tailLines {
		w.tail = slices.Delete(w.tail, 0, 1)
	}
	w.tail = append(w.tail, strings.ToValidUTF8(string(t), "\uFFFD"))
	w.buf = w.buf[:0]
}

// tailText is the stderr tail as an error suffix ("" if there was none).
func (w *lineWriter) tailText() string {
	if len(w.tail) == 0 {
		return ""
	}
	return "; stderr:\n" + strings.Join(w.tail, "\n")
}
