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

// bench is the benchmark's world: the kit (the daemon and whoami bundle
// it built), the daemon running, a client of it, runc and its cgroups.
type bench struct {
	o        options
	kit      *benchmd.Kit
	whoami   string // the worker binary in the bundle
	files    *scopedv1.Bundle
	workerSz int64

	d       *benchmd.Daemon
	c       *client.Client
	idSlots int

	runcTree *cgroups.Tree
	runcNode *cgroups.Node
	runc     *benchmd.Runc

	libcontainer string // its version in the daemon

	pluginLog hclog.Logger
	payload   []byte
	seq       int
	extra     string // TOML appended to the next daemon's configuration
	direct    []int  // pids of the direct workers started
}

func newBench(o options) (_ *bench, retErr error) {
	b := &bench{o: o}
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
	if b.kit, err = benchmd.NewKit(cgroupMark, logf); err != nil {
		return nil, err
	}
	b.kit.Logs.Path = o.daemonLog
	b.libcontainer = benchmd.BinaryModuleVersion(b.kit.Scoped, "github.com/opencontainers/runc")
	if b.files, err = b.kit.Bundle("./examples/" + extName); err != nil {
		return nil, err
	}
	b.whoami = filepath.Join(b.kit.Bin, "bundles", extName, extName)
	b.workerSz = int64(len(b.files.Files[1].Content))

	// runc: its own cgroup root, state dir and bundle.
	if b.runcTree, err = benchmd.OpenCgroupRoot(runcCgroupRoot, logf); err != nil {
		return nil, err
	}
	if b.runcNode, err = b.runcTree.Node(cgroups.Limits{}, "runc"); err != nil {
		return nil, err
	}
	layout, err := benchmd.ReadHostLayout()
	if err != nil {
		return nil, err
	}
	b.idSlots = o.warmup + o.n + 8
	b.runc, err = benchmd.NewRunc(o.runc, b.kit.Work, b.runcNode.Path(), benchmd.RuncSpec{Layout: layout,
		HostID: idBase + uint32(b.idSlots)*idSize, IDs: idSize, TmpSize: tmpSize, Args: []string{truePath}})
	return b, err
}

// startDaemon starts a daemon (its directories named after name) with the
// given log level, and connects to it.
func (b *bench) startDaemon(ctx context.Context, name, level string) error {
	if b.d != nil {
		return errors.New("a daemon is running already")
	}
	d, err := b.kit.StartDaemon(ctx, name, daemonCgroupRoot, b.daemonSettings(level))
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
	if b.d != nil {
		_, err := b.kit.StopDaemon(b.d, 0)
		errs = append(errs, err)
		b.d = nil
	}
	return errors.Join(errs...)
}

// close removes everything the benchmark created and checks that no
// cgroup of it is left. It is safe on a partly built bench.
func (b *bench) close() error {
	plugin.CleanupClients() // the direct workers, if any is left
	errs := []error{b.checkDirectGone(), b.stopDaemon()}
	if b.runc != nil {
		errs = append(errs, b.runc.Close(logf))
		b.runc = nil
	}
	errs = append(errs, benchmd.RemoveCgroupRoot(b.runcTree))
	b.runcTree = nil
	if b.kit != nil {
		errs = append(errs, b.kit.Close())
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
