package sandbox

import (
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

	_ "github.com/opencontainers/cgroups/devices" // device rules for the sandbox's cgroup
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/internal/parallel"
)

// Sentinel errors.
var (
	ErrInvalidConfig = errors.New("invalid sandbox config")
	ErrNoSeccomp     = errors.New("built without seccomp support (build with cgo and -tags seccomp, needs libseccomp-dev)")
	ErrStart         = errors.New("sandbox failed to start")
)

// Fixed paths inside every sandbox.
const (
	BundlePath = "/ext"    // the extension bundle, read-only
	WorkerPath = "/worker" // Config.Binary, read-only
	TmpPath    = "/tmp"    // private tmpfs, size-capped
)

// Defaults.
const (
	DefaultStateDir = "/run/scoped/sandboxes"
	DefaultTmpSize  = 64 << 20
	DefaultNoFile   = 1024
)

// Bind is an extra bind mount from the host into the sandbox.
type Bind struct {
	Source, Target string
	Writable       bool
}

// Config describes one sandbox.
type Config struct {
	// ID names the sandbox; it must be unique among running sandboxes of
	// StateDir and match [a-z0-9][a-z0-9_-]{0,62}.
	ID string
	// StateDir holds libcontainer's state and the sandboxes' rootfs
	// directories (DefaultStateDir if empty). It must be on the host, owned
	// by root and traversable by others (mode 0711 or wider).
	StateDir string
	// Cgroup is the absolute cgroup path the sandbox runs in, normally a
	// worker leaf of [cgroups.Node]; it is created if missing and removed by
	// Destroy. Limits belong on its parents.
	Cgroup string
	// Hostname inside the sandbox (the scope name, say); default ID.
	Hostname string
	// IDs is the host uid/gid range mapped to 0..Size-1 inside.
	IDs IDRange
	// Binary is a host executable mounted read-only at WorkerPath. Empty
	// when Args[0] is a program already in the sandbox (under /usr).
	Binary string
	// Args of the process; Args[0] defaults to WorkerPath.
	Args []string
	// Env of the process; PATH and HOME are added when missing.
	Env []string
	// Bundle is a host directory mounted read-only at BundlePath (optional).
	Bundle string
	// Binds are extra mounts (a go-plugin socket directory, say).
	Binds []Bind
	// NetNS is the path of a network namespace to join (made and
	// configured by the host: the sandbox has no CAP_NET_ADMIN over it);
	// empty: a new namespace with loopback only.
	NetNS string
	// TmpSize caps /tmp in bytes (DefaultTmpSize if zero).
	TmpSize int64
	// NoFile is RLIMIT_NOFILE (DefaultNoFile if zero).
	NoFile uint64
	// Stdin, Stdout and Stderr of the process; nil means /dev/null. An
	// *os.File is passed to the process directly.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Launcher starts the sandbox; empty: DefaultLauncher.
	Launcher Launcher
}

// Sandbox is one started sandbox.
type Sandbox struct {
	id, rootfs, cgroup string
	launcher           Launcher
	proc               proc // nil until the launcher made one
	phases             phases

	waitOnce sync.Once
	waitErr  error
	state    *os.ProcessState
	done     chan struct{}

	destroyOnce sync.Once
	destroyErr  error
	oomKills    atomic.Uint64
}

func (cfg *Config) setDefaults() error {
	if err := ident.Check("sandbox id", cfg.ID); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	switch cfg.Launcher {
	case "", LauncherNative, LauncherLibcontainer:
	default:
		return fmt.Errorf("%w: launcher %q (want %q or %q)", ErrInvalidConfig, cfg.Launcher, LauncherNative, LauncherLibcontainer)
	}
	if !filepath.IsAbs(cfg.StateDir) {
		return fmt.Errorf("%w: state dir %q is not absolute", ErrInvalidConfig, cfg.StateDir)
	}
	if !filepath.IsAbs(cfg.Cgroup) || filepath.Clean(cfg.Cgroup) != cfg.Cgroup || cfg.Cgroup == "/" {
		return fmt.Errorf("%w: cgroup %q must be an absolute, clean path", ErrInvalidConfig, cfg.Cgroup)
	}
	if cfg.Hostname == "" {
		cfg.Hostname = cfg.ID
	}
	if cfg.IDs.Base == 0 || cfg.IDs.Size == 0 {
		return fmt.Errorf("%w: a host id range other than root is required", ErrInvalidConfig)
	}
	if len(cfg.Args) == 0 {
		cfg.Args = []string{WorkerPath}
	}
	if cfg.Binary == "" && cfg.Args[0] == WorkerPath {
		return fmt.Errorf("%w: no Binary and no program in Args", ErrInvalidConfig)
	}
	if cfg.TmpSize == 0 {
		cfg.TmpSize = DefaultTmpSize
	}
	if cfg.TmpSize < 0 {
		return fmt.Errorf("%w: tmp size %d", ErrInvalidConfig, cfg.TmpSize)
	}
	if cfg.NoFile == 0 {
		cfg.NoFile = DefaultNoFile
	}
	if !hasEnv(cfg.Env, "PATH") {
		cfg.Env = append(cfg.Env, "PATH=/usr/local/bin:/usr/bin:/bin")
	}
	if !hasEnv(cfg.Env, "HOME") {
		cfg.Env = append(cfg.Env, "HOME="+TmpPath)
	}
	for _, b := range cfg.Binds {
		if !filepath.IsAbs(b.Source) || !filepath.IsAbs(b.Target) || filepath.Clean(b.Target) != b.Target {
			return fmt.Errorf("%w: bind %q -> %q must use absolute, clean paths", ErrInvalidConfig, b.Source, b.Target)
		}
	}
	return nil
}

func hasEnv(env []string, key string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, key+"=") {
			return true
		}
	}
	return false
}

// proc is a started sandbox's process, as its launcher handles it.
type proc interface {
	pid() int
	signal(os.Signal) error
	// wait waits for the process; an exit status other than 0 is no error.
	wait() (*os.ProcessState, error)
	// kill sends SIGKILL to the sandbox's processes.
	kill()
	// remove removes the launcher's state of the sandbox (its processes
	// are gone).
	remove() error
}

// Start creates the sandbox and starts its process. On error nothing of it
// is left behind.
func Start(cfg Config) (_ *Sandbox, retErr error) {
	begin := time.Now()
	if !seccomp.Enabled {
		return nil, ErrNoSeccomp
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	n, nerr := nativeSetup()
	switch {
	case cfg.Launcher == "" && nerr == nil:
		cfg.Launcher = LauncherNative
	case cfg.Launcher == "":
		cfg.Launcher = LauncherLibcontainer
	case cfg.Launcher == LauncherNative && nerr != nil:
		return nil, nerr
	}
	s := &Sandbox{
		id:       cfg.ID,
		cgroup:   cfg.Cgroup,
		launcher: cfg.Launcher,
		done:     make(chan struct{}),
	}
	s.phases.Begin, s.phases.mono = begin, monotonic()
	defer func() {
		if retErr != nil {
			_ = s.Destroy()
		}
	}()
	if err := prepareStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	if cfg.Launcher == LauncherNative {
		if err := startNative(s, &cfg, n); err != nil {
			return nil, err
		}
	} else if err := startLibcontainer(s, &cfg); err != nil {
		return nil, err
	}
	if err := cgroups.VerifyUnified(s.proc.pid(), cfg.Cgroup); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	s.phases.End = time.Now()
	return s, nil
}

// lcProc is a sandbox started by libcontainer.
type lcProc struct {
	c       *libcontainer.Container
	p       *libcontainer.Process
	started bool
}

func (p *lcProc) pid() int {
	pid, _ := p.p.Pid()
	return pid
}

func (p *lcProc) signal(sig os.Signal) error { return p.c.Signal(sig) }

func (p *lcProc) wait() (*os.ProcessState, error) {
	st, err := p.p.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState, nil
	}
	return st, err
}

func (p *lcProc) kill() { _ = p.c.Signal(unix.SIGKILL) }

func (p *lcProc) remove() error {
	if err := p.c.Destroy(); err != nil {
		return fmt.Errorf("destroy %s: %w", p.c.ID(), err)
	}
	return nil
}

// startLibcontainer starts cfg's sandbox with libcontainer.
func startLibcontainer(s *Sandbox, cfg *Config) error {
	s.rootfs = filepath.Join(cfg.StateDir, "rootfs", cfg.ID)
	if err := makeRootfs(s.rootfs, cfg.Hostname); err != nil {
		return err
	}
	conf, err := containerConfig(cfg, s.rootfs)
	if err != nil {
		return err
	}
	c, err := libcontainer.Create(filepath.Join(cfg.StateDir, "containers"), cfg.ID, conf)
	if err != nil {
		return fmt.Errorf("%w: create %s: %w", ErrStart, cfg.ID, err)
	}
	p := &lcProc{c: c, p: &libcontainer.Process{
		Args:   cfg.Args,
		Env:    cfg.Env,
		Cwd:    "/",
		Stdin:  cfg.Stdin,
		Stdout: cfg.Stdout,
		Stderr: cfg.Stderr,
		Init:   true,
	}}
	s.proc = p
	s.phases.Clone = time.Now()
	if err := c.Run(p.p); err != nil {
		return fmt.Errorf("%w: run %s: %w", ErrStart, cfg.ID, err)
	}
	p.started = true
	if _, err := p.p.Pid(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrStart, cfg.ID, err)
	}
	return nil
}

// ID is the sandbox's id.
func (s *Sandbox) ID() string { return s.id }

// Launcher is the launcher that started the sandbox.
func (s *Sandbox) Launcher() Launcher { return s.launcher }

// Pid is the host pid of the sandbox's process.
func (s *Sandbox) Pid() int { return s.proc.pid() }

// Wait waits for the process to exit and returns its state. It may be
// called many times and concurrently.
func (s *Sandbox) Wait() (*os.ProcessState, error) {
	s.waitOnce.Do(func() {
		// A non-zero exit is the process's business, not an error of the
		// sandbox; the state says how it ended.
		s.state, s.waitErr = s.proc.wait()
		close(s.done)
	})
	return s.state, s.waitErr
}

// OOMKills is the number of processes the kernel's OOM killer killed in the
// sandbox's own cgroup, as read when Destroy removed it (0 before).
func (s *Sandbox) OOMKills() uint64 { return s.oomKills.Load() }

// Done is closed when the process has exited and Wait has returned.
func (s *Sandbox) Done() <-chan struct{} { return s.done }

// Signal sends sig to the sandbox's process (pid 1 inside).
func (s *Sandbox) Signal(sig os.Signal) error { return s.proc.signal(sig) }

// Destroy kills every process of the sandbox, waits for them, and removes
// its cgroup and the launcher's state (libcontainer's, and its rootfs
// directory). It is safe to call more than once.
func (s *Sandbox) Destroy() error {
	s.destroyOnce.Do(func() {
		var errs []error
		if s.proc != nil {
			if started(s.proc) {
				s.proc.kill()
				waitTimeout(s, 10*time.Second)
			}
			// On cgroup v1 the kernel counts an OOM kill only in the
			// victim's own cgroup, which goes away now: keep the count.
			if n, err := cgroups.Load(s.cgroup); err == nil {
				if st, err := n.Stats(); err == nil {
					s.oomKills.Store(st.OOMKills)
				}
			}
			if _, native := s.proc.(*nativeProc); !native {
				errs = append(errs, s.proc.remove())
			}
		}
		if err := removeCgroup(s.cgroup); err != nil {
			errs = append(errs, err)
		}
		if s.rootfs != "" {
			if err := os.RemoveAll(s.rootfs); err != nil {
				errs = append(errs, err)
			}
		}
		// The native launcher's state file goes last: until the cgroup is
		// gone, Cleanup needs it after a crash.
		if np, native := s.proc.(*nativeProc); native {
			errs = append(errs, np.remove())
		}
		s.destroyErr = errors.Join(errs...)
	})
	return s.destroyErr
}

// started reports whether p has a process to kill and wait for.
func started(p proc) bool {
	switch p := p.(type) {
	case *lcProc:
		return p.started
	case *nativeProc:
		return p.cmd != nil
	}
	return false
}

func waitTimeout(s *Sandbox, d time.Duration) {
	go func() { _, _ = s.Wait() }()
	select {
	case <-s.done:
	case <-time.After(d):
	}
}

// removeCgroup removes the sandbox's leaf in every hierarchy, in case
// libcontainer left it (it never created it, say, because Run failed early).
func removeCgroup(path string) error {
	if path == "" {
		return nil
	}
	n, err := cgroups.Load(path)
	if err != nil {
		return err
	}
	return n.Remove()
}

// cleanupParallel bounds how many sandboxes Cleanup destroys at once:
// destroying one mostly waits on the kernel (its processes to die, its
// cgroups to go), so many overlap well, but a crashed daemon may have left
// thousands.
const cleanupParallel = 16

// Cleanup destroys every sandbox that a previous run left in stateDir:
// it kills their processes and removes their cgroups, state and rootfs,
// up to 16 sandboxes at once, so in time linear in their number. It
// returns the number of sandboxes removed.
func Cleanup(stateDir string) (int, error) {
	root := filepath.Join(stateDir, "containers")
	entries, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	nroot := nativeStateDir(stateDir)
	nentries, err := os.ReadDir(nroot)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	var n atomic.Int64
	err = parallel.ForEach(entries, cleanupParallel, func(e os.DirEntry) error {
		removed, err := cleanupOne(root, e.Name())
		if removed {
			n.Add(1)
		}
		return err
	})
	nerr := parallel.ForEach(nentries, cleanupParallel, func(e os.DirEntry) error {
		removed, err := cleanupNative(nroot, e.Name())
		if removed {
			n.Add(1)
		}
		return err
	})
	err = errors.Join(err, nerr, os.RemoveAll(filepath.Join(stateDir, "rootfs")))
	return int(n.Load()), err
}

// cleanupOne destroys the sandbox id whose state is in root, and reports
// whether there was one (a directory libcontainer cannot load is removed
// and not counted).
func cleanupOne(root, id string) (bool, error) {
	c, err := libcontainer.Load(root, id)
	if err != nil {
		return false, os.RemoveAll(filepath.Join(root, id))
	}
	cfg := c.Config()
	// Kill through the cgroup, not c.Signal: on a loaded container that
	// opens a pidfd (os.FindProcess) it never releases. Wait until every
	// process has left the cgroup (exited tasks leave it before they are
	// reaped), then remove the container.
	if cfg.Cgroups != nil {
		if node, err := cgroups.Load(cfg.Cgroups.Path); err == nil {
			_ = node.Kill()
		}
	}
	errs := []error{destroyStopped(c)}
	if cfg.Cgroups != nil {
		errs = append(errs, removeCgroup(cfg.Cgroups.Path))
	}
	return true, errors.Join(errs...)
}

// destroyStopped destroys a container whose processes were killed, giving
// the kernel a moment to let its init go.
func destroyStopped(c *libcontainer.Container) error {
	var err error
	for range 200 {
		if err = c.Destroy(); err == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("destroy %s: %w", c.ID(), err)
}

func prepareStateDir(dir string) error {
	for _, d := range []string{dir, filepath.Join(dir, "rootfs")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return err
		}
		// The sandbox's root user (a host id of its range) must be able to
		// traverse to its rootfs.
		if err := os.Chmod(d, 0o711); err != nil {
			return err
		}
	}
	return nil
}
