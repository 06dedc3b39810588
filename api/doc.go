// Package api is scoped's gRPC edge: it serves the scoped.v1 API on the
// daemon's unix socket, authenticates callers and checks which tenants they
// may act for, caps requests, and calls the supervisor. It is the one place
// that turns errors into gRPC status codes: every sentinel error that can
// reach it is mapped to a deliberate code (status.go).
package api
