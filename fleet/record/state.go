package record

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"path"
	"strings"
	"time"

	"github.com/scoped-io/scoped/internal/ident"
)

// Bounds of the fleet-wide state records.
const (
	MaxAllow     = 1024 // entries of a tenant's egress allow-list
	MaxAllowLen  = 256  // bytes of one entry
	MaxMeters    = 256  // meters of a spend record
	MaxEntryPath = 1024 // bytes of an extension's entrypoint
)

// Tenant is a tenant's fleet-wide assignment: what tenants.json holds on a
// single host.
type Tenant struct {
	Tier    string    `json:"tier"`
	Updated time.Time `json:"updated"`
	// EgressAllow is the tenant's own egress allow-list ("CIDR[:ports]");
	// only its size is checked here, the daemon parses the rules.
	EgressAllow []string `json:"egress_allow,omitempty"`
}

// Check checks a tenant record.
func (t *Tenant) Check() error {
	if err := ident.Check("tier", t.Tier); err != nil {
		return fmt.Errorf("%w: tenant: %w", ErrInvalid, err)
	}
	if len(t.EgressAllow) > MaxAllow {
		return fmt.Errorf("%w: tenant: %d egress rules, at most %d", ErrInvalid, len(t.EgressAllow), MaxAllow)
	}
	for _, r := range t.EgressAllow {
		if r == "" || len(r) > MaxAllowLen || strings.ContainsFunc(r, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
			return fmt.Errorf("%w: tenant: egress rule %q", ErrInvalid, r)
		}
	}
	return nil
}

// Manifest is what the fleet knows of an extension version's manifest.
type Manifest struct {
	Runtime    string `json:"runtime"`
	Entrypoint string `json:"entrypoint"`
	Network    string `json:"network,omitempty"`
	Size       int64  `json:"size"`
}

// Check checks the manifest fields.
func (m *Manifest) Check() error {
	if m.Runtime != "go" && m.Runtime != "exec" {
		return fmt.Errorf("%w: runtime %q", ErrInvalid, m.Runtime)
	}
	e := m.Entrypoint
	if e == "" || len(e) > MaxEntryPath || strings.HasPrefix(e, "/") || path.Clean(e) != e ||
		e == ".." || strings.HasPrefix(e, "../") || strings.ContainsRune(e, 0) {
		return fmt.Errorf("%w: entrypoint %q", ErrInvalid, e)
	}
	if m.Network != "" && m.Network != "none" && m.Network != "egress" {
		return fmt.Errorf("%w: network %q", ErrInvalid, m.Network)
	}
	if m.Size < 0 {
		return fmt.Errorf("%w: size %d", ErrInvalid, m.Size)
	}
	return nil
}

// Extension is an extension's fleet-wide current version. Versions count
// from 1 and are never reused: a removed extension keeps its key as a
// tombstone (Removed, no digest) so that its next deploy goes on counting.
type Extension struct {
	Version int    `json:"version"`
	Digest  string `json:"digest,omitempty"`
	Manifest
	// Node deployed it; Created is when.
	Node    string    `json:"node"`
	Created time.Time `json:"created"`
	Removed bool      `json:"removed,omitempty"`
}

// Check checks an extension record.
func (x *Extension) Check() error {
	if x.Version < 1 {
		return fmt.Errorf("%w: extension version %d", ErrInvalid, x.Version)
	}
	if err := CheckNodeName(x.Node); err != nil {
		return err
	}
	if x.Removed {
		if x.Digest != "" {
			return fmt.Errorf("%w: a removed extension has no digest", ErrInvalid)
		}
		return nil
	}
	if err := CheckDigest(x.Digest); err != nil {
		return err
	}
	return x.Manifest.Check()
}

// CheckDigest checks a bundle digest: "sha256:" and 64 lower-case hex
// digits.
func CheckDigest(d string) error {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 || strings.ToLower(h) != h {
		return fmt.Errorf("%w: digest %q", ErrInvalid, d)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return fmt.Errorf("%w: digest %q", ErrInvalid, d)
	}
	return nil
}

// Spend is one node's usage of one tenant's meters in the current UTC day
// and month, published at every ledger flush; a spend cap is checked
// against the sum over the nodes.
type Spend struct {
	// Day and Month are the periods' starts (UTC midnight, the 1st).
	Day   time.Time `json:"day"`
	Month time.Time `json:"month"`
	// Daily and Monthly are meter → usage in the period.
	Daily   map[string]float64 `json:"daily,omitempty"`
	Monthly map[string]float64 `json:"monthly,omitempty"`
	Updated time.Time          `json:"updated"`
}

// Check checks a spend record.
func (s *Spend) Check() error {
	d, m := s.Day.UTC(), s.Month.UTC()
	if !d.Equal(time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, time.UTC)) ||
		!m.Equal(time.Date(m.Year(), m.Month(), 1, 0, 0, 0, 0, time.UTC)) {
		return fmt.Errorf("%w: spend periods %s, %s are not a UTC day and month", ErrInvalid, s.Day, s.Month)
	}
	if len(s.Daily)+len(s.Monthly) > MaxMeters {
		return fmt.Errorf("%w: spend of %d meters, at most %d", ErrInvalid, len(s.Daily)+len(s.Monthly), MaxMeters)
	}
	for _, totals := range []map[string]float64{s.Daily, s.Monthly} {
		for meter, v := range totals {
			if err := ident.CheckDotted("meter", meter); err != nil {
				return fmt.Errorf("%w: spend: %w", ErrInvalid, err)
			}
			if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("%w: spend of %s is %g", ErrInvalid, meter, v)
			}
		}
	}
	return nil
}

// checker is a record with a Check.
type checker interface{ Check() error }

// DecodeState parses and checks a record of at most MaxRecord bytes into
// v, which must be a *Tenant, an *Extension or a *Spend.
func DecodeState(b []byte, v checker) error {
	if len(b) > MaxRecord {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalid, len(b), MaxRecord)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return v.Check()
}

// ExtensionOf returns the tenant, environment and name of a key under
// Extensions.
func (k Keys) ExtensionOf(key string) (tenant, env, name string, err error) {
	rest, ok := strings.CutPrefix(key, k.Extensions())
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 3 {
		return "", "", "", fmt.Errorf("%w: key %q is not an extension's", ErrInvalid, key)
	}
	for i, kind := range []string{"tenant", "environment", "extension"} {
		if err := ident.Check(kind, parts[i]); err != nil {
			return "", "", "", fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	return parts[0], parts[1], parts[2], nil
}

// TenantOf returns the tenant of a key under Tenants.
func (k Keys) TenantOf(key string) (string, error) {
	t, ok := strings.CutPrefix(key, k.Tenants())
	if !ok {
		return "", fmt.Errorf("%w: key %q is not a tenant's", ErrInvalid, key)
	}
	if err := ident.Check("tenant", t); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return t, nil
}

// SpendRoot is the prefix of every spend record.
func (k Keys) SpendRoot() string { return k.p() + "/spend/" }

// SpendOf returns the tenant and node of a key under SpendRoot.
func (k Keys) SpendOf(key string) (tenant, node string, err error) {
	rest, ok := strings.CutPrefix(key, k.SpendRoot())
	t, n, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		return "", "", fmt.Errorf("%w: key %q is not a spend record's", ErrInvalid, key)
	}
	if err := ident.Check("tenant", t); err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := CheckNodeName(n); err != nil {
		return "", "", err
	}
	return t, n, nil
}

// BundleOf returns the digest and node of a key under Bundles.
func (k Keys) BundleOf(key string) (digest, node string, err error) {
	rest, ok := strings.CutPrefix(key, k.Bundles())
	d, n, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		return "", "", fmt.Errorf("%w: key %q is not a bundle holder's", ErrInvalid, key)
	}
	if err := CheckDigest(d); err != nil {
		return "", "", err
	}
	if err := CheckNodeName(n); err != nil {
		return "", "", err
	}
	return d, n, nil
}
