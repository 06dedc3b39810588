package netns

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// Settings keep the subnet parsed by Validate; Config maps pool_size 0
// (none) to a negative PoolSize and an empty subnet to the default.
func TestSettingsValidateAndConfig(t *testing.T) {
	s := Settings{Bridge: "scoped0", Subnet: "10.9.0.0/16", PoolSize: 0}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	c := s.Config(4, "/run/scoped/network")
	if c.Subnet != netip.MustParsePrefix("10.9.0.0/16") || c.PoolSize >= 0 || c.ScopeLevel != 4 || c.StateDir != "/run/scoped/network" {
		t.Fatalf("Config = %+v", c)
	}
	s = Settings{PoolSize: 4}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if c := s.Config(3, "/x"); c.PoolSize != 4 || c.Subnet.IsValid() || CheckConfig(c) != nil {
		t.Fatalf("Config of the defaults = %+v", c)
	}
	for _, bad := range []struct {
		s    Settings
		want string
	}{
		{Settings{Subnet: "10.0.0.0/33"}, "network.subnet: "},
		{Settings{PoolSize: MaxPoolSize + 1}, "network.pool_size must be in 0..64"},
		{Settings{Subnet: "10.0.0.0/30"}, "network: "},
		{Settings{Bridge: "scv0"}, "network: "},
	} {
		err := bad.s.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), bad.want) {
			t.Errorf("%+v: %v, want %q…", bad.s, err, bad.want)
		}
		if strings.HasPrefix(bad.want, "network: ") && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v: %v, not ErrInvalidConfig", bad.s, err)
		}
	}
}
