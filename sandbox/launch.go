package sandbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	devconfig "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/cgroups"
)

// Launcher names how Start builds a sandbox. Both give the same isolation
// (the sandbox tests run on each).
type Launcher string

const (
	// LauncherNative clones a small static init (cinit/init.c, embedded
	// and run from a sealed memfd) into the sandbox's namespaces and, with
	// CLONE_INTO_CGROUP, its unified cgroup; the init lays out a tmpfs
	// root, loads a seccomp program compiled once, and executes the
	// target. The default where it is available (amd64, memfd exec).
	LauncherNative Launcher = "native"
	// LauncherLibcontainer starts the sandbox with runc's libcontainer,
	// which re-executes the calling binary as the sandbox's init.
	LauncherLibcontainer Launcher = "libcontainer"
)

// ErrNoLauncher: the launcher asked for is not available here.
var ErrNoLauncher = errors.New("sandbox launcher not available")

// DefaultLauncher is the launcher an empty Config.Launcher picks here:
// native where it works, libcontainer elsewhere, with the reason.
func DefaultLauncher() (Launcher, error) {
	if _, err := nativeSetup(); err != nil {
		return LauncherLibcontainer, err
	}
	return LauncherNative, nil
}

// native is what the native launcher prepares once per process.
type native struct {
	init *os.File // the sealed memfd of scoped-init
	bpf  []byte   // the seccomp program
	devs []*devconfig.Rule
}

var nativeOnce = sync.OnceValues(func() (*native, error) {
	if len(initELF) == 0 {
		return nil, fmt.Errorf("%w: native: no init built for %s", ErrNoLauncher, runtime.GOARCH)
	}
	// mount_setattr (Linux 5.12) is the newest call the launcher needs
	// (clone3 with CLONE_INTO_CGROUP came in 5.7, open_tree in 5.2).
	if err := unix.MountSetattr(-1, "", unix.AT_EMPTY_PATH, &unix.MountAttr{}); errors.Is(err, unix.ENOSYS) {
		return nil, fmt.Errorf("%w: native: the kernel has no mount_setattr (Linux 5.12)", ErrNoLauncher)
	}
	if b, err := os.ReadFile("/proc/sys/vm/memfd_noexec"); err == nil && strings.TrimSpace(string(b)) == "2" {
		return nil, fmt.Errorf("%w: native: vm.memfd_noexec is 2 (no program runs from a memfd)", ErrNoLauncher)
	}
	f, err := sealedInit()
	if err != nil {
		return nil, fmt.Errorf("%w: native: %w", ErrNoLauncher, err)
	}
	bpf, err := compileSeccomp(seccompProfile())
	if err != nil {
		f.Close()
		return nil, err
	}
	n := &native{init: f, bpf: bpf}
	for _, d := range specconv.AllowedDevices {
		n.devs = append(n.devs, &d.Rule)
	}
	return n, nil
})

func nativeSetup() (*native, error) { return nativeOnce() }

// initFD is the lowest descriptor the init's memfd may have: os/exec moves
// the child's descriptors 0..5 (stdio, the three pipes) into place before
// it executes the init by its /proc/self/fd path, and must not land on it.
const initFD = 64

// sealedInit copies scoped-init into a memfd that nothing can change any
// more (sealed against writes, growth and shrinking) at a descriptor of at
// least initFD.
func sealedInit() (*os.File, error) {
	const mfdExec = 0x10 // MFD_EXEC, Linux 6.3; EINVAL before
	fd, err := unix.MemfdCreate("scoped-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|mfdExec)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate("scoped-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	high, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, initFD)
	unix.Close(fd)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(high), "scoped-init")
	if _, err := f.Write(initELF); err != nil {
		f.Close()
		return nil, fmt.Errorf("memfd: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("memfd seals: %w", err)
	}
	return f, nil
}

// Phase stamps the init reports (cinit/init.c keeps the same order).
const (
	phMain = iota
	phCfg
	phLo
	phMounts
	phPivot
	phFinal
	phUserns
	phGo
	phCaps
	phSeccomp
	nPhases
)

// initTimeout bounds how long Start waits for the init to execute the
// target: it only mounts and loads a filter, so a slower one is stuck.
const initTimeout = 30 * time.Second

// maxInitReport bounds what Start reads from the init's status pipe.
const maxInitReport = 1 + 8*nPhases + 1024

// nativeProc is a sandbox started by the native launcher.
type nativeProc struct {
	cmd       *exec.Cmd
	statePath string // the state file Cleanup finds after a crash
}

func (p *nativeProc) pid() int                   { return p.cmd.Process.Pid }
func (p *nativeProc) signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

func (p *nativeProc) wait() (*os.ProcessState, error) {
	err := p.cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return p.cmd.ProcessState, err
	}
	return p.cmd.ProcessState, nil
}

// kill kills the sandbox's pid 1: the kernel then kills the rest of its
// pid namespace.
func (p *nativeProc) kill() { _ = p.cmd.Process.Signal(unix.SIGKILL) }

func (p *nativeProc) remove() error {
	if err := os.Remove(p.statePath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// nativeStateDir holds one file per sandbox of the native launcher, named
// by its id and holding its cgroup path.
func nativeStateDir(stateDir string) string { return filepath.Join(stateDir, "native") }

// startNative starts cfg's sandbox with the native launcher.
func startNative(s *Sandbox, cfg *Config, n *native) error {
	t := &s.phases
	stateDir := nativeStateDir(cfg.StateDir)
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	// Recorded before anything else exists, so that Cleanup finds the
	// cgroup (and so the processes) after a crash at any point from here.
	statePath := filepath.Join(stateDir, cfg.ID)
	if err := os.WriteFile(statePath, []byte(cfg.Cgroup), 0o600); err != nil {
		return err
	}
	proc := &nativeProc{statePath: statePath}
	s.proc = proc
	node, err := cgroups.NewLeaf(cfg.Cgroup, n.devs)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStart, err)
	}
	t.CgroupMade = time.Now()
	plan, trees, err := makePlan(cfg, filepath.Join(cfg.StateDir, "rootfs"), n.bpf, firstTreeFD)
	defer func() {
		for _, f := range trees {
			f.Close()
		}
	}()
	if err != nil {
		return err
	}

	// fd 3: the plan; fd 4: "G" once the cgroup v1 moves and the id maps
	// are done; fd 5: the init's report ("U", then "T" or "E").
	var pipes [3][2]*os.File
	defer func() {
		for _, p := range pipes {
			for _, f := range p {
				if f != nil {
					f.Close()
				}
			}
		}
	}()
	for i := range pipes {
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		pipes[i] = [2]*os.File{r, w}
	}
	planR, planW := pipes[0][0], pipes[0][1]
	goR, goW := pipes[1][0], pipes[1][1]
	statR, statW := pipes[2][0], pipes[2][1]
	pipes[0][1] = nil // the writer closes it; the init reads to EOF
	go func() {
		_, _ = planW.Write(plan)
		planW.Close()
	}()

	// No user namespace at the clone: os/exec then clones with vfork
	// semantics, which costs the same however large the daemon is (with
	// CLONE_NEWUSER it copies the daemon's page tables: 5-7 ms in a busy
	// daemon). The init unshares it once its mounts are made.
	flags := unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS
	if cfg.NetNS == "" {
		flags |= unix.CLONE_NEWNET
	}
	attr := &syscall.SysProcAttr{Cloneflags: uintptr(flags)}
	var cgfd int = -1
	if dir := node.UnifiedDir(); dir != "" {
		if cgfd, err = unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
			return fmt.Errorf("%w: open cgroup %s: %w", ErrStart, dir, err)
		}
		defer unix.Close(cgfd)
		attr.UseCgroupFD, attr.CgroupFD = true, cgfd
	}
	proc.cmd = &exec.Cmd{
		Path:        "/proc/self/fd/" + strconv.Itoa(int(n.init.Fd())),
		Args:        []string{"scoped-init"},
		Env:         []string{},
		Stdin:       cfg.Stdin,
		Stdout:      cfg.Stdout,
		Stderr:      cfg.Stderr,
		ExtraFiles:  append([]*os.File{planR, goR, statW}, trees...),
		SysProcAttr: attr,
		// The sandbox's processes hold the output pipes; once its pid 1 is
		// gone the kernel kills them, so Wait needs no long grace.
		WaitDelay: 5 * time.Second,
	}
	t.Clone = time.Now()
	if err := startIn(cfg.NetNS, proc.cmd); err != nil {
		proc.cmd = nil
		return fmt.Errorf("%w: %s: %w", ErrStart, cfg.ID, err)
	}
	t.Cloned = time.Now()
	for i := range 2 { // the child's ends
		pipes[i][0].Close()
		pipes[i][0] = nil
	}
	statW.Close()
	pipes[2][1] = nil

	// The init builds its root meanwhile, then unshares its user namespace
	// and says "U"; it waits for "G" before it becomes root inside,
	// unshares its cgroup namespace and executes the target.
	pid := proc.cmd.Process.Pid
	if err := node.JoinLegacy(pid); err != nil {
		return fmt.Errorf("%w: %w", ErrStart, err)
	}
	t.Moved = time.Now()
	_ = statR.SetReadDeadline(time.Now().Add(initTimeout))
	var u [1]byte
	if _, err := io.ReadFull(statR, u[:]); err != nil || u[0] != 'U' {
		return initFailed(cfg.ID, u[0], statR, err)
	}
	if err := mapIDs(pid, cfg.IDs); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrStart, cfg.ID, err)
	}
	t.Mapped = time.Now()
	_, _ = goW.Write([]byte{'G'}) // a dead init says why on fd 5
	msg, err := io.ReadAll(io.LimitReader(statR, maxInitReport))
	if err != nil {
		return fmt.Errorf("%w: %s: the init's report: %w", ErrStart, cfg.ID, err)
	}
	t.Executed = time.Now()
	if len(msg) == 1+8*nPhases && msg[0] == 'T' {
		for i := range t.Init {
			t.Init[i] = int64(binary.LittleEndian.Uint64(msg[1+8*i:]))
		}
		return nil
	}
	if len(msg) > 1+8*nPhases && msg[0] == 'T' {
		msg = msg[1+8*nPhases:] // the exec failed
	}
	return initError(cfg.ID, msg)
}

// initFailed is the error of an init that did not report "U": first is
// the byte it wrote instead (if readErr is nil), and r the rest.
func initFailed(id string, first byte, r io.Reader, readErr error) error {
	if readErr != nil {
		if errors.Is(readErr, io.EOF) {
			return initError(id, nil)
		}
		return fmt.Errorf("%w: %s: the init's report: %w", ErrStart, id, readErr)
	}
	rest, _ := io.ReadAll(io.LimitReader(r, maxInitReport))
	return initError(id, append([]byte{first}, rest...))
}

func initError(id string, msg []byte) error {
	why, _ := strings.CutPrefix(string(msg), "E")
	if why == "" {
		why = "the init died without a report"
	}
	return fmt.Errorf("%w: %s: %s", ErrStart, id, strings.ToValidUTF8(why, "?"))
}

// mapIDs maps ids to 0..Size-1 in the user namespace of pid, for users and
// groups (setgroups stays allowed, as it is by default).
func mapIDs(pid int, ids IDRange) error {
	m := []byte(fmt.Sprintf("0 %d %d\n", ids.Base, ids.Size))
	for _, f := range []string{"uid_map", "gid_map"} {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/%s", pid, f), m, 0); err != nil {
			return fmt.Errorf("id map: %w", err)
		}
	}
	return nil
}

// startIn starts cmd in the network namespace at path (the daemon's own
// if path is empty): the child of a fork takes the namespaces of the
// thread that forks, so the fork runs on a thread locked to the goroutine
// and moved into the namespace, and moved back afterwards. A thread that
// cannot be moved back is never unlocked, and so ends with the goroutine.
func startIn(path string, cmd *exec.Cmd) error {
	if path == "" {
		return cmd.Start()
	}
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("network namespace: %w", err)
	}
	defer unix.Close(target)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("network namespace: %w", err)
			return
		}
		defer unix.Close(own)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("join network namespace %s: %w", path, err)
			return
		}
		err = cmd.Start()
		if unix.Setns(own, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// plan is the init's instructions: records of a little-endian u32 length
// and that many bytes.
type plan []byte

func (p *plan) add(fields ...string) {
	for _, f := range fields {
		*p = binary.LittleEndian.AppendUint32(*p, uint32(len(f)))
		*p = append(*p, f...)
	}
}

func utoa[T ~int | ~uint64 | ~uintptr](v T) string { return strconv.FormatUint(uint64(v), 10) }

// firstTreeFD is the init's descriptor of the first bind: after stdio and
// its three pipes.
const firstTreeFD = 6

// makePlan turns cfg into the init's plan: the same root, mounts, masks,
// rlimits and process as containerConfig gives libcontainer, with the root
// laid out on a tmpfs mounted at root inside the sandbox's mount namespace
// (nothing of it is on the host). Each bind is a detached mount tree the
// daemon clones here (open_tree) with its flags set, passed to the init at
// descriptors from fd on, in the order of the returned files (the caller
// closes them): the init moves it into place, so it needs no access of its
// own to the source, which a worker's binary under a root-only directory
// would deny it.
func makePlan(cfg *Config, root string, bpf []byte, fd int) (_ []byte, trees []*os.File, retErr error) {
	const noExec = unix.MS_NOEXEC | unix.MS_NOSUID | unix.MS_NODEV
	defer func() {
		if retErr != nil {
			for _, f := range trees {
				f.Close()
			}
		}
	}()
	var p plan
	p.add("root", root, "host", cfg.Hostname, "owner", utoa(uint64(cfg.IDs.Base)))
	if cfg.NetNS == "" {
		p.add("lo")
	}
	// tmpfs mounts belong to the sandbox's root (the init mounts them as
	// the host's root, before the user namespace exists).
	own := fmt.Sprintf(",uid=%d,gid=%d", cfg.IDs.Base, cfg.IDs.Base)
	p.add("tmproot", "mode=755,size=1m,nr_inodes=1024"+own)
	for _, d := range hostTopDirs {
		target, err := os.Readlink("/" + d)
		switch {
		case err == nil:
			p.add("sym", target, "/"+d)
		case errors.Is(err, os.ErrNotExist):
		default:
			p.add("mkdir", "/"+d)
		}
	}
	for _, d := range []string{"/usr", "/proc", "/dev", TmpPath, "/etc", BundlePath} {
		p.add("mkdir", d)
	}
	for _, f := range rootFiles(cfg.Hostname) {
		p.add("file", f[0], f[1])
	}
	mnt := func(src, dst, fstype string, flags int, data string, prop int) {
		p.add("mnt", src, dst, fstype, utoa(uintptr(flags)), data, utoa(uintptr(prop)))
	}
	mnt("proc", "/proc", "proc", noExec, "", 0)
	mnt("tmpfs", "/dev", "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=755,size=64k"+own, 0)
	mnt("tmpfs", TmpPath, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,size="+strconv.FormatInt(cfg.TmpSize, 10)+own, 0)
	for _, b := range binds(cfg) {
		if err := planMountPoint(&p, b.Source, b.Target); err != nil {
			return nil, trees, err
		}
		f, err := bindTree(b)
		if err != nil {
			return nil, trees, err
		}
		trees = append(trees, f)
		p.add("tree", utoa(fd), b.Target)
		fd++
	}
	// libcontainer's /dev in a user namespace: the allowed device nodes
	// bound from the host, the /proc links and /dev/ptmx.
	for _, d := range []string{"null", "random", "full", "tty", "zero", "urandom"} {
		p.add("dev", "/dev/"+d, "/dev/"+d)
	}
	links := [][2]string{{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"},
		{"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"}}
	if _, err := os.Stat("/proc/kcore"); err == nil {
		links = append(links, [2]string{"/proc/kcore", "/dev/core"})
	}
	links = append(links, [2]string{"pts/ptmx", "/dev/ptmx"})
	for _, ln := range links {
		p.add("ln", ln[0], ln[1])
	}
	for _, r := range readonlyPaths {
		p.add("ro", r)
	}
	for _, m := range maskPaths {
		p.add("mask", m)
	}
	p.add("rlim", utoa(uintptr(unix.RLIMIT_NOFILE)), utoa(cfg.NoFile), utoa(cfg.NoFile))
	p.add("rlim", utoa(uintptr(unix.RLIMIT_CORE)), "0", "0")
	p.add("bpf", string(bpf))
	p.add("argv", utoa(len(cfg.Args)))
	p.add(cfg.Args...)
	p.add("env", utoa(len(cfg.Env)))
	p.add(cfg.Env...)
	p.add("cwd", "/")
	return p, trees, nil
}

// bindTree clones the mount tree at b.Source (recursively, like MS_REC) as
// a detached mount and sets its flags: nosuid and nodev, and read-only and
// private (mounts made later below the source on the host do not propagate
// in) unless b is writable.
func bindTree(b Bind) (*os.File, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, b.Source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return nil, fmt.Errorf("%w: bind %s: %w", ErrStart, b.Source, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if !b.Writable {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
		attr.Propagation = unix.MS_PRIVATE
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: bind %s: mount_setattr: %w", ErrStart, b.Source, err)
	}
	return os.NewFile(uintptr(fd), "bind:"+b.Source), nil
}

// planMountPoint adds the records that make target (a directory, or an
// empty file when source is not one) in the tmpfs root.
func planMountPoint(p *plan, source, target string) error {
	st, err := os.Stat(source)
	if err != nil {
		return fmt.Errorf("%w: bind source: %w", ErrInvalidConfig, err)
	}
	dir := target
	if !st.IsDir() {
		dir = filepath.Dir(target)
	}
	var parts []string
	for d := dir; d != "/"; d = filepath.Dir(d) {
		parts = append(parts, d)
	}
	for i := len(parts) - 1; i >= 0; i-- {
		p.add("mkdir", parts[i])
	}
	if !st.IsDir() {
		p.add("file", target, "")
	}
	return nil
}

// cleanupNative destroys the native sandbox whose state file is id in dir:
// it kills every process of its cgroup and removes the cgroup and the file.
// It reports whether there was a sandbox: a file that names no valid
// cgroup path is removed and not counted.
func cleanupNative(dir, id string) (bool, error) {
	path := filepath.Join(dir, id)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // its Destroy was quicker
	}
	if err != nil {
		return false, err
	}
	n, err := cgroups.Load(string(b))
	if err != nil {
		return false, ignoreGone(os.Remove(path))
	}
	// Killed processes leave the cgroup a moment after they die (long
	// under load, or emulation): retry for a while, as cleanupOne does.
	for try := 0; ; try++ {
		err := n.Remove()
		if err == nil {
			break
		}
		if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
			return false, nil // its Destroy removed it meanwhile
		}
		if try == 200 {
			return true, err // the file stays: the next Cleanup tries again
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true, ignoreGone(os.Remove(path))
}

func ignoreGone(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// phases are when one Start reached each of its steps.
type phases struct {
	Begin, CgroupMade, Clone, Cloned, Moved, Mapped, Executed, End time.Time
	mono                                                           int64          // CLOCK_MONOTONIC at Begin
	Init                                                           [nPhases]int64 // the init's CLOCK_MONOTONIC stamps
}

// Step is one step of a sandbox's start: what was done by then, and when,
// counted from the start of Start.
type Step struct {
	Name string
	At   time.Duration
}

// StartSteps are the steps of the sandbox's start, in order. The native
// launcher reports its init's steps too; libcontainer's start is one step.
func (s *Sandbox) StartSteps() []Step {
	p := &s.phases
	var steps []Step
	at := func(name string, t time.Time) {
		if !t.IsZero() {
			steps = append(steps, Step{name, t.Sub(p.Begin)})
		}
	}
	at("cgroup leaf made", p.CgroupMade)
	at("plan and binds made", p.Clone)
	at("init cloned", p.Cloned)
	names := [nPhases]string{phMain: "init: running", phCfg: "init: plan read", phLo: "init: loopback up",
		phMounts: "init: root and mounts", phPivot: "init: pivot_root", phFinal: "init: masks, rlimits, hostname",
		phUserns: "init: user namespace made", phGo: "init: go seen", phCaps: "init: root inside, capabilities dropped",
		phSeccomp: "init: seccomp loaded"}
	if p.Init[phSeccomp] != 0 {
		for i, name := range names {
			if i == phGo {
				at("cgroup v1 moves done", p.Moved)
				at("ids mapped", p.Mapped)
			}
			steps = append(steps, Step{name, time.Duration(p.Init[i] - p.mono)})
		}
	}
	at("target executed", p.Executed)
	at("Start returns", p.End)
	return steps
}

func monotonic() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}
