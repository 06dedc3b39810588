package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/scoped-io/scoped/cgroups"
)

// daemonLeaf is the cgroup -daemon-weight puts each daemon in, beside its
// tree (the layout of issue 17 under systemd: the daemon in a leaf of its
// own, weighted above its scopes).
const daemonLeaf = cgroupMark + "-daemon"

// leafDir is daemonLeaf's directory in the hierarchy of the cpu
// controller: the unified one on a pure v2 host, cgroup v1's cpu one
// elsewhere.
func leafDir() string {
	if cgroups.HostMode() == cgroups.V2 {
		return filepath.Join("/sys/fs/cgroup", daemonLeaf)
	}
	return filepath.Join("/sys/fs/cgroup/cpu", daemonLeaf)
}

// placeDaemon moves the process pid (the daemon: its workers are in their
// own cgroups) into daemonLeaf, made with CPU weight w (cpu.weight on v2,
// the equal cpu.shares on v1, as the daemon maps tiers' weights).
func placeDaemon(pid, w int) error {
	dir := leafDir()
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("daemon leaf: %w", err)
	}
	file, val := "cpu.weight", strconv.Itoa(w)
	if cgroups.HostMode() != cgroups.V2 {
		file, val = "cpu.shares", strconv.FormatUint(cgroups.SharesFromWeight(uint64(w)), 10)
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(val), 0); err != nil {
		return fmt.Errorf("daemon leaf: %s: %w", file, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("daemon leaf: move the daemon: %w", err)
	}
	return nil
}

// removeLeaf removes daemonLeaf once its daemon has exited.
func removeLeaf() error {
	if err := os.Remove(leafDir()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("daemon leaf: %w", err)
	}
	return nil
}
