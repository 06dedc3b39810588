// Package cgroups owns scoped's cgroup tree, <root>/<tier>/<tenant>/<scope>
// with optional worker leaves, on cgroup v1, hybrid and v2. It creates nodes,
// sets CPU, memory and pids limits, reads their statistics, kills their
// processes and removes them bottom-up. Under systemd (a service with
// Delegate=yes on cgroup v2) it sets up the delegated layout: the daemon in
// the leaf <service>/supervisor, the tree under <service>/scopes (Detect,
// OpenDelegated). It builds on runc's
// github.com/opencontainers/cgroups managers; the one gotcha is hybrid mode,
// where those managers silently ignore a failure to join the unified tree,
// so callers verify it with [VerifyUnified].
package cgroups
