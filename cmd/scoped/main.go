// Command scoped is the scoped daemon. For now it prepares its cgroup root
// and state directory, removes what a crashed run left behind, and waits for
// SIGINT or SIGTERM; the supervisor and its API come next.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/sandbox"
)

func main() {
	sandbox.Init() // never returns when started as a sandbox's init
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "scoped:", err)
		os.Exit(1)
	}
}

func run() error {
	root := flag.String("cgroup-root", cgroups.DefaultRoot, "absolute cgroup path scoped owns")
	state := flag.String("state-dir", "/run/scoped", "runtime state directory")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (try: sudo make run)")
	}
	tree, err := cgroups.Open(*root)
	if err != nil {
		return err
	}
	sandboxes := filepath.Join(*state, "sandboxes")
	if n, err := sandbox.Cleanup(sandboxes); err != nil {
		return fmt.Errorf("remove sandboxes left by a previous run: %w", err)
	} else if n > 0 {
		log.Warn("removed sandboxes left by a previous run", "count", n)
	}
	if n, err := tree.Cleanup(); err != nil {
		return fmt.Errorf("remove cgroups left by a previous run: %w", err)
	} else if n > 0 {
		log.Warn("removed cgroups left by a previous run", "count", n)
	}
	log.Info("scoped ready", "cgroup_root", tree.Root(), "cgroup_mode", tree.Mode().String(), "state_dir", *state)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	log.Info("stopping")

	if _, err := sandbox.Cleanup(sandboxes); err != nil {
		log.Error("sandbox cleanup", "err", err)
	}
	if _, err := tree.Cleanup(); err != nil {
		log.Error("cgroup cleanup", "err", err)
	}
	if err := tree.Close(); err != nil {
		return err
	}
	_ = os.RemoveAll(sandboxes)
	log.Info("stopped")
	return nil
}
