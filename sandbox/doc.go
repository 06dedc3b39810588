// Package sandbox starts one process in a sandbox: new pid, mount, ipc,
// uts, cgroup, net (loopback only) and user namespaces, a read-only root of
// bind mounts, a size-capped private /tmp, no capabilities, no_new_privs, a
// seccomp filter and rlimits. It knows nothing about tenants: callers give
// it a cgroup path, a host id range and a hostname. It also implements
// go-plugin's runner.Runner, so go-plugin can start workers inside
// sandboxes.
//
// Two launchers give the same isolation (the tests compare them): the
// native one (launch.go) clones a small static init into the namespaces
// and the cgroup, and libcontainer's. A binary that may use libcontainer
// must call [Init] first thing in main (or TestMain), as libcontainer
// re-executes it as the sandbox's init; it must be built with cgo and
// "-tags seccomp".
package sandbox
