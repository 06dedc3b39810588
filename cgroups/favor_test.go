package cgroups_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/testutil"
)

// TestFavorDynMods turns the option on and off again, and checks that the
// mount's other options stay as they were.
func TestFavorDynMods(t *testing.T) {
	testutil.RequiresRoot(t)
	before := mountLine(t)
	if strings.Contains(before, "favordynmods") {
		t.Skip("favordynmods is on already: turning it off would change the host")
	}
	restore, err := cgroups.FavorDynMods()
	if errors.Is(err, cgroups.ErrNoFavorDynMods) {
		t.Skipf("%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if on := mountLine(t); !strings.Contains(on, "favordynmods") {
		t.Errorf("after FavorDynMods: %s", on)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if after := mountLine(t); after != before {
		t.Errorf("after restore:\n%s\nbefore:\n%s", after, before)
	}
}

// mountLine is the cgroup2 mount's line of mountinfo, without its ids.
func mountLine(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, " - cgroup2 ") {
			f := strings.Fields(l)
			return strings.Join(f[4:], " ")
		}
	}
	t.Skip("no cgroup2 mount")
	return ""
}
