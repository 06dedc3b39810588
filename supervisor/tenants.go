package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/netns"
)

// tenantsFile is the tier assignments' file in the state directory.
const tenantsFile = "tenants.json"

// maxTenantsFile bounds what the daemon reads back at start.
const maxTenantsFile = 64 << 20

// tenantRegistry keeps the tenants' tier assignments (persisted in the
// state directory, so they survive restarts); their admission state is
// the gate's.
type tenantRegistry struct {
	path string

	mu       sync.Mutex
	assigned map[string]tenantRecord // tenant → assignment
}

// tenantRecord is one tenant's entry in the file.
type tenantRecord struct {
	Tier    string    `json:"tier"`
	Updated time.Time `json:"updated"`
	// EgressAllow is the tenant's own egress allow-list (checked rules).
	EgressAllow []string `json:"egress_allow,omitempty"`
	// rules is EgressAllow parsed when the record was made or read, or
	// rulesErr why it does not parse (a hand-edited file).
	rules    []netns.Rule
	rulesErr error
}

type tenantsDoc struct {
	Version int                     `json:"version"`
	Tenants map[string]tenantRecord `json:"tenants"`
}

// openTenants reads the assignments from stateDir (none yet is fine).
func openTenants(stateDir string) (*tenantRegistry, error) {
	r := &tenantRegistry{path: filepath.Join(stateDir, tenantsFile), assigned: map[string]tenantRecord{}}
	f, err := os.Open(r.path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var doc tenantsDoc
	dec := json.NewDecoder(io.LimitReader(f, maxTenantsFile)) // a cut file fails to decode
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s: %w", r.path, err)
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("%s: version %d, want 1", r.path, doc.Version)
	}
	for t, rec := range doc.Tenants {
		if err := ident.Check("tenant", t); err != nil {
			return nil, fmt.Errorf("%s: %w", r.path, err)
		}
		if err := ident.Check("tier", rec.Tier); err != nil {
			return nil, fmt.Errorf("%s: tenant %s: %w", r.path, t, err)
		}
		rec.rules, rec.rulesErr = parseAllow(rec.EgressAllow)
		r.assigned[t] = rec
	}
	return r, nil
}

// tierOf is the tenant's tier name: its assignment or def.
func (r *tenantRegistry) tierOf(tenant, def string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec, ok := r.assigned[tenant]; ok {
		return rec.Tier
	}
	return def
}

// assignments returns a copy of every assignment.
func (r *tenantRegistry) assignments() map[string]tenantRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.assigned)
}

// egressRules is the tenant's own egress allow-list, parsed.
func (r *tenantRegistry) egressRules(tenant string) ([]netns.Rule, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := r.assigned[tenant]
	return rec.rules, rec.rulesErr
}

// assign records tenant's tier (and, given allow, its own egress
// allow-list, refused with ErrInvalid unless it parses) and writes the
// file; the file and the registry change together or not at all.
func (r *tenantRegistry) assign(tenant, tier string, allow *[]string, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := maps.Clone(r.assigned)
	prev := next[tenant]
	rec := tenantRecord{Tier: tier, Updated: now.UTC(), EgressAllow: prev.EgressAllow, rules: prev.rules, rulesErr: prev.rulesErr}
	if allow != nil {
		rules, err := parseAllow(*allow)
		if err != nil {
			return fmt.Errorf("%w: egress allow-list: %w", ErrInvalid, err)
		}
		rec.EgressAllow, rec.rules, rec.rulesErr = slices.Clone(*allow), rules, nil
	}
	next[tenant] = rec
	if err := writeJSONAtomic(r.path, tenantsDoc{Version: 1, Tenants: next}); err != nil {
		return fmt.Errorf("save tier assignments: %w", err)
	}
	r.assigned = next
	return nil
}

// writeJSONAtomic replaces path with v: a temporary file in the same
// directory, synced, renamed over path, and the directory synced.
func writeJSONAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// TenantInfo is one tenant as the API shows it.
type TenantInfo struct {
	Tenant   string
	Tier     string
	Assigned bool // false: the default tier
	Updated  time.Time
	Scopes   int // live scopes
	InFlight int // invocations in flight (counted where the tier limits them)
	// EgressAllow is the tenant's own egress allow-list.
	EgressAllow []string
}

// tenantNames is the sorted union of assigned tenants and those in live.
func tenantNames(assigned map[string]tenantRecord, live map[string]int) []string {
	set := map[string]struct{}{}
	for t := range assigned {
		set[t] = struct{}{}
	}
	for t := range live {
		set[t] = struct{}{}
	}
	return slices.Sorted(maps.Keys(set))
}
