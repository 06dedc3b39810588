package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/client"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// The host id ranges: the daemon's scopes take idSlots ranges of 65536 ids
// from idBase; runc's container maps the range after them. Both are far
// from the daemon's default (1048576), so that a scoped daemon running on
// the same host does not share ids with the benchmark's sandboxes.
const (
	idBase  = 1 << 29
	idSize  = 65536
	tmpSize = 64 << 20 // the daemon's default tmp_size
)

// bench is the benchmark's world: the binaries it built, the daemon, a
// client of it, the runc bundle and cgroup tree.
type bench struct {
	o    options
	root string // the repository

	work     string // temporary, mode 0711
	bin      string // built binaries
	scopedB  string // the daemon
	bundle   string // whoami bundle dir (manifest.toml + whoami)
	whoami   string // the worker binary in it
	files    *scopedv1.Bundle
	workerSz int64

	d       *benchmd.Daemon
	c       *client.Client
	idSlots int

	runcTree *cgroups.Tree
	runcNode *cgroups.Node
	runc     *benchmd.Runc

	loadAvg      string // when the benchmark started
	libcontainer string // its version in the daemon

	pluginLog hclog.Logger
	payload   []byte
	seq       int
	extra     string            // TOML appended to the next daemon's configuration
	logs      benchmd.LogKeeper // the -daemon-log file
	direct    []int             // pids of the direct workers started
}

func newBench(ctx context.Context, o options) (_ *bench, retErr error) {
	b := &bench{o: o, loadAvg: benchmd.LoadAvg()}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, b.close())
		}
	}()
	b.pluginLog = hclog.New(&hclog.LoggerOptions{Name: "direct", Level: hclog.Warn, Output: os.Stderr})
	b.payload = make([]byte, o.payload)
	for i := range b.payload {
		b.payload[i] = 'a' + byte(i%26)
	}
	var err error
	if b.root, err = benchmd.RepoRoot(); err != nil {
		return nil, err
	}
	if b.work, err = benchmd.WorkDir("scoped-bench-invoke-"); err != nil {
		return nil, err
	}
	if err := b.build(); err != nil {
		return nil, err
	}

	// runc: its own cgroup root, state dir and bundle.
	if b.runcTree, err = cgroups.Open(runcCgroupRoot); err != nil {
		return nil, err
	}
	if n, err := b.runcTree.Cleanup(); err != nil {
		return nil, fmt.Errorf("clean cgroup root %s: %w", runcCgroupRoot, err)
	} else if n > 0 {
		logf("removed %d cgroups an earlier run left under %s", n, runcCgroupRoot)
	}
	if b.runcNode, err = b.runcTree.Node(cgroups.Limits{}, "runc"); err != nil {
		return nil, err
	}
	layout, err := benchmd.ReadHostLayout()
	if err != nil {
		return nil, err
	}
	b.idSlots = o.warmup + o.n + 8
	b.runc, err = benchmd.NewRunc(o.runc, b.work, b.runcNode.Path(), benchmd.RuncSpec{Layout: layout,
		HostID: idBase + uint32(b.idSlots)*idSize, IDs: idSize, TmpSize: tmpSize, Args: []string{truePath}})
	return b, err
}

// startDaemon starts a daemon (its directories named after name) with the
// given log level, and connects to it.
func (b *bench) startDaemon(ctx context.Context, name, level string) error {
	if b.d != nil {
		return errors.New("a daemon is running already")
	}
	d, err := benchmd.StartDaemon(ctx, b.scopedB, filepath.Join(b.work, "daemon-"+name), daemonCgroupRoot, b.daemonSettings(level), logf)
	if err != nil {
		return err
	}
	b.d = d
	if b.c, err = client.Dial(ctx, d.Socket, client.WithMaxMessageSize(128<<20)); err != nil {
		return errors.Join(err, b.stopDaemon())
	}
	return nil
}

// stopDaemon closes the client, stops the daemon with SIGTERM, keeps its
// log if asked to, and checks that the daemon removed its cgroups.
func (b *bench) stopDaemon() error {
	var errs []error
	if b.c != nil {
		errs = append(errs, b.c.Close())
		b.c = nil
	}
	if b.d == nil {
		return errors.Join(errs...)
	}
	errs = append(errs, b.d.Stop())
	if b.o.daemonLog != "" {
		errs = append(errs, b.keepLog(b.d.LogPath))
	}
	b.d = nil
	mine, _ := benchmd.CgroupsLeft(cgroupMark)
	var left []string
	for _, p := range mine {
		if filepath.Base(p) == filepath.Base(daemonCgroupRoot) {
			left = append(left, p)
		}
	}
	if len(left) > 0 {
		errs = append(errs, fmt.Errorf("the daemon left cgroups behind: %s", strings.Join(left, " ")))
	}
	return errors.Join(errs...)
}

// keepLog appends a daemon's log to the -daemon-log file (truncated the
// first time).
func (b *bench) keepLog(path string) error {
	if b.logs.Path == "" {
		b.logs = benchmd.LogKeeper{Path: b.o.daemonLog, Header: false}
	}
	return b.logs.Keep(path)
}

// close removes everything the benchmark created and checks that no
// cgroup of it is left. It is safe on a partly built bench.
func (b *bench) close() error {
	var errs []error
	plugin.CleanupClients() // the direct workers, if any is left
	errs = append(errs, b.checkDirectGone())
	errs = append(errs, b.stopDaemon())
	if b.runc != nil {
		errs = append(errs, b.runc.Close(logf))
		b.runc = nil
	}
	if b.runcTree != nil {
		if _, err := b.runcTree.Cleanup(); err != nil {
			errs = append(errs, fmt.Errorf("cgroup cleanup: %w", err))
		}
		if err := b.runcTree.Close(); err != nil {
			errs = append(errs, fmt.Errorf("cgroup close: %w", err))
		}
		b.runcTree = nil
	}
	if b.work != "" {
		errs = append(errs, os.RemoveAll(b.work))
		b.work = ""
	}
	left, others := benchmd.CgroupsLeft(cgroupMark)
	if len(left) > 0 {
		errs = append(errs, fmt.Errorf("cgroups left behind: %s", strings.Join(left, " ")))
	}
	if len(others) > 0 {
		logf("note: other scoped cgroups exist (not this benchmark's): %s", strings.Join(others, " "))
	}
	return errors.Join(errs...)
}

// checkDirectGone fails if a direct worker the benchmark started still
// runs (go-plugin's Kill waits for it; this checks).
func (b *bench) checkDirectGone() error {
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range b.direct {
		for isWorker(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("direct worker pid %d still runs", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// isWorker says whether pid is a live whoami process.
func isWorker(pid int) bool {
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return err == nil && strings.TrimSpace(string(comm)) == extName && processExists(pid)
}

// build builds the daemon, scoped-exec (which the daemon expects next to
// itself) and the whoami bundle, as the e2e tests do.
func (b *bench) build() error {
	t0 := time.Now()
	b.bin = filepath.Join(b.work, "bin")
	var err error
	if b.scopedB, err = benchmd.BuildDaemon(b.root, b.bin); err != nil {
		return err
	}
	b.libcontainer = benchmd.BinaryModuleVersion(b.scopedB, "github.com/opencontainers/runc")
	b.bundle = filepath.Join(b.bin, "bundles", extName)
	b.whoami = filepath.Join(b.bundle, extName)
	if b.files, err = benchmd.BuildBundle(b.root, b.bundle, extName); err != nil {
		return err
	}
	if err := benchmd.ChmodDirs(b.bin); err != nil {
		return err
	}
	b.workerSz = int64(len(b.files.Files[1].Content))
	logf("built the daemon, scoped-exec and the %s bundle in %s", extName, time.Since(t0).Round(time.Millisecond))
	return nil
}

// daemonSettings is the daemon's configuration file, without the paths.
func (b *bench) daemonSettings(level string) string {
	return fmt.Sprintf(`[isolation]
by = ["environment"]
[limits]
default_timeout = "30s"
[pool]
warm_min = 0
max_workers = %d
max_concurrent = %d
idle_timeout = "1h"
[scope]
id_base = %d
id_slots = %d
[log]
level = %q
[metrics]
listen = "off"
`, b.o.maxWorkers, b.o.maxConcurrent, idBase, b.idSlots, level) + b.extra
}

// --- runc ------------------------------------------------------------------
