package cgroups

import (
	"fmt"

	occ "github.com/opencontainers/cgroups"
	devconfig "github.com/opencontainers/cgroups/devices/config"
)

// NewLeaf creates the cgroup at the absolute path p in every hierarchy, for
// one process that is placed in it at its start, and applies the device
// rules to it: the devices controller on cgroup v1, an eBPF device filter
// on v2 (a program that goes with the cgroup). Limits belong on its
// parents. The caller's binary must import
// github.com/opencontainers/cgroups/devices, which applies the rules.
func NewLeaf(p string, devices []*devconfig.Rule) (*Node, error) {
	if err := checkPath(p); err != nil {
		return nil, err
	}
	t := &Tree{root: p, mode: HostMode()}
	r := &occ.Resources{Devices: devices}
	n, err := t.create(p, r)
	if err != nil {
		return nil, err
	}
	if err := n.m.Set(r); err != nil {
		return nil, fmt.Errorf("device rules of %s: %w", p, err)
	}
	return n, nil
}

// JoinLegacy moves the process pid into the node in each cgroup v1
// hierarchy, leaving the unified one alone: for a process that was cloned
// into its unified cgroup (CLONE_INTO_CGROUP). On a pure v2 host it does
// nothing; on a pure v1 host it is Join without the check.
func (n *Node) JoinLegacy(pid int) error {
	if n.mode == V2 {
		return nil
	}
	for name, dir := range n.m.GetPaths() {
		if name == "" { // the unified directory on a hybrid host
			continue
		}
		if err := occ.WriteCgroupProc(dir, pid); err != nil {
			return fmt.Errorf("join pid %d to %s: %w", pid, dir, err)
		}
	}
	return nil
}
