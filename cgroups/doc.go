// Package cgroups owns scoped's cgroup tree, <root>/<tier>/<tenant>/<scope>
// with optional worker leaves, on cgroup v1, hybrid and v2. It creates nodes,
// sets CPU, memory and pids limits, reads their statistics, kills their
// processes and removes them bottom-up. It builds on runc's
// github.com/opencontainers/cgroups managers; the one gotcha is hybrid mode,
// where those managers silently ignore a failure to join the unified tree,
// so callers verify it with [VerifyUnified].
package cgroups
