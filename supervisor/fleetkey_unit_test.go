package supervisor

import (
	"testing"

	"github.com/scoped-io/scoped/fleet/record"
	"github.com/scoped-io/scoped/internal/ident"
)

// TestUnitFleetScopeKey checks that fleet clients route by the daemon's own
// scope key: record.ScopeKey equals scopeOf(...).Key() for every subset and
// order of isolation fields, with and without a user.
func TestUnitFleetScopeKey(t *testing.T) {
	if record.AnonymousUser != AnonymousUser {
		t.Fatalf("record.AnonymousUser %q, supervisor %q", record.AnonymousUser, AnonymousUser)
	}
	fields := []string{"extension", "user", "environment"} // not the fixed order
	tenant, err := ident.ParseTenant("acme")
	if err != nil {
		t.Fatal(err)
	}
	for mask := 0; mask < 1<<len(fields); mask++ {
		var by []string
		for i, f := range fields {
			if mask&(1<<i) != 0 {
				by = append(by, f)
			}
		}
		for _, user := range []string{"", "alice"} {
			tg, err := NewTarget(tenant, "prod", user, "resize")
			if err != nil {
				t.Fatal(err)
			}
			want := Isolation{By: by}.scopeOf(tg).Key()
			got := record.ScopeKey(record.Policy{Isolation: by}, "acme", "prod", user, "resize")
			if got != want {
				t.Errorf("by %v user %q: record.ScopeKey %q, daemon %q", by, user, got, want)
			}
		}
	}
}
