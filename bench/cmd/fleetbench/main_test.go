package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/scoped-io/scoped/internal/tlstest"
	"github.com/scoped-io/scoped/supervisor"
)

func TestCompare(t *testing.T) {
	before := map[string]string{"a": "n1", "b": "n2", "c": "n3", "d": "n3", "e": "n1"}
	after := map[string]string{"a": "n1", "b": "n1", "c": "n1", "d": "n2", "e": "n1"}
	m := compare(3, "test", "n3", before, after)
	if m.total != 5 || m.onLeaving != 2 || m.moved != 3 || m.movedOthers != 1 {
		t.Errorf("compare = %+v, want 5 keys, 2 on n3, 3 moved, 1 other", m)
	}
}

// TestSettingsLoad: every daemon's configuration, a fleet node's and the
// single host's, is one the daemon accepts, with id ranges apart.
func TestSettingsLoad(t *testing.T) {
	b := &bench{o: options{leaseTTL: 10 * time.Second}, endpoint: "http://127.0.0.1:2379", ca: tlstest.NewCA(t)}
	var bases []uint32
	for i, fleet := range []bool{true, true, false} {
		s, err := b.settings(fmt.Sprintf("n%d", i+1), i, fleet)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := supervisor.LoadConfig(p)
		if err != nil {
			t.Fatalf("settings %d: %v\n%s", i, err, s)
		}
		if c.Fleet.Enabled() != fleet || !slices.Equal(c.Isolation.By, []string{"user"}) || c.Scope.IDSlots != idSlots {
			t.Errorf("settings %d: fleet %v, isolation %v, %d id slots", i, c.Fleet.Enabled(), c.Isolation.By, c.Scope.IDSlots)
		}
		if fleet && (c.Fleet.LeaseTTL.Duration != 10*time.Second || c.Fleet.Node != fmt.Sprintf("n%d", i+1)) {
			t.Errorf("settings %d: lease_ttl %s, node %q", i, c.Fleet.LeaseTTL.Duration, c.Fleet.Node)
		}
		bases = append(bases, c.Scope.IDBase)
	}
	if bases[1]-bases[0] != idSlots<<16 || bases[2]-bases[1] != idSlots<<16 {
		t.Errorf("id bases %v: want ranges of %d slots side by side", bases, idSlots)
	}
}
