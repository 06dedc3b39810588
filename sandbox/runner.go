package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-plugin/runner"
	"golang.org/x/sys/unix"
)

// PluginSocketPath is where a go-plugin worker finds its socket directory
// inside the sandbox.
const PluginSocketPath = "/plugin"

// ErrAddress is returned for a plugin address that cannot be translated.
var ErrAddress = errors.New("plugin address cannot cross the sandbox")

// Runner starts a go-plugin worker in a sandbox; it implements go-plugin's
// runner.Runner. Use it from plugin.ClientConfig.RunnerFunc:
//
//	RunnerFunc: func(_ hclog.Logger, cmd *exec.Cmd, dir string) (runner.Runner, error) {
//		return sandbox.NewRunner(cfg, cmd, dir)
//	},
//
// with SkipHostEnv set, so that the daemon's environment stays out of the
// sandbox. go-plugin's variables from cmd.Env are passed in, its socket
// directory is bound at PluginSocketPath and handed to the sandbox's root
// user, and the addresses the worker announces are translated back. The
// worker owns that directory and can plant anything there: connect to the
// worker only through Dial, never by the translated path.
type Runner struct {
	cfg       Config
	socketDir string
	s         *Sandbox

	dirMu     sync.Mutex
	dirFD     int    // O_PATH handle on socketDir; -1 once closed
	announced string // the socket's name in socketDir (PluginToHost)

	stdoutR, stdoutW *os.File
	stderrR, stderrW *os.File
	closeOnce        sync.Once
	killed           atomic.Bool
	started          time.Time // when Start had the sandbox running
}

var _ runner.Runner = (*Runner)(nil)

// NewRunner prepares a sandbox from cfg for the go-plugin command spec cmd
// (only its environment is used) and the socket directory go-plugin made.
func NewRunner(cfg Config, cmd *exec.Cmd, socketDir string) (*Runner, error) {
	if !filepath.IsAbs(socketDir) {
		return nil, fmt.Errorf("%w: socket dir %q is not absolute", ErrInvalidConfig, socketDir)
	}
	if cfg.IDs.Base == 0 {
		return nil, fmt.Errorf("%w: a host id range other than root is required", ErrInvalidConfig)
	}
	dirFD, err := openSocketDir(socketDir)
	if err != nil {
		return nil, err
	}
	if err := unix.Fchownat(dirFD, "", int(cfg.IDs.Base), int(cfg.IDs.Base), unix.AT_EMPTY_PATH); err != nil {
		unix.Close(dirFD)
		return nil, fmt.Errorf("socket dir for the sandbox: %w", err)
	}
	env := make([]string, 0, len(cmd.Env)+len(cfg.Env)+1)
	for _, e := range cmd.Env {
		if !strings.HasPrefix(e, "PLUGIN_UNIX_SOCKET_DIR=") {
			env = append(env, e)
		}
	}
	cfg.Env = append(append(env, cfg.Env...), "PLUGIN_UNIX_SOCKET_DIR="+PluginSocketPath)
	cfg.Binds = append(cfg.Binds, Bind{Source: socketDir, Target: PluginSocketPath, Writable: true})
	return &Runner{cfg: cfg, socketDir: socketDir, dirFD: dirFD}, nil
}

// closeDir closes the socket directory's handle; Dial fails from then on.
func (r *Runner) closeDir() {
	r.dirMu.Lock()
	defer r.dirMu.Unlock()
	if r.dirFD >= 0 {
		unix.Close(r.dirFD)
		r.dirFD = -1
	}
}

// Start starts the sandbox.
func (r *Runner) Start(ctx context.Context) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.stdoutR, r.stdoutW, err = os.Pipe(); err != nil {
		return err
	}
	if r.stderrR, r.stderrW, err = os.Pipe(); err != nil {
		r.closePipes()
		return err
	}
	cfg := r.cfg
	cfg.Stdout, cfg.Stderr = r.stdoutW, r.stderrW
	r.s, err = Start(cfg)
	// The sandbox holds its own copies of the write ends now.
	r.stdoutW.Close()
	r.stderrW.Close()
	if err != nil {
		r.closePipes()
		r.closeDir()
		return err
	}
	r.started = time.Now()
	return nil
}

// Started is when Start had the sandbox running (its process started),
// zero before. Read it after Start returned.
func (r *Runner) Started() time.Time { return r.started }

// closePipes closes the read ends once the worker is gone, as os/exec's
// Wait does for StdoutPipe.
func (r *Runner) closePipes() {
	r.closeOnce.Do(func() {
		for _, f := range []*os.File{r.stdoutR, r.stdoutW, r.stderrR, r.stderrW} {
			if f != nil {
				f.Close()
			}
		}
	})
}

// Sandbox is the started sandbox (nil before Start).
func (r *Runner) Sandbox() *Sandbox { return r.s }

// Stdout carries go-plugin's handshake line.
func (r *Runner) Stdout() io.ReadCloser { return r.stdoutR }

// Stderr carries the worker's logs.
func (r *Runner) Stderr() io.ReadCloser { return r.stderrR }

// Name is the worker's program.
func (r *Runner) Name() string {
	if r.cfg.Binary != "" {
		return r.cfg.Binary
	}
	return r.cfg.Args[0]
}

// ID is the sandbox id.
func (r *Runner) ID() string {
	if r.s == nil {
		return ""
	}
	return r.s.ID()
}

// Wait waits for the worker to exit and then removes its sandbox (go-plugin
// calls Kill only when a worker fails to exit gracefully). A non-zero exit
// is an error, unless Kill caused it.
func (r *Runner) Wait(context.Context) error {
	if r.s == nil {
		return errors.New("sandbox not started")
	}
	st, err := r.s.Wait()
	r.closePipes()
	r.closeDir()
	if derr := r.s.Destroy(); err == nil {
		err = derr
	}
	if err != nil {
		return err
	}
	if !st.Success() && !r.killed.Load() {
		return fmt.Errorf("worker in sandbox %s: %s", r.s.ID(), st)
	}
	return nil
}

// Kill kills the worker and removes its sandbox.
func (r *Runner) Kill(context.Context) error {
	r.closeDir()
	if r.s == nil {
		return nil
	}
	r.killed.Store(true)
	err := r.s.Destroy()
	r.closePipes()
	return err
}

// Diagnose says what is known about a worker that failed to start.
func (r *Runner) Diagnose(context.Context) string {
	if r.s == nil {
		return "the sandbox was not started"
	}
	select {
	case <-r.s.Done():
		st, _ := r.s.Wait()
		return fmt.Sprintf("the worker in sandbox %s exited: %s", r.s.ID(), st)
	default:
		return fmt.Sprintf("the worker in sandbox %s (pid %d) is running", r.s.ID(), r.s.Pid())
	}
}

// PluginToHost maps the worker's socket path to the host's. It only checks
// that the address names an entry of the socket directory, and remembers
// the name for Dial: what the entry is, the worker may change at any time.
func (r *Runner) PluginToHost(network, addr string) (string, string, error) {
	if network != "unix" {
		return "", "", fmt.Errorf("%w: %s %s (the sandbox has only loopback)", ErrAddress, network, addr)
	}
	rel, ok := strings.CutPrefix(addr, PluginSocketPath+"/")
	if !ok || !plainName(rel) {
		return "", "", fmt.Errorf("%w: %s is not in %s", ErrAddress, addr, PluginSocketPath)
	}
	r.dirMu.Lock()
	r.announced = rel
	r.dirMu.Unlock()
	return network, filepath.Join(r.socketDir, rel), nil
}

// HostToPlugin maps a host socket path in the socket directory to the
// worker's view.
func (r *Runner) HostToPlugin(network, addr string) (string, string, error) {
	rel, ok := strings.CutPrefix(addr, r.socketDir+"/")
	if network != "unix" || !ok || !plainName(rel) {
		return "", "", fmt.Errorf("%w: %s %s", ErrAddress, network, addr)
	}
	return network, PluginSocketPath + "/" + rel, nil
}

// plainName reports whether s names an entry of a directory: one path
// element, not "." or "..".
func plainName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00")
}
