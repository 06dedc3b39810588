package netns

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Bandwidth caps are token bucket filters: the scope's egress on the
// namespace's end of the veth, its ingress on the host's end (what the host
// sends into the scope). Both ends are out of the sandbox's reach: it has no
// CAP_NET_ADMIN over a namespace the host's user namespace owns.

// setCaps sets or removes the caps of a slot.
func (m *Manager) setCaps(s *slot, c Caps) error {
	if err := setTbf(m.nl, s.hostIf, c.Ingress, m.mtu); err != nil {
		return fmt.Errorf("netns: ingress cap: %w", err)
	}
	h, err := netlink.NewHandleAt(s.ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netns: egress cap: %w", err)
	}
	defer h.Close()
	if err := setTbf(h, "eth0", c.Egress, m.mtu); err != nil {
		return fmt.Errorf("netns: egress cap: %w", err)
	}
	return nil
}

// tbfBurst is the bucket: 20 ms at the rate, and never less than the
// link's largest GSO packet plus a few frames. A smaller bucket makes the
// TBF split GSO packets, and on Linux 6.18 that lets through 6-11 % more
// than the rate (measured with tc's own TBF too); a whole GSO packet per
// bucket keeps the payload rate at 0.96 of the rate (the rest is headers).
func tbfBurst(rate uint64, mtu int, gsoMax uint32) uint32 {
	if gsoMax == 0 {
		gsoMax = 65536
	}
	b := rate / 50
	if lo := uint64(gsoMax) + uint64(4*(mtu+14)); b < lo {
		b = lo
	}
	return uint32(min(b, 1<<30))
}

// setTbf replaces the root qdisc of the link with a TBF at rate bytes/s, or
// puts the default back when rate is 0.
func setTbf(h *netlink.Handle, name string, rate uint64, mtu int) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	attrs := netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT}
	if rate == 0 {
		err := h.QdiscDel(&netlink.Tbf{QdiscAttrs: attrs})
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			return err
		}
		return nil
	}
	burst := tbfBurst(rate, mtu, l.Attrs().GSOMaxSize)
	q := &netlink.Tbf{
		QdiscAttrs: attrs,
		Rate:       rate,
		Buffer:     netlink.Xmittime(rate, burst),
		// Queue up to 50 ms at the rate beyond the bucket, then drop: TCP
		// backs off, the scope's latency stays bounded.
		Limit: burst + uint32(min(rate/20, 1<<30)),
	}
	return h.QdiscReplace(q)
}
