// Package fleet makes a daemon one node of a fleet that shares an etcd
// cluster: its membership under a lease (Member), and the fleet-wide state
// (tenants, extensions, spend, bundle holders) it watches and writes in
// transactions (State). While etcd is unreachable the State is degraded: it
// serves the last state it saw and refuses writes with ErrUnavailable.
// Without [fleet] endpoints nothing of it runs and the daemon is a single
// host.
package fleet
