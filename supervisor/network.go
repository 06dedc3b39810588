package supervisor

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/scoped-io/scoped/netns"
)

// scopeLevel is the depth of scope cgroups in the unified hierarchy:
// <root>/<tier>/<tenant>/<scope>.
func (s *Supervisor) scopeLevel() uint32 {
	root := strings.Trim(s.tree.Root(), "/")
	n := uint32(3)
	if root != "" {
		n += uint32(strings.Count(root, "/") + 1)
	}
	return n
}

func (c *Config) wantsEgress() bool {
	for _, t := range c.Tiers {
		if t.Network == NetworkEgress {
			return true
		}
	}
	return false
}

// openNetwork starts the egress networking when a tier wants it, and
// otherwise only removes what a crashed run left.
func (s *Supervisor) openNetwork() error {
	s.netMu.Lock()
	defer s.netMu.Unlock()
	if s.net != nil {
		return nil
	}
	cfg := s.conf().Network.Config(s.scopeLevel(), filepath.Join(s.conf().RuntimeDir, "network"))
	if !s.conf().wantsEgress() {
		if err := netns.Cleanup(cfg, s.log); err != nil {
			s.log.Warn("network: removing what an earlier run left", "err", err)
		}
		return nil
	}
	m, err := netns.Open(cfg, s.log)
	if err != nil {
		return fmt.Errorf("egress networking: %w", err)
	}
	s.net = m
	return nil
}

// closeNetwork removes the bridge, rules and programs (after the scopes).
func (s *Supervisor) closeNetwork() error {
	s.netMu.Lock()
	defer s.netMu.Unlock()
	if s.net == nil {
		return nil
	}
	err := s.net.Close()
	s.net = nil
	return err
}

// netPolicy is a tenant's egress policy in tier t: the tier's allow-list,
// the tenant's own (both parsed when configured) and the tier's caps.
func (s *Supervisor) netPolicy(tenant string, t Tier) (netns.Policy, error) {
	own, err := s.tenants.egressRules(tenant)
	if err != nil {
		return netns.Policy{}, fmt.Errorf("%w: egress allow-list of %s: %w", ErrInvalid, tenant, err)
	}
	allow := make([]netns.Rule, 0, len(t.egressRules)+len(own))
	allow = append(append(allow, t.egressRules...), own...)
	return netns.Policy{Allow: allow, Caps: netns.Caps{Egress: uint64(t.EgressRate), Ingress: uint64(t.IngressRate)}}, nil
}

// workerNetwork is the namespace a worker of ext joins in sc: "" for its own
// loopback-only one, or the scope's egress namespace (made on first use).
func (s *Supervisor) workerNetwork(sc *scope, ext ExtensionInfo) (string, error) {
	t := s.conf().Tiers[sc.tier]
	mode, err := networkOf(t, ext)
	if err != nil || mode != NetworkEgress {
		return "", err
	}
	sc.netMu.Lock()
	defer sc.netMu.Unlock()
	if sc.net != nil {
		return sc.net.Path(), nil
	}
	if err := s.openNetwork(); err != nil {
		return "", err
	}
	s.netMu.Lock()
	m := s.net
	s.netMu.Unlock()
	if m == nil {
		return "", fmt.Errorf("%w: egress networking is not running", ErrNetworkDenied)
	}
	pol, err := s.netPolicy(sc.id.Tenant, t)
	if err != nil {
		return "", err
	}
	n, err := m.Egress(sc.node.UnifiedDir(), pol)
	if err != nil {
		return "", fmt.Errorf("network of scope %s: %w", sc.id.Key(), err)
	}
	sc.net = n
	s.log.Info("scope network", "tenant", sc.id.Tenant, "scope", sc.id.Key(), "addr", n.Addr(),
		"allow", len(pol.Allow), "egress_rate", pol.Caps.Egress, "ingress_rate", pol.Caps.Ingress)
	return n.Path(), nil
}

// updateNetworks applies the tiers' and tenants' current policies to the
// live scopes' networks.
func (s *Supervisor) updateNetworks() error {
	var errs []error
	for _, sc := range s.scopes.snapshot(nil) {
		sc.netMu.Lock()
		if sc.net != nil {
			pol, err := s.netPolicy(sc.id.Tenant, s.conf().Tiers[sc.tier])
			if err == nil {
				err = sc.net.Update(pol)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("network of scope %s: %w", sc.id.Key(), err))
			}
		}
		sc.netMu.Unlock()
	}
	return errors.Join(errs...)
}

// closeScopeNetwork releases the scope's network once its workers are gone.
func (s *Supervisor) closeScopeNetwork(sc *scope) error {
	sc.netMu.Lock()
	defer sc.netMu.Unlock()
	if sc.net == nil {
		return nil
	}
	err := sc.net.Close()
	sc.net = nil
	return err
}
