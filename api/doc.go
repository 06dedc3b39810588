// Package api is scoped's gRPC edge: it serves the scoped.v1 API on the
// daemon's unix socket, authenticates callers and checks which tenants they
// may act for, caps requests, and calls the supervisor. It is the one place
// that turns errors into gRPC status codes: every sentinel error that can
// reach it is mapped to a deliberate code (status.go).
//
// The ids of a request are checked here, once: the tenant becomes an
// ident.Tenant (mayAct) and an invocation's or extension's ids a
// supervisor.Target (supervisor.NewTarget), which the code beneath takes as
// checked. Only code that joins an id into a path checks it again (the
// extension store, cgroups), so that a caller skipping the edge cannot
// reach outside its directory.
package api
