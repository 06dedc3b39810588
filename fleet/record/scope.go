package record

import (
	"slices"
	"strings"
)

// AnonymousUser stands for the user of a request without one, as the
// daemon names it in scope keys (supervisor.AnonymousUser).
const AnonymousUser = "anonymous"

// ScopeKey is the daemon's key of the scope a request lands in under the
// policy p: "tenant.name", where name joins the fields p.Isolation selects
// in the fixed order environment, user, extension ("anonymous" for an
// empty user), or is "all" when it selects none. It must stay equal to
// supervisor's ScopeID.Key of the same request (a test there checks).
func ScopeKey(p Policy, tenant, environment, user, extension string) string {
	var parts []string
	if slices.Contains(p.Isolation, "environment") {
		parts = append(parts, environment)
	}
	if slices.Contains(p.Isolation, "user") {
		if user == "" {
			user = AnonymousUser
		}
		parts = append(parts, user)
	}
	if slices.Contains(p.Isolation, "extension") {
		parts = append(parts, extension)
	}
	name := strings.Join(parts, ".")
	if name == "" {
		name = "all"
	}
	return tenant + "." + name
}
