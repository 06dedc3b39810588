package systemd_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/scoped-io/scoped/supervisor"
)

// TestFleetConfigLoads: the fleet node's example configuration loads with
// the daemon's own loader, as a fleet node with TLS everywhere and its
// credentials under /etc/scoped/fleet; so does its [[client]] example once
// uncommented.
func TestFleetConfigLoads(t *testing.T) {
	c, err := supervisor.LoadConfig("fleet.toml")
	if err != nil {
		t.Fatal(err)
	}
	f := c.Fleet
	if !f.Enabled() {
		t.Fatal("fleet.toml: [fleet] is not enabled")
	}
	for _, e := range f.Endpoints {
		if !strings.HasPrefix(e, "https://") {
			t.Errorf("endpoint %q: not TLS", e)
		}
	}
	for key, p := range map[string]string{"etcd_ca": f.EtcdCA, "etcd_cert": f.EtcdCert, "etcd_key": f.EtcdKey,
		"tls_ca": f.TLSCA, "tls_cert": f.TLSCert, "tls_key": f.TLSKey} {
		if filepath.Dir(p) != "/etc/scoped/fleet" {
			t.Errorf("fleet.%s = %q, want a file in /etc/scoped/fleet", key, p)
		}
	}
	if strings.HasPrefix(f.Listen, "0.0.0.0:") || strings.HasPrefix(f.Listen, "[::]:") || f.Advertise == "" {
		t.Errorf("listen %q, advertise %q: want a host address", f.Listen, f.Advertise)
	}
	if f.LeaseTTL.Duration != 10*time.Second {
		t.Errorf("lease_ttl = %v", f.LeaseTTL.Duration)
	}
	if p := c.Tiers["acme"].Placement; len(p) != 1 || p[0] != "dedicated-acme" {
		t.Errorf("tiers.acme.placement = %q", p)
	}

	b, err := os.ReadFile("fleet.toml")
	if err != nil {
		t.Fatal(err)
	}
	client := regexp.MustCompile(`(?m)^# (\[\[client\]\]|(name|token|tenants|admin) = .*)$`)
	uncommented := client.ReplaceAllString(string(b), "$1")
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(uncommented), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = supervisor.LoadConfig(path)
	if err != nil {
		t.Fatalf("fleet.toml with its [[client]] example: %v", err)
	}
	if len(c.Clients) != 2 || !c.Clients[1].Admin {
		t.Errorf("[[client]] example: %+v", c.Clients)
	}
}

// TestFleetDropInVerifies: scoped.service with the fleet drop-in passes
// systemd-analyze verify, which reads the drop-in (a bad key in it is
// reported: the control).
func TestFleetDropInVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	unit, err := os.ReadFile("scoped.service")
	if err != nil {
		t.Fatal(err)
	}
	dropIn, err := os.ReadFile("scoped.service.d/fleet.conf")
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	verify := func(dropIn string) string {
		dir := t.TempDir()
		text := strings.ReplaceAll(string(unit), "/usr/local/bin/scoped", self)
		if err := os.WriteFile(filepath.Join(dir, "scoped.service"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(dir, "scoped.service.d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "scoped.service.d", "fleet.conf"), []byte(dropIn), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", filepath.Join(dir, "scoped.service")).CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if out := verify(string(dropIn)); out != "" {
		t.Fatalf("systemd-analyze verify with the fleet drop-in:\n%s", out)
	}
	if out := verify(string(dropIn) + "NoSuchKey=1\n"); !strings.Contains(out, "NoSuchKey") {
		t.Fatalf("systemd-analyze verify did not read the drop-in: %q", out)
	}
	for _, want := range []string{"StartLimitIntervalSec=0", "RestartSec="} {
		if !strings.Contains(string(dropIn), "\n"+want) {
			t.Errorf("drop-in lacks %s", want)
		}
	}
}
