package fleet

import (
	"runtime"
	"slices"

	"github.com/scoped-io/scoped/fleet/record"
)

// NodeRecord is this node's membership record from the [fleet] table
// (validated) and its scope slots; the load fields are the Member's Load.
func (c *Config) NodeRecord(slots int, version string) record.Node {
	return record.Node{Name: c.Node, Addr: c.Advertise, Labels: slices.Clone(c.Labels),
		Slots: slots, CPUs: runtime.NumCPU(), Version: version}
}
