package supervisor

import (
	"fmt"
	"slices"
	"strings"

	"github.com/scoped-io/scoped/internal/ident"
)

// Target is what an invocation names: who calls what. Every id in it is
// checked: NewTarget is its only maker (the API edge calls it on the
// request), so nothing beneath checks them again. The zero Target names
// nothing and is refused.
type Target struct {
	tenant                       ident.Tenant
	environment, user, extension string
}

// NewTarget checks environment, user ("" for none) and extension and
// returns the target; tenant is checked already (ident.ParseTenant).
func NewTarget(tenant ident.Tenant, environment, user, extension string) (Target, error) {
	if tenant == "" { // the zero Tenant: no tenant
		return Target{}, fmt.Errorf("%w: %w", ErrInvalid, ident.Check("tenant", ""))
	}
	fields := [][2]string{{"environment", environment}, {"extension", extension}}
	if user != "" {
		fields = append(fields, [2]string{"user", user})
	}
	for _, f := range fields {
		if err := ident.Check(f[0], f[1]); err != nil {
			return Target{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if user == AnonymousUser {
		return Target{}, fmt.Errorf("%w: user %q is reserved for requests without a user", ErrInvalid, user)
	}
	return Target{tenant: tenant, environment: environment, user: user, extension: extension}, nil
}

// Tenant, Environment, User and Extension are the target's ids (User: ""
// for a request without one).
func (t Target) Tenant() ident.Tenant { return t.tenant }
func (t Target) Environment() string  { return t.environment }
func (t Target) User() string         { return t.user }
func (t Target) Extension() string    { return t.extension }

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
	id := ScopeID{Tenant: string(t.tenant)}
	var parts []string
	// Fixed order, whatever the order in the configuration.
	if slices.Contains(p.By, "environment") {
		id.Environment = t.environment
		parts = append(parts, t.environment)
	}
	if slices.Contains(p.By, "user") {
		u := t.user
		if u == "" {
			u = AnonymousUser
		}
		id.User = u
		parts = append(parts, u)
	}
	if slices.Contains(p.By, "extension") {
		id.Extension = t.extension
		parts = append(parts, t.extension)
	}
	id.Name = strings.Join(parts, ".")
	if id.Name == "" {
		id.Name = "all"
	}
	return id
}

// idOf is scopeOf read backwards: the scope id of tenant's scope name.
// A name this policy cannot have made (the policy changed since) keeps
// the tenant and name alone.
func (p Isolation) idOf(tenant, name string) ScopeID {
	id := ScopeID{Tenant: tenant, Name: name}
	var fields []*string
	for _, f := range []struct {
		name string
		to   *string
	}{{"environment", &id.Environment}, {"user", &id.User}, {"extension", &id.Extension}} {
		if slices.Contains(p.By, f.name) {
			fields = append(fields, f.to)
		}
	}
	parts := strings.Split(name, ".")
	if len(fields) == 0 || len(parts) != len(fields) {
		return ScopeID{Tenant: tenant, Name: name}
	}
	for i, f := range fields {
		*f = parts[i]
	}
	return id
}
