package supervisor

import (
	"log/slog"
	"path"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/scoped-io/scoped/cgroups"
)

// What the API edge (package api) needs of the supervisor beyond its
// methods: the configuration in force, and for the edge's tests a
// supervisor without cgroups.

// Config is the configuration in force (after the last Reload). The caller
// must not modify it.
func (s *Supervisor) Config() *Config { return s.conf() }

// Detached is a supervisor built as New builds it but without its cgroup
// tree, for the tests of the API edge: New opens the cgroup root, which
// creates it (root only) and would leave it behind in every fuzz worker
// process. Nothing runs (no reaper, sandbox, accounting, network or
// controller); of what Recover starts it opens only the metering ledger.
// It is stopping: an invocation that passes every check ends with
// ErrStopping where it would create a scope.
type Detached struct{ *Supervisor }

// NewDetached builds a Detached supervisor; Close closes its ledger.
func NewDetached(cfg Config, log *slog.Logger) (*Detached, error) {
	noTree := func(string) (*cgroups.Tree, error) { return nil, nil }
	s, err := newSupervisor(cfg, log, noTree)
	if err != nil {
		return nil, err
	}
	s.inv.pluginLog = hclog.NewNullLogger()
	s.scopes.stop()
	if err := s.meter.open(); err != nil {
		return nil, err
	}
	return &Detached{s}, nil
}

// Close closes the metering ledger.
func (d *Detached) Close() error { return d.meter.close() }

// AddScope adds the live scope of t holding lines (their Scope set to its
// key), without a cgroup or a worker: its node names a cgroup that does not
// exist, its stats are zero. It returns the scope's key.
func (d *Detached) AddScope(t Target, lines []LogLine) (string, error) {
	id := d.conf().Isolation.scopeOf(t)
	tier, _ := d.tierOf(id.Tenant)
	node, err := cgroups.Load(path.Join("/scoped-detached-absent", tier, id.Tenant, id.Name))
	if err != nil {
		return "", err
	}
	now := time.Now()
	sc := &scope{id: id, tier: tier, node: node, ring: newLogRing(max(len(lines), 1)), created: now, lastUsed: now}
	for _, l := range lines {
		l.Scope = id.Key()
		sc.ring.add(l)
	}
	d.scopes.locked(func() { d.scopes.addLocked(sc) })
	return id.Key(), nil
}

// Followers is how many followers of Logs the live scopes have.
func (d *Detached) Followers() int {
	n := 0
	for _, sc := range d.scopes.snapshot(nil) {
		sc.ring.mu.Lock()
		n += len(sc.ring.followers)
		sc.ring.mu.Unlock()
	}
	return n
}
