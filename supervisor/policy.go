package supervisor

import (
	"slices"
	"strings"
)

// Target is what an invocation names: who calls what.
type Target struct {
	Tenant, Environment, User, Extension string
}

// ScopeID identifies a scope: the tenant plus the fields the isolation
// policy selects. Name is the dotted rest ("production.alice"), or "all"
// when the policy selects nothing beyond the tenant.
type ScopeID struct {
	Tenant string
	Name   string
	// The fields that made it; empty when the policy ignores them.
	Environment, User, Extension string
}

// Key is the scope's name in the API: "tenant.name".
func (s ScopeID) Key() string { return s.Tenant + "." + s.Name }

// AnonymousUser names the user of requests without one in scope names; it
// is reserved, so no request may name it as its user.
const AnonymousUser = "anonymous"

// scopeOf applies the isolation policy. All fields were checked at the edge,
// so the dotted name is unambiguous.
func (p Isolation) scopeOf(t Target) ScopeID {
	id := ScopeID{Tenant: t.Tenant}
	var parts []string
	// Fixed order, whatever the order in the configuration.
	if slices.Contains(p.By, "environment") {
		id.Environment = t.Environment
		parts = append(parts, t.Environment)
	}
	if slices.Contains(p.By, "user") {
		u := t.User
		if u == "" {
			u = AnonymousUser
		}
		id.User = u
		parts = append(parts, u)
	}
	if slices.Contains(p.By, "extension") {
		id.Extension = t.Extension
		parts = append(parts, t.Extension)
	}
	id.Name = strings.Join(parts, ".")
	if id.Name == "" {
		id.Name = "all"
	}
	return id
}
