package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/netns"
)

// networks is the daemon's egress networking: the netns manager (the
// bridge, rules and programs), made when a tier wants egress, and the
// scopes' egress namespaces. It runs from Start to Stop as a component
// (see loops); a worker of an egress tier added by Reload starts it.
type networks struct {
	conf    func() *Config
	log     *slog.Logger
	tenants *tenantRegistry // the tenants' own allow-lists
	tree    *cgroups.Tree   // the scopes' cgroups (their depth, see scopeLevel)

	mu sync.Mutex
	m  *netns.Manager // nil: no tier has egress (yet)
}

func newNetworks(conf func() *Config, log *slog.Logger, tenants *tenantRegistry, tree *cgroups.Tree) *networks {
	return &networks{conf: conf, log: log, tenants: tenants, tree: tree}
}

// scopeLevel is the depth of scope cgroups in the unified hierarchy:
// <root>/<tier>/<tenant>/<scope>.
func scopeLevel(cgroupRoot string) uint32 {
	root := strings.Trim(cgroupRoot, "/")
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

// Start starts the egress networking when a tier wants it, and otherwise
// only removes what a crashed run left.
func (n *networks) Start(context.Context) error { return n.open() }

func (n *networks) open() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m != nil {
		return nil
	}
	c := n.conf()
	cfg := c.Network.Config(scopeLevel(n.tree.Root()), filepath.Join(c.RuntimeDir, "network"))
	if !c.wantsEgress() {
		if err := netns.Cleanup(cfg, n.log); err != nil {
			n.log.Warn("network: removing what an earlier run left", "err", err)
		}
		return nil
	}
	m, err := netns.Open(cfg, n.log)
	if err != nil {
		return fmt.Errorf("egress networking: %w", err)
	}
	n.m = m
	return nil
}

// Stop removes the bridge, rules and programs (after the scopes).
func (n *networks) Stop() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		return nil
	}
	err := n.m.Close()
	n.m = nil
	return err
}

// running reports whether the egress networking runs.
func (n *networks) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m != nil
}

// policy is a tenant's egress policy in tier t: the tier's allow-list,
// the tenant's own (both parsed when configured) and the tier's caps.
func (n *networks) policy(tenant string, t Tier) (netns.Policy, error) {
	own, err := n.tenants.egressRules(tenant)
	if err != nil {
		return netns.Policy{}, fmt.Errorf("%w: egress allow-list of %s: %w", ErrInvalid, tenant, err)
	}
	allow := make([]netns.Rule, 0, len(t.egressRules)+len(own))
	allow = append(append(allow, t.egressRules...), own...)
	return netns.Policy{Allow: allow, Caps: netns.Caps{Egress: uint64(t.EgressRate), Ingress: uint64(t.IngressRate)}}, nil
}

// worker is the namespace a worker of ext joins in sc: "" for its own
// loopback-only one, or the scope's egress namespace (made on first use).
func (n *networks) worker(sc *scope, ext ExtensionInfo) (string, error) {
	t := n.conf().Tiers[sc.tier]
	mode, err := networkOf(t, ext)
	if err != nil || mode != NetworkEgress {
		return "", err
	}
	sc.netMu.Lock()
	defer sc.netMu.Unlock()
	if sc.net != nil {
		return sc.net.Path(), nil
	}
	if err := n.open(); err != nil {
		return "", err
	}
	n.mu.Lock()
	m := n.m
	n.mu.Unlock()
	if m == nil {
		return "", fmt.Errorf("%w: egress networking is not running", ErrNetworkDenied)
	}
	pol, err := n.policy(sc.id.Tenant, t)
	if err != nil {
		return "", err
	}
	net, err := m.Egress(sc.node.UnifiedDir(), pol)
	if err != nil {
		return "", fmt.Errorf("network of scope %s: %w", sc.id.Key(), err)
	}
	sc.net = net
	n.log.Info("scope network", "tenant", sc.id.Tenant, "scope", sc.id.Key(), "addr", net.Addr(),
		"allow", len(pol.Allow), "egress_rate", pol.Caps.Egress, "ingress_rate", pol.Caps.Ingress)
	return net.Path(), nil
}

// update applies the tiers' and tenants' current policies to the networks
// of scopes.
func (n *networks) update(scopes []*scope) error {
	var errs []error
	for _, sc := range scopes {
		sc.netMu.Lock()
		if sc.net != nil {
			pol, err := n.policy(sc.id.Tenant, n.conf().Tiers[sc.tier])
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

// closeScope releases the scope's network once its workers are gone.
func (n *networks) closeScope(sc *scope) error {
	sc.netMu.Lock()
	defer sc.netMu.Unlock()
	if sc.net == nil {
		return nil
	}
	err := sc.net.Close()
	sc.net = nil
	return err
}
