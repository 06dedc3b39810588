package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/scoped-io/scoped/cgroups"
)

// openCgroups opens the scopes' cgroup tree: in the delegated layout when
// cgroup_delegate asks for it and it applies (the daemon then moves into
// its leaf first), else at cgroup_root.
func openCgroups(cfg *Config, log *slog.Logger) (*cgroups.Tree, error) {
	if cfg.CgroupDelegate == "off" {
		if d, err := cgroups.Detect(true); err == nil {
			log.Warn("cgroup_delegate is off: the cgroup tree is at cgroup_root, outside the cgroup systemd delegated to the service",
				"cgroup_root", cfg.CgroupRoot, "service_cgroup", d.Service)
		}
		return cgroups.Open(cfg.CgroupRoot)
	}
	forced := cfg.CgroupDelegate == "on"
	d, err := cgroups.Detect(!forced)
	if err == nil {
		var tree *cgroups.Tree
		if tree, err = cgroups.OpenDelegated(d, os.Getpid(), cfg.SupervisorCPUWeight); err == nil {
			log.Info("cgroups: the delegated layout", "service_cgroup", d.Service, "supervisor", d.Leaf(),
				"supervisor_cpu_weight", cfg.SupervisorCPUWeight, "cgroup_root", tree.Root(), "systemd", d.Systemd)
			if d.Systemd && !d.Marked() {
				log.Warn("systemd did not mark the service's cgroup as delegated (trusted.delegate): the unit lacks Delegate=yes, or systemd is older than 251",
					"service_cgroup", d.Service)
			}
			return tree, nil
		}
		if forced || !errors.Is(err, cgroups.ErrNotDelegated) {
			return nil, fmt.Errorf("cgroup_delegate = %q: %w", cfg.CgroupDelegate, err)
		}
	}
	if forced {
		return nil, fmt.Errorf("cgroup_delegate = \"on\": %w", err)
	}
	if d.Systemd {
		log.Warn("started by systemd, but the cgroup tree is at cgroup_root: "+err.Error(), "cgroup_root", cfg.CgroupRoot)
	}
	return cgroups.Open(cfg.CgroupRoot)
}

// CgroupRoot is the cgroup path of the scopes' tree in force: cgroup_root,
// or <service cgroup>/scopes in the delegated layout.
func (s *Supervisor) CgroupRoot() string {
	if s.tree == nil {
		return s.conf().CgroupRoot
	}
	return s.tree.Root()
}
