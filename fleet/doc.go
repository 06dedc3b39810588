// Package fleet makes a daemon one node of a fleet that shares an etcd
// cluster: its membership under a lease, and the fleet-wide state (tenants,
// extensions, spend) it watches. Without [fleet] endpoints nothing of it
// runs and the daemon is a single host.
package fleet
