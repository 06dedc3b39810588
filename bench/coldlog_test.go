package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadColdLog(t *testing.T) {
	log := strings.Join([]string{
		`time=2025-01-02T03:04:05.001Z level=DEBUG msg="scope created" tenant=a env=x`,
		`time=2025-01-02T03:04:05.003Z level=DEBUG msg="scope network" tenant=a mode=egress`,
		`2025-01-02T03:04:05.010Z [DEBUG] go-plugin: waiting for RPC address: plugin=/var/lib/scoped/extensions/a/whoami/whoami`,
		`2025-01-02T03:04:05.020Z [DEBUG] go-plugin: using plugin: version=1`,
		`time=2025-01-02T03:04:06.001Z level=DEBUG msg="scope created" tenant=b`,
		`2025-01-02T03:04:06.010Z [DEBUG] go-plugin: waiting for RPC address: plugin=/var/lib/scoped/extensions/b/whoami/whoami`,
		`time=2025-01-02T03:04:07.001Z level=DEBUG msg="scope created" tenant=c`,
		`an unrelated line`,
	}, "\n") + "\n"
	path := filepath.Join(t.TempDir(), "daemon.log")
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := ReadColdLog(path)
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	a, err := l.Tenant("a")
	if err != nil {
		t.Fatal(err)
	}
	want := ColdEvents{
		Scope:     at("2025-01-02T03:04:05.001Z"),
		Network:   at("2025-01-02T03:04:05.003Z"),
		Sandbox:   at("2025-01-02T03:04:05.010Z"),
		Handshake: at("2025-01-02T03:04:05.020Z"),
	}
	if *a != want {
		t.Errorf("tenant a: %+v, want %+v", *a, want)
	}
	if b := l["b"]; b == nil || !b.Network.IsZero() || b.Sandbox.IsZero() || !b.Handshake.IsZero() {
		t.Errorf("tenant b: %+v, want a sandbox start, no network, no handshake", b)
	}
	for _, tenant := range []string{"b", "c", "d"} {
		if _, err := l.Tenant(tenant); err == nil || !strings.Contains(err.Error(), "tenant "+tenant) {
			t.Errorf("Tenant(%q): %v, want an error that names it", tenant, err)
		}
	}
}
