package netns

import (
	"fmt"
	"net/netip"
)

// Settings is the daemon's [network] table: where the scopes of tiers with
// network = "egress" get their network. The toml tags are its keys,
// Validate its checks; Config turns it into a Config once the daemon knows
// its cgroup depth and state directory.
type Settings struct {
	// Bridge is the bridge scoped makes and owns (and its nftables table).
	Bridge string `toml:"bridge"`
	// Subnet is the scopes' private IPv4 subnet (must not overlap a
	// route); empty: DefaultSubnet.
	Subnet string `toml:"subnet"`
	// Uplink is the interface egress leaves by, NATed to its address;
	// empty: the interface of the IPv4 default route.
	Uplink string `toml:"uplink"`
	// PoolSize namespaces are kept ready so an egress scope starts fast
	// (0: none).
	PoolSize int `toml:"pool_size"`

	// subnet is Subnet parsed by Validate.
	subnet netip.Prefix
}

// MaxPoolSize bounds Settings.PoolSize.
const MaxPoolSize = 64

// Validate checks the settings and keeps Subnet parsed.
func (s *Settings) Validate() error {
	s.subnet = netip.Prefix{}
	if s.Subnet != "" {
		p, err := netip.ParsePrefix(s.Subnet)
		if err != nil {
			return fmt.Errorf("network.subnet: %w", err)
		}
		s.subnet = p
	}
	if s.PoolSize < 0 || s.PoolSize > MaxPoolSize {
		return fmt.Errorf("network.pool_size must be in 0..%d", MaxPoolSize)
	}
	if err := CheckConfig(s.Config(1, "/network")); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	return nil
}

// Config is the Config of validated settings for scope cgroups at
// scopeLevel, keeping its state in stateDir.
func (s Settings) Config(scopeLevel uint32, stateDir string) Config {
	c := Config{Bridge: s.Bridge, Subnet: s.subnet, Uplink: s.Uplink, PoolSize: s.PoolSize,
		ScopeLevel: scopeLevel, StateDir: stateDir}
	if s.PoolSize == 0 {
		c.PoolSize = -1
	}
	return c
}
