package netns

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The nftables side: one inet table named after the bridge, with
//
//	forward:     iif bridge oif bridge drop (scope to scope);
//	             iif bridge oif uplink accept; iif bridge drop;
//	             oif bridge ct established,related accept; oif bridge drop
//	input:       iif bridge ct established,related accept; iif bridge drop
//	             (no scope reaches the host's own addresses)
//	postrouting: iif bridge oif uplink masquerade
//
// Base chains accept by default, so the host's other traffic is untouched.
// A host whose own forward chain drops by default (Docker's, say) must let
// the bridge's traffic pass there too.

func (m *Manager) nft() (*nftables.Conn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(m.host)))
	if err != nil {
		return nil, fmt.Errorf("netns: nftables: %w", err)
	}
	return c, nil
}

func (m *Manager) table() *nftables.Table {
	return &nftables.Table{Name: m.cfg.Bridge, Family: nftables.TableFamilyINet}
}

// ifname is an interface name as nftables compares it.
func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

func iif(n string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(n)},
	}
}

func oif(n string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(n)},
	}
}

func established() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

func rule(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch v := p.(type) {
		case []expr.Any:
			out = append(out, v...)
		case expr.Any:
			out = append(out, v)
		}
	}
	return out
}

// addRules installs the table.
func (m *Manager) addRules() error {
	c, err := m.nft()
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	br, up := m.cfg.Bridge, m.uplink
	t := c.AddTable(m.table())
	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	in := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	nat := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
	for _, r := range [][]expr.Any{
		rule(iif(br), oif(br), verdict(expr.VerdictDrop)),
		rule(iif(br), oif(up), verdict(expr.VerdictAccept)),
		rule(iif(br), verdict(expr.VerdictDrop)),
		rule(oif(br), established(), verdict(expr.VerdictAccept)),
		rule(oif(br), verdict(expr.VerdictDrop)),
	} {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: r})
	}
	for _, r := range [][]expr.Any{
		rule(iif(br), established(), verdict(expr.VerdictAccept)),
		rule(iif(br), verdict(expr.VerdictDrop)),
	} {
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: r})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: rule(iif(br), oif(up), &expr.Masq{})})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netns: nftables rules: %w", err)
	}
	return nil
}

// delRules deletes the table if it exists.
func (m *Manager) delRules(stopping bool) error {
	c, err := m.nft()
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("netns: nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == m.cfg.Bridge {
			c.DelTable(t)
			if err := c.Flush(); err != nil && !isNotExist(err) {
				return fmt.Errorf("netns: delete nftables table %s: %w", t.Name, err)
			}
			if !stopping {
				m.log.Info("removed the nftables table left by an earlier run", "table", t.Name)
			}
		}
	}
	return nil
}

func isNotExist(err error) bool {
	return err != nil && (err == unix.ENOENT || fmt.Sprint(err) == unix.ENOENT.Error())
}
