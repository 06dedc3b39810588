package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/gobuild"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
	"io/fs"
)

// Kit is a benchmark program's world on the host: the repository, a work
// directory, the daemon it built there and the -daemon-log file. Close
// removes it all and checks that no cgroup named after the benchmark is
// left.
type Kit struct {
	Root    string        // the repository
	Work    string        // temporary, mode 0711
	Bin     string        // Work/bin: the daemon, scoped-exec and the bundles
	Scoped  string        // the daemon binary
	Logs    LogKeeper     // the -daemon-log file; set its Path (and Header) to keep logs
	LoadAvg string        // the load average when the kit was made
	Wait    time.Duration // how long Close waits for a daemon to stop (0: a minute)

	mark    string
	logf    func(string, ...any)
	running []*Daemon
}

// NewKit makes the kit of the benchmark whose cgroups are named after
// mark (e.g. scoped-bench-invoke): a work directory <mark>-*, and the
// daemon and scoped-exec built in it. It refuses to start while cgroups
// named after mark are left (an earlier run, or one still running). logf is
// the benchmark's log.
func NewKit(mark string, logf func(string, ...any)) (_ *Kit, retErr error) {
	if left, _ := CgroupsLeft(mark); len(left) > 0 {
		return nil, fmt.Errorf("cgroups of an earlier run are left (%s); is one running?", strings.Join(left, " "))
	}
	k := &Kit{LoadAvg: LoadAvg(), mark: mark, logf: logf}
	var err error
	if k.Root, err = RepoRoot(); err != nil {
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
	t0 := time.Now()
	k.Bin = filepath.Join(k.Work, "bin")
	if k.Scoped, err = BuildDaemon(k.Root, k.Bin); err != nil {
		return nil, err
	}
	if err := gobuild.OpenDirs(k.Bin); err != nil {
		return nil, err
	}
	logf("built the daemon and scoped-exec in %s", time.Since(t0).Round(time.Millisecond))
	return k, nil
}

// Bundle builds the extension package pkg (e.g. ./examples/whoami) into
// Bin/bundles/<its last element> (see BuildBundle).
func (k *Kit) Bundle(pkg string) (*scopedv1.Bundle, error) {
	b, err := BuildBundle(k.Root, filepath.Join(k.Bin, "bundles", path.Base(pkg)), pkg)
	if err != nil {
		return nil, err
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

// Adopt makes d one of the daemons Close stops (after Kill and Restart).
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
	return took, errors.Join(err, k.Logs.Keep(d.LogPath), RootGone(d.cgroupRoot))
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

// RootGone fails if the cgroup root (a path below the hierarchies' mounts)
// is left in any hierarchy.
func RootGone(root string) error {
	if root == "" {
		return nil
	}
	dirs, err := CgroupDirs(root)
	if err != nil {
		return err
	}
	if len(dirs) > 0 {
		return fmt.Errorf("the daemon left %d cgroup directories, such as %s", len(dirs), dirs[0])
	}
	return nil
}

// CgroupDirs lists the directories of the cgroup path root (itself
// included) in every hierarchy mounted under /sys/fs/cgroup.
func CgroupDirs(root string) ([]string, error) {
	var bases []string
	if cgroups.HostMode() == cgroups.V2 {
		bases = []string{"/sys/fs/cgroup"}
	} else {
		entries, err := os.ReadDir("/sys/fs/cgroup")
		if err != nil {
			return nil, err
		}
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
		top := filepath.Join(base, root)
		err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) {
					return nil
				}
				return err
			}
			if d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return dirs, nil
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
	var errs []error
	if _, err := t.Cleanup(); err != nil {
		errs = append(errs, fmt.Errorf("cgroup cleanup: %w", err))
	}
	if err := t.Close(); err != nil {
		errs = append(errs, fmt.Errorf("cgroup close: %w", err))
	}
	return errors.Join(errs...)
}
