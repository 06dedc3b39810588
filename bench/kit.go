package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/gobuild"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// Kit is a benchmark program's world on the host: the repository, a work
// directory with the daemon built in it, the daemons running, the
// -daemon-log file. Close removes it all and checks that no cgroup named
// after the benchmark is left.
type Kit struct {
	Root    string        // the repository
	Work    string        // temporary, mode 0711
	Bin     string        // Work/bin, or $SCOPED_BENCH_BIN: the daemon, scoped-exec and the bundles
	Scoped  string        // the daemon binary
	Logs    LogKeeper     // the -daemon-log file; set its Path (and Header) to keep logs
	LoadAvg string        // the load average when the kit was made
	Wait    time.Duration // how long a daemon may take to stop (0: a minute)

	mark     string
	logf     func(string, ...any)
	running  []*Daemon
	prebuilt bool // Bin is $SCOPED_BENCH_BIN: nothing is built
}

// PrebuiltEnv names the environment variable that points a Kit at prebuilt
// binaries instead of building them (make bench-v2 builds them on the host,
// so that the VM does not compile under emulation): the directory holds
// scoped (cgo, -tags seccomp), scoped-exec and bundles/<name>/ with each
// bundle's manifest.toml and worker <name>.
const PrebuiltEnv = "SCOPED_BENCH_BIN"

// NewKit makes the kit of the benchmark whose cgroups are named after mark
// (e.g. scoped-bench-invoke): a work directory <mark>-*, the daemon built
// with cgo and -tags seccomp and scoped-exec next to it, which it expects.
// It refuses to start while cgroups named after mark are left (an earlier
// run, or one still running). With $SCOPED_BENCH_BIN set (PrebuiltEnv) it
// builds nothing and takes the daemon and the bundles from there.
func NewKit(mark string, logf func(string, ...any)) (_ *Kit, retErr error) {
	if left, _ := CgroupsLeft(mark); len(left) > 0 {
		return nil, fmt.Errorf("cgroups of an earlier run are left (%s); is one running?", strings.Join(left, " "))
	}
	k := &Kit{LoadAvg: LoadAvg(), mark: mark, logf: logf}
	var err error
	if k.Root, err = repoRoot(); err != nil {
		return nil, err
	}
	if k.Work, err = WorkDir(mark + "-"); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, k.Close())
		}
	}()
	if pre := os.Getenv(PrebuiltEnv); pre != "" {
		if pre, err = filepath.Abs(pre); err != nil {
			return nil, err
		}
		k.Bin, k.Scoped, k.prebuilt = pre, filepath.Join(pre, "scoped"), true
		for _, f := range []string{k.Scoped, filepath.Join(pre, "scoped-exec")} {
			if _, err := os.Stat(f); err != nil {
				return nil, fmt.Errorf("%s: %w", PrebuiltEnv, err)
			}
		}
		logf("prebuilt daemon and scoped-exec in %s (%s)", pre, PrebuiltEnv)
		return k, nil
	}
	t0 := time.Now()
	k.Bin = filepath.Join(k.Work, "bin")
	k.Scoped = filepath.Join(k.Bin, "scoped")
	if err := gobuild.Build(k.Root, k.Scoped, "./cmd/scoped", true, "seccomp"); err != nil {
		return nil, err
	}
	if err := gobuild.Build(k.Root, filepath.Join(k.Bin, "scoped-exec"), "./cmd/scoped-exec", false); err != nil {
		return nil, err
	}
	logf("built the daemon and scoped-exec in %s", time.Since(t0).Round(time.Millisecond))
	return k, gobuild.OpenDirs(k.Bin)
}

// Bundle builds the extension package pkg (e.g. ./examples/whoami, with its
// manifest.toml) into Bin/bundles/<name>, name its last element, and
// returns it as deployed: manifest.toml, then the worker <name>. With
// prebuilt binaries (PrebuiltEnv) it reads Bin/bundles/<name> as it is.
func (k *Kit) Bundle(pkg string) (*scopedv1.Bundle, error) {
	name := path.Base(pkg)
	dir := filepath.Join(k.Bin, "bundles", name)
	if !k.prebuilt {
		if err := gobuild.Bundle(k.Root, dir, pkg, name); err != nil {
			return nil, err
		}
	}
	b := &scopedv1.Bundle{}
	for _, f := range []string{"manifest.toml", name} {
		p := filepath.Join(dir, f)
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		content, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		b.Files = append(b.Files, &scopedv1.File{Path: f, Mode: uint32(fi.Mode().Perm()), Content: content})
	}
	if k.prebuilt {
		return b, nil
	}
	return b, gobuild.OpenDirs(k.Bin)
}

// StartDaemon starts the kit's daemon in the new directory Work/daemon-name
// on the cgroup root cgroupRoot with settings (see StartDaemon).
func (k *Kit) StartDaemon(ctx context.Context, name, cgroupRoot, settings string) (*Daemon, error) {
	return k.StartDaemonBin(ctx, k.Scoped, name, cgroupRoot, settings)
}

// StartDaemonBin is StartDaemon of the binary bin (e.g. a wrapper that
// execs the kit's daemon). Close stops the daemon if it still runs.
func (k *Kit) StartDaemonBin(ctx context.Context, bin, name, cgroupRoot, settings string) (*Daemon, error) {
	d, err := StartDaemon(ctx, bin, filepath.Join(k.Work, "daemon-"+name), cgroupRoot, settings, k.logf)
	if err == nil {
		k.Adopt(d)
	}
	return d, err
}

// Adopt makes d one of the daemons Close stops (after Forget, Kill and
// Restart).
func (k *Kit) Adopt(d *Daemon) { k.running = append(k.running, d) }

// Forget takes d off the daemons Close stops.
func (k *Kit) Forget(d *Daemon) {
	k.running = slices.DeleteFunc(k.running, func(x *Daemon) bool { return x == d })
}

// StopDaemon stops d with SIGTERM within wait (0: Kit.Wait), keeps its log
// and checks that it removed its cgroup root. It returns how long the
// daemon took to stop.
func (k *Kit) StopDaemon(d *Daemon, wait time.Duration) (time.Duration, error) {
	k.Forget(d)
	took, err := d.StopWithin(cmp.Or(wait, k.Wait, stopWait))
	if d.cgroupRoot != "" {
		dirs, derr := CgroupDirs(d.cgroupRoot)
		if len(dirs) > 0 {
			derr = fmt.Errorf("the daemon left %d cgroup directories, such as %s", len(dirs), dirs[0])
		}
		err = errors.Join(err, derr)
	}
	return took, errors.Join(err, k.Logs.Keep(d.LogPath))
}

// Close stops the daemons still running, removes the work directory and
// fails if a cgroup of the benchmark is left; others' scoped cgroups are
// noted in the log. It is safe on a partly made kit and twice.
func (k *Kit) Close() error {
	var errs []error
	for len(k.running) > 0 {
		_, err := k.StopDaemon(k.running[0], 0)
		errs = append(errs, err)
	}
	if k.Work != "" {
		errs = append(errs, os.RemoveAll(k.Work))
		k.Work = ""
	}
	left, others := CgroupsLeft(k.mark)
	if len(left) > 0 {
		errs = append(errs, fmt.Errorf("cgroups left behind: %s", strings.Join(left, " ")))
	}
	if len(others) > 0 {
		k.logf("note: other scoped cgroups exist (not this benchmark's): %s", strings.Join(others, " "))
	}
	return errors.Join(errs...)
}

// CgroupDirs lists the directories of the cgroup path root (itself
// included) in every hierarchy mounted under /sys/fs/cgroup.
func CgroupDirs(root string) ([]string, error) {
	bases := []string{"/sys/fs/cgroup"}
	if cgroups.HostMode() != cgroups.V2 {
		entries, err := os.ReadDir("/sys/fs/cgroup")
		if err != nil {
			return nil, err
		}
		bases = nil
		for _, e := range entries {
			p := filepath.Join("/sys/fs/cgroup", e.Name())
			// Symlinks (cpu -> cpu,cpuacct) would count twice.
			if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
				bases = append(bases, p)
			}
		}
	}
	var dirs []string
	for _, base := range bases {
		err := filepath.WalkDir(filepath.Join(base, root), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			if os.IsNotExist(err) {
				return nil
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return dirs, nil
}

// CgroupProcs lists the processes in the cgroup path root and below it,
// from its pids hierarchy (the unified one on a pure v2 host).
func CgroupProcs(root string) ([]int, error) {
	base := "/sys/fs/cgroup/pids"
	if cgroups.HostMode() == cgroups.V2 {
		base = "/sys/fs/cgroup"
	}
	var pids []int
	err := filepath.WalkDir(filepath.Join(base, root), func(p string, d fs.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return nil
		} else if err == nil && d.IsDir() {
			b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
		}
		return err
	})
	return pids, err
}

// BPFPrograms lists the ids of the BPF programs loaded on the host.
func BPFPrograms() ([]ebpf.ProgramID, error) {
	var ids []ebpf.ProgramID
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return ids, nil
		} else if err != nil {
			return nil, fmt.Errorf("listing BPF programs: %w", err)
		}
		ids, id = append(ids, next), next
	}
}

// CgroupsLeft is the equivalent of `find /sys/fs/cgroup -maxdepth 3 -iname
// '*scoped*'`: mine are those whose name holds mark (a benchmark's), others
// belong to someone else (a daemon or a test running on the host).
func CgroupsLeft(mark string) (mine, others []string) {
	base := "/sys/fs/cgroup"
	_ = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(base, p)
		depth := 0
		if rel != "." {
			depth = strings.Count(rel, "/") + 1
		}
		if name := strings.ToLower(d.Name()); depth > 0 && strings.Contains(name, "scoped") {
			if strings.Contains(name, mark) {
				mine = append(mine, p)
			} else {
				others = append(others, p)
			}
		}
		if depth >= 3 {
			return fs.SkipDir
		}
		return nil
	})
	return mine, others
}

// OpenCgroupRoot opens the cgroup root a benchmark owns (its peers' cgroups,
// not a daemon's), removing what an earlier run left there.
func OpenCgroupRoot(root string, logf func(string, ...any)) (*cgroups.Tree, error) {
	t, err := cgroups.Open(root)
	if err != nil {
		return nil, err
	}
	n, err := t.Cleanup()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("clean cgroup root %s: %w", root, err), t.Close())
	}
	if n > 0 {
		logf("removed %d cgroups an earlier run left under %s", n, root)
	}
	return t, nil
}

// RemoveCgroupRoot removes everything below t and closes it; nil does
// nothing.
func RemoveCgroupRoot(t *cgroups.Tree) error {
	if t == nil {
		return nil
	}
	_, err := t.Cleanup()
	if err != nil {
		err = fmt.Errorf("cgroup cleanup: %w", err)
	}
	if cerr := t.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("cgroup close: %w", cerr))
	}
	return err
}

// CheckWhoami checks that the whoami example's reply result echoed
// payload and reported no error.
func CheckWhoami(result []byte, payload string) error {
	var r struct {
		Payload string   `json:"payload"`
		Errors  []string `json:"errors"`
	}
	if err := json.Unmarshal(result, &r); err != nil {
		return fmt.Errorf("whoami's reply %.200q: %w", result, err)
	}
	if r.Payload != payload {
		return fmt.Errorf("whoami echoed %d payload bytes, want the %d sent", len(r.Payload), len(payload))
	}
	if len(r.Errors) > 0 {
		return fmt.Errorf("whoami: %q", r.Errors)
	}
	return nil
}

// LogKeeper appends daemons' logs to one file (a benchmark's -daemon-log),
// truncating it the first time. An empty Path keeps nothing.
type LogKeeper struct {
	Path    string
	Header  bool // put "==> <log path> <==" before each log
	started bool
}

// Keep appends the log file src.
func (k *LogKeeper) Keep(src string) error {
	if k.Path == "" {
		return nil
	}
	log, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if !k.started {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(k.Path, flags, 0o644)
	if err != nil {
		return err
	}
	k.started = true
	if k.Header {
		_, err = fmt.Fprintf(f, "==> %s <==\n", src)
	}
	if err == nil {
		_, err = f.Write(log)
	}
	return errors.Join(err, f.Close())
}

// repoRoot is the directory holding the module's go.mod, found from the
// working directory upwards.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	for ; err == nil; dir = filepath.Dir(dir) {
		b, rerr := os.ReadFile(filepath.Join(dir, "go.mod"))
		if rerr == nil && strings.Contains(string(b), "module github.com/scoped-io/scoped\n") {
			return dir, nil
		}
		if dir == filepath.Dir(dir) {
			return "", errors.New("run from inside the scoped repository (no go.mod of github.com/scoped-io/scoped above the working directory)")
		}
	}
	return "", err
}

// WorkDir makes a new temporary directory named after prefix that the
// sandboxes' root users (high host uids) can traverse to their bundles,
// sockets and root file systems: mode 0711, every directory above it
// searchable by others (else an error that says so). The caller removes it.
func WorkDir(prefix string) (_ string, err error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	err = os.Chmod(dir, 0o711)
	for d := filepath.Dir(dir); err == nil; d = filepath.Dir(d) {
		fi, serr := os.Stat(d)
		if serr != nil {
			err = serr
		} else if fi.Mode().Perm()&0o001 == 0 {
			err = fmt.Errorf("%s (mode %o) is not traversable by others, which sandboxes need; set TMPDIR to a directory that is", d, fi.Mode().Perm())
		} else if d == filepath.Dir(d) {
			return dir, nil
		}
	}
	return "", errors.Join(err, os.RemoveAll(dir))
}

// Lock takes the host-wide lock of the benchmark named name (an abstract
// unix socket @scoped-bench-<name>, which the kernel releases when the
// process ends), so that two runs never share cgroup roots.
func Lock(name string) (io.Closer, error) {
	l, err := net.Listen("unix", "@scoped-bench-"+name)
	if err != nil {
		return nil, fmt.Errorf("another %sbench runs on this host (the abstract socket @scoped-bench-%s is taken): %w", name, name, err)
	}
	return l, nil
}
