// Package sandbox starts one process in a sandbox with libcontainer: new
// pid, mount, ipc, uts, cgroup, net (loopback only) and user namespaces, a
// rootfs of read-only bind mounts, a size-capped private /tmp, no
// capabilities, no_new_privs, a seccomp filter and rlimits. It knows nothing
// about tenants: callers give it a cgroup path, a host id range and a
// hostname. It also implements go-plugin's runner.Runner, so go-plugin can
// start workers inside sandboxes.
//
// A binary that starts sandboxes must call [Init] first thing in main (or
// TestMain): libcontainer re-executes the calling binary as the sandbox's
// init, and the binary must be built with cgo and "-tags seccomp".
package sandbox
