package supervisor

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestUnitNetworkOf(t *testing.T) {
	egress, none := Tier{Network: NetworkEgress}, Tier{Network: NetworkNone}
	for _, c := range []struct {
		tier     Tier
		manifest string
		want     string
		denied   bool
	}{
		{none, "", NetworkNone, false},
		{Tier{}, "", NetworkNone, false}, // an unset tier network is none
		{none, NetworkNone, NetworkNone, false},
		{none, NetworkEgress, "", true},
		{egress, "", NetworkEgress, false},
		{egress, NetworkEgress, NetworkEgress, false},
		{egress, NetworkNone, NetworkNone, false}, // an extension may ask for less
	} {
		got, err := networkOf(c.tier, ExtensionInfo{Name: "x", Network: c.manifest})
		if got != c.want || errors.Is(err, ErrNetworkDenied) != c.denied {
			t.Errorf("tier %q, manifest %q: %q, %v; want %q (denied %v)", c.tier.Network, c.manifest, got, err, c.want, c.denied)
		}
	}
}

func TestUnitNetworkManifest(t *testing.T) {
	base := "runtime = \"go\"\nentrypoint = \"w\"\n"
	for _, v := range []string{"", `network = "none"`, `network = "egress"`} {
		m, err := ParseManifest([]byte(base + v))
		if err != nil {
			t.Errorf("%s: %v", v, err)
		}
		if v != "" && !strings.Contains(v, m.Network) {
			t.Errorf("%s: parsed %q", v, m.Network)
		}
	}
	for _, v := range []string{`network = "host"`, `network = "EGRESS"`, `network = 1`} {
		if _, err := ParseManifest([]byte(base + v)); err == nil {
			t.Errorf("%s: accepted", v)
		}
	}
}

func TestUnitNetworkTierAndConfig(t *testing.T) {
	c, err := LoadConfig(writeTemp(t, `
[tiers.net]
network = "egress"
egress_allow = ["198.51.100.0/24:443", "203.0.113.7"]
egress_rate = 1000000
[network]
uplink = "eth9"
pool_size = 2
`))
	if err != nil {
		t.Fatal(err)
	}
	if n := c.Tiers["net"]; n.Network != NetworkEgress || len(n.EgressAllow) != 2 || n.EgressRate != 1e6 || n.IngressRate != 0 {
		t.Errorf("tier net = %+v", n)
	}
	if !c.wantsEgress() || c.Network.Uplink != "eth9" || c.Network.Bridge != "scoped0" || c.Network.Subnet != "10.213.0.0/16" {
		t.Errorf("network = %+v", c.Network)
	}
	for _, bad := range []string{
		"[tiers.net]\nnetwork = \"host\"",
		"[tiers.net]\negress_allow = [\"2001:db8::/32\"]",
		"[tiers.net]\negress_allow = [\"10.0.0.0/8:0\"]",
		"[tiers.net]\negress_rate = -1",
		"[tiers.net]\ningress_rate = 10",
		"[network]\nsubnet = \"10.0.0.0/30\"",
		"[network]\nsubnet = \"fd00::/64\"",
		"[network]\nbridge = \"scv0\"",
		"[network]\nbridge = \"a-name-much-too-long\"",
		"[network]\nuplink = \"../x\"",
		"[network]\npool_size = 1000",
	} {
		if _, err := LoadConfig(writeTemp(t, bad)); err == nil {
			t.Errorf("accepted:\n%s", bad)
		}
	}
	many := make([]string, maxAllowRules+1)
	for i := range many {
		many[i] = "192.0.2.1"
	}
	if _, err := parseAllow(many); err == nil {
		t.Error("an allow-list over the maximum was taken")
	}
}

// writeTemp writes a configuration file for LoadConfig.
func writeTemp(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Allow-lists are parsed once: a tier's by Validate, a tenant's when it is
// set or read from the state file; the policy joins the parsed rules.
func TestUnitNetworkAllowParsedOnce(t *testing.T) {
	c := DefaultConfig()
	gold := BaseTier()
	gold.Network, gold.EgressAllow = NetworkEgress, []string{"203.0.113.0/24:443"}
	c.Tiers["gold"] = gold
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if r := c.Tiers["gold"].egressRules; len(r) != 1 {
		t.Fatalf("tier rules after Validate = %v, want one", r)
	}
	dir := t.TempDir()
	reg, err := openTenants(dir)
	if err != nil {
		t.Fatal(err)
	}
	bad := []string{"not-an-address"}
	if err := reg.assign("acme", "gold", &bad, time.Now()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("assign a bad allow-list = %v, want ErrInvalid", err)
	}
	if _, err := os.Stat(filepath.Join(dir, tenantsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused assignment wrote the file: %v", err)
	}
	own := []string{"198.51.100.7:80,443"}
	if err := reg.assign("acme", "gold", &own, time.Now()); err != nil {
		t.Fatal(err)
	}
	// Assigning a tier alone keeps the list and its rules.
	if err := reg.assign("acme", "gold", nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	s := &networks{tenants: reg}
	pol, err := s.policy("acme", c.Tiers["gold"])
	if err != nil || len(pol.Allow) != 2 {
		t.Fatalf("policy = %+v, %v; want the tier's and the tenant's rule", pol, err)
	}
	// Read back from the file, the rules are parsed again once.
	again, err := openTenants(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := again.egressRules("acme"); err != nil || len(r) != 1 || !reflect.DeepEqual(r, pol.Allow[1:]) {
		t.Fatalf("rules read back = %v, %v; want %v", r, err, pol.Allow[1:])
	}
	// A hand-edited file with a bad rule: that tenant's policy is refused.
	doc := `{"version": 1, "tenants": {"beta": {"tier": "gold", "updated": "2026-01-01T00:00:00Z", "egress_allow": ["::1"]}}}`
	if err := os.WriteFile(filepath.Join(dir, tenantsFile), []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if s.tenants, err = openTenants(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := s.policy("beta", c.Tiers["gold"]); !errors.Is(err, ErrInvalid) {
		t.Fatalf("policy with a bad stored rule = %v, want ErrInvalid", err)
	}
}
