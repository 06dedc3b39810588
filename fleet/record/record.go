// Package record is the fleet's shared vocabulary in etcd: the key layout
// under the fleet's prefix and the JSON records the daemons write and the
// daemons and fleet clients read. Records come from other hosts: every
// parser bounds and checks what it reads.
package record

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path"
	"slices"
	"strings"

	"github.com/scoped-io/scoped/internal/ident"
)

// ErrInvalid is a record or key that does not parse or check.
var ErrInvalid = errors.New("invalid fleet record")

// DefaultPrefix is the fleet's key prefix when [fleet] prefix is unset.
const DefaultPrefix = "/scoped"

// MaxRecord bounds a record's size in bytes.
const MaxRecord = 64 << 10

// Keys builds the fleet's keys under one prefix:
//
//	<prefix>/nodes/<node>                      Node, under the node's lease
//	<prefix>/policy                            Policy, the fleet-wide isolation and placement
//	<prefix>/tenants/<tenant>                  the tenant's tier and allow-list
//	<prefix>/extensions/<tenant>/<env>/<name>  the extension's current version
//	<prefix>/bundles/<digest>/<node>           a node holding a bundle, under its lease
//	<prefix>/spend/<tenant>/<node>             a node's spend totals of a tenant, under its lease
type Keys struct{ Prefix string }

func (k Keys) p() string {
	if k.Prefix == "" {
		return DefaultPrefix
	}
	return strings.TrimSuffix(k.Prefix, "/")
}

// Nodes is the prefix of the node records (ending in "/").
func (k Keys) Nodes() string              { return k.p() + "/nodes/" }
func (k Keys) Node(name string) string    { return k.Nodes() + name }
func (k Keys) Policy() string             { return k.p() + "/policy" }
func (k Keys) Tenants() string            { return k.p() + "/tenants/" }
func (k Keys) Tenant(t string) string     { return k.Tenants() + t }
func (k Keys) Extensions() string         { return k.p() + "/extensions/" }
func (k Keys) Bundles() string            { return k.p() + "/bundles/" }
func (k Keys) Spend(tenant string) string { return k.p() + "/spend/" + tenant + "/" }

// Extension is the key of tenant's extension name in env.
func (k Keys) Extension(tenant, env, name string) string {
	return k.Extensions() + path.Join(tenant, env, name)
}

// Bundle is the key saying node holds the bundle of digest.
func (k Keys) Bundle(digest, node string) string { return k.Bundles() + digest + "/" + node }

// NodeOf returns the node name of a key under Nodes.
func (k Keys) NodeOf(key string) (string, error) {
	name, ok := strings.CutPrefix(key, k.Nodes())
	if !ok {
		return "", fmt.Errorf("%w: key %q is not a node's", ErrInvalid, key)
	}
	if err := CheckNodeName(name); err != nil {
		return "", err
	}
	return name, nil
}

// CheckNodeName checks a node name: an identifier, as ids are (no "/",
// no "..").
func CheckNodeName(name string) error {
	if err := ident.Check("node", name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Node is a daemon's membership record, kept under its lease and
// refreshed every few seconds.
type Node struct {
	Name string `json:"name"`
	// Addr is the node's TLS API address (host:port) for clients and
	// other nodes.
	Addr   string   `json:"addr"`
	Labels []string `json:"labels,omitempty"`
	// Capacity: scope slots ([scope] id_slots) and CPUs.
	Slots int `json:"slots"`
	CPUs  int `json:"cpus"`
	// Load: live scopes and CPUs busy (0..CPUs) at the last refresh.
	Scopes int     `json:"scopes"`
	Busy   float64 `json:"busy"`
	// Version is the daemon's build version, for operators.
	Version string `json:"version,omitempty"`
}

// Check checks a node record.
func (n *Node) Check() error {
	if err := CheckNodeName(n.Name); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(n.Addr)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("%w: node %s: address %q is not host:port", ErrInvalid, n.Name, n.Addr)
	}
	for _, l := range n.Labels {
		if err := ident.Check("label", l); err != nil {
			return fmt.Errorf("%w: node %s: %w", ErrInvalid, n.Name, err)
		}
	}
	if n.Slots < 0 || n.CPUs < 0 || n.Scopes < 0 || n.Busy < 0 || n.Busy > float64(max(n.CPUs, 1))*4 {
		return fmt.Errorf("%w: node %s: negative or impossible capacity or load", ErrInvalid, n.Name)
	}
	return nil
}

// HasLabels reports whether the node carries every label of want.
func (n *Node) HasLabels(want []string) bool {
	for _, l := range want {
		if !slices.Contains(n.Labels, l) {
			return false
		}
	}
	return true
}

// Policy is what every node of a fleet must agree on and what fleet
// clients need to route: how scopes are made from a request, and which
// labels each tier's scopes must run on.
type Policy struct {
	// Isolation is [isolation] by: the request fields a scope is made of,
	// beside the tenant.
	Isolation []string `json:"isolation"`
	// Placement names, per tier, the labels its scopes' nodes must carry
	// (a tier absent: any node).
	Placement map[string][]string `json:"placement,omitempty"`
}

// Decode parses and checks a record of at most MaxRecord bytes into v,
// which must be a *Node or a *Policy.
func Decode(b []byte, v any) error {
	if len(b) > MaxRecord {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalid, len(b), MaxRecord)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	switch r := v.(type) {
	case *Node:
		return r.Check()
	case *Policy:
		for _, f := range r.Isolation {
			if f != "environment" && f != "user" && f != "extension" {
				return fmt.Errorf("%w: isolation field %q", ErrInvalid, f)
			}
		}
		for tier, labels := range r.Placement {
			if err := ident.Check("tier", tier); err != nil {
				return fmt.Errorf("%w: %w", ErrInvalid, err)
			}
			for _, l := range labels {
				if err := ident.Check("label", l); err != nil {
					return fmt.Errorf("%w: %w", ErrInvalid, err)
				}
			}
		}
	}
	return nil
}
