package fleet

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/scoped-io/scoped/fleet/record"
	"github.com/scoped-io/scoped/internal/confval"
	"github.com/scoped-io/scoped/internal/ident"
)

// Config is the daemon's [fleet] table. Without endpoints the daemon is a
// single host, exactly as without the table.
type Config struct {
	// Endpoints are the etcd cluster's client URLs.
	Endpoints []string `toml:"endpoints"`
	// EtcdCA, EtcdCert and EtcdKey are PEM files for TLS to etcd (all
	// empty: plain connections, for a local test cluster only).
	EtcdCA   string `toml:"etcd_ca"`
	EtcdCert string `toml:"etcd_cert"`
	EtcdKey  string `toml:"etcd_key"`
	// Prefix is where the fleet's keys live in etcd (default "/scoped").
	Prefix string `toml:"prefix"`
	// Node is this daemon's name in the fleet (default: the host name).
	Node string `toml:"node"`
	// Listen is the TLS API's address (host:port); Advertise the address
	// clients and other nodes reach it at (default: Listen).
	Listen    string `toml:"listen"`
	Advertise string `toml:"advertise"`
	// TLSCA verifies the certificates of clients and other nodes; TLSCert
	// and TLSKey are this node's (server and client: nodes fetch bundles
	// from each other with mutual TLS).
	TLSCA   string `toml:"tls_ca"`
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// PeerServerName is the name another node's certificate must carry
	// when this node fetches a bundle from it (default: the host of that
	// node's advertised address): one name for nodes sharing a
	// certificate, as a DaemonSet's Secret does.
	PeerServerName string `toml:"peer_server_name"`
	// LeaseTTL is how long a dead node stays listed (default 10s).
	LeaseTTL confval.Duration `toml:"lease_ttl"`
	// Labels are this node's placement labels (tiers' placement names
	// them).
	Labels []string `toml:"labels"`
}

// DefaultLeaseTTL is [fleet] lease_ttl's default.
const DefaultLeaseTTL = 10 * time.Second

// Enabled reports whether the daemon is a fleet node.
func (c *Config) Enabled() bool { return len(c.Endpoints) > 0 }

// Keys is the fleet's key layout under the configured prefix.
func (c *Config) Keys() record.Keys { return record.Keys{Prefix: c.Prefix} }

// Validate checks the table and fills its defaults (node name, advertised
// address, lease TTL, prefix).
func (c *Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	for _, e := range c.Endpoints {
		if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
			return fmt.Errorf("fleet.endpoints: %q is not an http:// or https:// URL", e)
		}
	}
	if (c.EtcdCert == "") != (c.EtcdKey == "") {
		return errors.New("fleet.etcd_cert and fleet.etcd_key go together")
	}
	if c.Prefix == "" {
		c.Prefix = record.DefaultPrefix
	}
	if !strings.HasPrefix(c.Prefix, "/") || strings.Contains(c.Prefix, "..") {
		return fmt.Errorf("fleet.prefix %q must be an absolute key prefix without ..", c.Prefix)
	}
	if c.Node == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("fleet.node: unset and no host name: %w", err)
		}
		c.Node = strings.ToLower(strings.SplitN(h, ".", 2)[0])
	}
	if err := record.CheckNodeName(c.Node); err != nil {
		return fmt.Errorf("fleet.node: %w", err)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("fleet.listen %q: %w", c.Listen, err)
	}
	if c.Advertise == "" {
		c.Advertise = c.Listen
	}
	if host, _, err := net.SplitHostPort(c.Advertise); err != nil || host == "" || net.ParseIP(host).IsUnspecified() {
		return fmt.Errorf("fleet.advertise %q must be a reachable host:port (set it when listen is a wildcard)", c.Advertise)
	}
	if c.TLSCA == "" || c.TLSCert == "" || c.TLSKey == "" {
		return errors.New("fleet.tls_ca, fleet.tls_cert and fleet.tls_key are needed: the fleet API is TLS only")
	}
	if c.PeerServerName != "" && (strings.ContainsAny(c.PeerServerName, " /:") || len(c.PeerServerName) > 253) {
		return fmt.Errorf("fleet.peer_server_name %q is not a host name", c.PeerServerName)
	}
	if c.LeaseTTL.Duration == 0 {
		c.LeaseTTL.Duration = DefaultLeaseTTL
	}
	if c.LeaseTTL.Duration < 2*time.Second || c.LeaseTTL.Duration%time.Second != 0 {
		return errors.New("fleet.lease_ttl must be whole seconds, at least 2s")
	}
	for _, l := range c.Labels {
		if err := ident.Check("fleet label", l); err != nil {
			return fmt.Errorf("fleet.labels: %w", err)
		}
	}
	return nil
}
