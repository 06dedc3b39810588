//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package netns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// errPolicyClosed is returned by a policy's methods after Close.
var errPolicyClosed = errors.New("netns: egress policy closed")

// policyLoaded is what a policy keeps of the collection. Not
// policyBPFObjects: loading its Variables would mmap .rodata, which keeps
// that map in the kernel until the garbage collector unmaps it, after Close.
type policyLoaded struct {
	policyBPFPrograms
	policyBPFMaps
}

// policy is the scopes' egress policy: the programs of bpf/policy.c, the
// global deny list and each scope's allow-list. Safe for concurrent use.
type policy struct {
	objs policyLoaded

	mu       sync.Mutex
	closed   bool
	scopes   map[uint64]map[netip.Prefix]bool // scope → its prefixes in policy_allow
	nAllow   int                              // entries of policy_allow
	deny     map[netip.Prefix]bool            // the prefixes in policy_deny
	attached map[*attachment]bool
}

// attachment is one attach call's links.
type attachment struct{ links []link.Link }

// loadPolicy loads the programs for scopes at depth scopeLevel of the
// unified cgroup hierarchy; hostCookie is the host namespace's cookie
// (hostNetnsCookie), from which scopes may not reach loopback.
func loadPolicy(scopeLevel uint32, hostCookie uint64) (*policy, error) {
	if hostCookie == 0 {
		return nil, errors.New("netns: egress policy: no host network namespace cookie")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("netns: egress policy: lifting RLIMIT_MEMLOCK: %w", err)
	}
	spec, err := loadPolicyBPF()
	if err != nil {
		return nil, fmt.Errorf("netns: egress policy programs: %w", err)
	}
	for name, v := range map[string]any{"scope_level": scopeLevel, "host_netns_cookie": hostCookie} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("netns: egress policy programs: set %s: %w", name, err)
		}
	}
	p := &policy{
		scopes:   make(map[uint64]map[netip.Prefix]bool),
		deny:     make(map[netip.Prefix]bool),
		attached: make(map[*attachment]bool),
	}
	if err := spec.LoadAndAssign(&p.objs, nil); err != nil {
		// A *ebpf.VerifierError prints the verifier's last lines.
		return nil, fmt.Errorf("netns: loading the egress policy programs: %w", err)
	}
	return p, nil
}

// hostNetnsCookie is the cookie of the calling thread's network namespace.
func hostNetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("netns: namespace cookie: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("netns: namespace cookie (SO_NETNS_COOKIE, Linux 5.14): %w", err)
	}
	return c, nil
}

// attach attaches the five programs to the cgroup v2 directory cgroupDir
// (a scope's) until detach, or Close, is called.
func (p *policy) attach(cgroupDir string) (detach func() error, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errPolicyClosed
	}
	a := &attachment{}
	for _, at := range []struct {
		typ  ebpf.AttachType
		prog *ebpf.Program
	}{
		{ebpf.AttachCGroupInet4Connect, p.objs.PolicyConnect4},
		{ebpf.AttachCGroupInet6Connect, p.objs.PolicyConnect6},
		{ebpf.AttachCGroupUDP4Sendmsg, p.objs.PolicySendmsg4},
		{ebpf.AttachCGroupUDP6Sendmsg, p.objs.PolicySendmsg6},
		{ebpf.AttachCGroupInetEgress, p.objs.PolicyEgress},
	} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupDir, Attach: at.typ, Program: at.prog})
		if err != nil {
			err = fmt.Errorf("netns: attach %s to %s: %w", at.typ, cgroupDir, err)
			return nil, errors.Join(err, a.close())
		}
		a.links = append(a.links, l)
	}
	p.attached[a] = true
	return func() error { return p.detach(a) }, nil
}

// detach closes a's links, once.
func (p *policy) detach(a *attachment) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.attached[a] {
		return nil
	}
	delete(p.attached, a)
	if err := a.close(); err != nil {
		return fmt.Errorf("netns: detach egress policy: %w", err)
	}
	return nil
}

func (a *attachment) close() error {
	var errs []error
	for _, l := range a.links {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}

// setScope makes allow the allow-list of the scope whose cgroup id (inode
// of its cgroup v2 directory) is cgroupID. New entries are written before
// stale ones are deleted, so a connection allowed before and after is never
// refused; one allowed only before or only after may pass or not during the
// change. If the kernel refuses an update, the scope is left with no entry
// (it may only use loopback) and the error returned.
func (p *policy) setScope(cgroupID uint64, allow []Rule) error {
	if cgroupID == 0 {
		return errors.New("netns: egress policy: scope cgroup id 0")
	}
	entries, err := allowEntries(allow)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errPolicyClosed
	}
	old := p.scopes[cgroupID]
	added := 0
	for pfx := range entries {
		if !old[pfx] {
			added++
		}
	}
	if limit := int(p.objs.PolicyAllow.MaxEntries()); p.nAllow+added > limit {
		return fmt.Errorf("netns: egress policy: scope %d: %d more allow-list entries would exceed the maximum of %d", cgroupID, added, limit)
	}
	if old == nil {
		old = make(map[netip.Prefix]bool)
		p.scopes[cgroupID] = old
	}
	for pfx, ranges := range entries {
		if !old[pfx] {
			old[pfx] = true // tracked before written: a failure below deletes it
			p.nAllow++
		}
		err := p.objs.PolicyAllow.Update(allowKey(cgroupID, pfx), allowValue(ranges), ebpf.UpdateAny)
		if err != nil {
			err = fmt.Errorf("netns: egress policy: scope %d: set %s: %w", cgroupID, pfx, err)
			return errors.Join(err, p.deleteAllow(cgroupID, maps.Clone(old)))
		}
	}
	stale := make(map[netip.Prefix]bool)
	for pfx := range old {
		if _, ok := entries[pfx]; !ok {
			stale[pfx] = true
		}
	}
	if err := p.deleteAllow(cgroupID, stale); err != nil {
		return fmt.Errorf("netns: egress policy: scope %d: %w", cgroupID, err)
	}
	return nil
}

// forget deletes every entry of the scope cgroupID.
func (p *policy) forget(cgroupID uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errPolicyClosed
	}
	if err := p.deleteAllow(cgroupID, maps.Clone(p.scopes[cgroupID])); err != nil {
		return fmt.Errorf("netns: egress policy: forget scope %d: %w", cgroupID, err)
	}
	return nil
}

// deleteAllow deletes the scope's entries of prefixes and stops tracking
// those deleted. With p.mu held.
func (p *policy) deleteAllow(cgroupID uint64, prefixes map[netip.Prefix]bool) error {
	var errs []error
	tracked := p.scopes[cgroupID]
	for pfx := range prefixes {
		err := p.objs.PolicyAllow.Delete(allowKey(cgroupID, pfx))
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete %s: %w", pfx, err))
			continue
		}
		if tracked[pfx] {
			delete(tracked, pfx)
			p.nAllow--
		}
	}
	if len(tracked) == 0 {
		delete(p.scopes, cgroupID)
	}
	return errors.Join(errs...)
}

// setDeny makes prefixes the global deny list, which no scope may reach
// whatever its allow-list. IPv4-mapped prefixes count as IPv4; IPv6 ones are
// ignored (scopes have no IPv6 egress at all). New entries are written
// before stale ones are deleted.
func (p *policy) setDeny(prefixes []netip.Prefix) error {
	want := make(map[netip.Prefix]bool)
	for _, pfx := range prefixes {
		switch a := pfx.Addr(); {
		case !pfx.IsValid():
			return fmt.Errorf("netns: egress policy: invalid deny prefix %v", pfx)
		case a.Is4():
			want[pfx.Masked()] = true
		case a.Is4In6() && pfx.Bits() >= 96:
			want[netip.PrefixFrom(a.Unmap(), pfx.Bits()-96).Masked()] = true
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errPolicyClosed
	}
	added := 0
	for pfx := range want {
		if !p.deny[pfx] {
			added++
		}
	}
	if limit := int(p.objs.PolicyDeny.MaxEntries()); len(p.deny)+added > limit {
		return fmt.Errorf("netns: egress policy: %d more deny entries would exceed the maximum of %d", added, limit)
	}
	var errs []error
	for pfx := range want {
		if err := p.objs.PolicyDeny.Update(denyKey(pfx), uint8(1), ebpf.UpdateAny); err != nil {
			errs = append(errs, fmt.Errorf("set %s: %w", pfx, err))
			continue
		}
		p.deny[pfx] = true
	}
	if len(errs) > 0 {
		// Keep the stale entries too: a deny list too long is safer.
		return fmt.Errorf("netns: egress policy: deny list: %w", errors.Join(errs...))
	}
	for pfx := range p.deny {
		if want[pfx] {
			continue
		}
		if err := p.objs.PolicyDeny.Delete(denyKey(pfx)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete %s: %w", pfx, err))
			continue
		}
		delete(p.deny, pfx)
	}
	if len(errs) > 0 {
		return fmt.Errorf("netns: egress policy: deny list: %w", errors.Join(errs...))
	}
	return nil
}

// Close detaches the programs from every cgroup and frees them and their
// maps.
func (p *policy) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var errs []error
	for a := range p.attached {
		errs = append(errs, a.close())
	}
	clear(p.attached)
	clear(p.scopes)
	clear(p.deny)
	p.nAllow = 0
	errs = append(errs, p.objs.policyBPFPrograms.Close(), p.objs.policyBPFMaps.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netns: close egress policy: %w", err)
	}
	return nil
}

// allowKey is the policy_allow key of the scope's prefix.
func allowKey(cgroupID uint64, pfx netip.Prefix) policyBPFAllowKey {
	k := policyBPFAllowKey{Prefixlen: 64 + uint32(pfx.Bits()), Addr: pfx.Addr().As4()}
	binary.NativeEndian.PutUint64(k.Scope[:], cgroupID)
	return k
}

// allowValue is the policy_allow value of ranges (at most maxRanges).
func allowValue(ranges []PortRange) policyBPFAllowVal {
	v := policyBPFAllowVal{Count: uint32(len(ranges))}
	for i, r := range ranges {
		v.Ranges[i].Lo, v.Ranges[i].Hi = r.Lo, r.Hi
	}
	return v
}

// denyKey is the policy_deny key of an IPv4 prefix.
func denyKey(pfx netip.Prefix) policyBPFDenyKey {
	return policyBPFDenyKey{Prefixlen: uint32(pfx.Bits()), Addr: pfx.Addr().As4()}
}
