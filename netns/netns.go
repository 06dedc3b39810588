package netns

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Defaults of Config.
const (
	DefaultBridge   = "scoped0"
	DefaultPoolSize = 4
	// hostPrefix names the host ends of the scopes' veth pairs; Open
	// deletes every veth with this prefix that an earlier run left.
	hostPrefix = "scv"
)

// DefaultSubnet is the scopes' private IPv4 subnet unless configured.
var DefaultSubnet = netip.MustParsePrefix("10.213.0.0/16")

// Config says where the scopes' networks live.
type Config struct {
	// Bridge is the name of the bridge scoped owns (made at Open, deleted
	// at Close and by the next Open after a crash).
	Bridge string
	// Subnet is the scopes' private IPv4 subnet; the bridge takes its first
	// address, scopes the others. It must not overlap a route of the host.
	Subnet netip.Prefix
	// Uplink is the interface scopes' traffic leaves by (NAT to its
	// address); empty: the interface of the host's IPv4 default route.
	Uplink string
	// PoolSize is how many namespaces are kept ready; negative: none.
	PoolSize int
	// ScopeLevel is the depth of scope cgroups in the unified hierarchy
	// (the allow-list is kept per scope cgroup).
	ScopeLevel uint32
	// StateDir keeps the one fact a crash must not lose: the host's
	// ip_forward setting before Open changed it.
	StateDir string
	// Host is the namespace treated as the host's; zero: the caller's.
	// Tests pass a namespace of their own.
	Host vnetns.NsHandle
}

// Caps are a scope's bandwidth caps in bytes per second (0: none).
type Caps struct {
	Egress  uint64 // from the scope out
	Ingress uint64 // to the scope
}

// Policy is what a scope may reach and how fast.
type Policy struct {
	Allow []Rule
	Caps  Caps
}

// Manager makes and removes the scopes' egress namespaces.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	host   vnetns.NsHandle // owned
	nl     *netlink.Handle // in host
	bridge netlink.Link
	gw     netip.Addr
	uplink string
	mtu    int
	pol    *policy

	mu     sync.Mutex
	busy   sync.WaitGroup // Egress and Update calls in progress; Close waits
	used   map[int]bool   // address indexes in use (slots made, not yet deleted)
	live   map[*Net]bool
	closed bool

	ready chan *slot
	kick  chan struct{}
	stop  chan struct{}
	wg    sync.WaitGroup
}

// slot is a made namespace: a veth into the bridge, an address, lo up.
type slot struct {
	idx    int
	ns     vnetns.NsHandle
	hostIf string
	addr   netip.Addr
}

// Net is a scope's egress network, from Manager.Egress until Close.
type Net struct {
	m      *Manager
	s      *slot
	cg     uint64
	detach func() error
	once   sync.Once
}

func (c *Config) setDefaults() error {
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if !c.Subnet.IsValid() {
		c.Subnet = DefaultSubnet
	}
	if c.PoolSize == 0 {
		c.PoolSize = DefaultPoolSize
	}
	if err := validIfName(c.Bridge); err != nil {
		return fmt.Errorf("%w: bridge: %w", ErrInvalidConfig, err)
	}
	if strings.HasPrefix(c.Bridge, hostPrefix) {
		return fmt.Errorf("%w: bridge %q must not start with %q", ErrInvalidConfig, c.Bridge, hostPrefix)
	}
	if c.Uplink != "" {
		if err := validIfName(c.Uplink); err != nil {
			return fmt.Errorf("%w: uplink: %w", ErrInvalidConfig, err)
		}
	}
	if !c.Subnet.Addr().Is4() || c.Subnet.Bits() < 8 || c.Subnet.Bits() > 28 {
		return fmt.Errorf("%w: subnet %s: want an IPv4 prefix between /8 and /28", ErrInvalidConfig, c.Subnet)
	}
	c.Subnet = c.Subnet.Masked()
	if c.ScopeLevel == 0 {
		return fmt.Errorf("%w: scope cgroup level not set", ErrInvalidConfig)
	}
	if c.StateDir == "" {
		return fmt.Errorf("%w: state directory not set", ErrInvalidConfig)
	}
	return nil
}

// hostNS opens the host's namespace: Host's (a duplicate), else the calling
// thread's.
func (c *Config) hostNS() (vnetns.NsHandle, error) {
	if c.Host == 0 {
		h, err := vnetns.Get()
		if err != nil {
			return -1, fmt.Errorf("netns: host namespace: %w", err)
		}
		return h, nil
	}
	fd, err := unix.FcntlInt(uintptr(c.Host), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("netns: host namespace: %w", err)
	}
	return vnetns.NsHandle(fd), nil
}

// validIfName accepts what the kernel accepts as an interface name.
func validIfName(s string) error {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return fmt.Errorf("interface name %q: 1 to 15 bytes, not . or ..", s)
	}
	for _, r := range s {
		if r <= ' ' || r > '~' || r == '/' || r == ':' {
			return fmt.Errorf("interface name %q: character %q not allowed", s, r)
		}
	}
	return nil
}

// Open removes what an earlier run left, then makes the bridge, the NAT and
// filter rules and the eBPF allow-list, and starts filling the pool.
func Open(cfg Config, log *slog.Logger) (*Manager, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, log: log.With("component", "netns"), used: map[int]bool{}, live: map[*Net]bool{},
		kick: make(chan struct{}, 1), stop: make(chan struct{})}
	var err error
	if m.host, err = cfg.hostNS(); err != nil {
		return nil, err
	}
	if m.nl, err = netlink.NewHandleAt(m.host, unix.NETLINK_ROUTE); err != nil {
		m.host.Close()
		return nil, fmt.Errorf("netns: netlink: %w", err)
	}
	if err := m.open(); err != nil {
		m.teardown()
		return nil, err
	}
	if cfg.PoolSize > 0 {
		m.ready = make(chan *slot, cfg.PoolSize)
		m.wg.Add(1)
		go m.fill()
	}
	m.wg.Add(1)
	go m.watchAddrs()
	m.log.Info("scope networks ready", "bridge", cfg.Bridge, "subnet", cfg.Subnet, "uplink", m.uplink, "pool", cfg.PoolSize)
	return m, nil
}

func (m *Manager) open() error {
	if err := m.cleanup(false, true); err != nil {
		return err
	}
	if err := m.findUplink(); err != nil {
		return err
	}
	if err := m.checkSubnet(); err != nil {
		return err
	}
	m.gw = m.cfg.Subnet.Addr().Next()
	// A bridge without a MAC of its own takes its lowest port's, and so
	// changes it as scopes come and go: the scopes' ARP entries for the
	// gateway would go stale. A set address stays.
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return fmt.Errorf("netns: bridge address: %w", err)
	}
	mac[0] = mac[0]&0xfe | 0x02 // unicast, locally administered
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: m.cfg.Bridge, MTU: m.mtu, HardwareAddr: mac}}
	if err := m.nl.LinkAdd(br); err != nil {
		return fmt.Errorf("netns: bridge %s: %w", m.cfg.Bridge, err)
	}
	link, err := m.nl.LinkByName(m.cfg.Bridge)
	if err != nil {
		return fmt.Errorf("netns: bridge %s: %w", m.cfg.Bridge, err)
	}
	m.bridge = link
	if err := m.nl.AddrAdd(link, addr(m.gw, m.cfg.Subnet.Bits())); err != nil {
		return fmt.Errorf("netns: bridge address: %w", err)
	}
	if err := m.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("netns: bridge up: %w", err)
	}
	if err := m.addRules(); err != nil {
		return err
	}
	if err := m.enableForwarding(); err != nil {
		return err
	}
	var cookie uint64
	if err := inNS(m.host, func() (err error) { cookie, err = hostNetnsCookie(); return err }); err != nil {
		return fmt.Errorf("netns: host namespace cookie: %w", err)
	}
	if m.pol, err = loadPolicy(m.cfg.ScopeLevel, cookie); err != nil {
		return err
	}
	return m.refreshDeny()
}

// cleanup removes what an earlier run with this configuration left: veths
// with scoped's prefix, the bridge, the nftables table and a changed
// ip_forward.
//
// stopping: the manager's own Close (nothing to report). always: look for
// the table even when no link or saved ip_forward shows an earlier run —
// otherwise a daemon without egress would load nf_tables just to look.
func (m *Manager) cleanup(stopping, always bool) error {
	links, err := m.nl.LinkList()
	// A dump that overlaps a change of the link table (another daemon's or
	// the kernel's) is flagged interrupted, its result maybe incomplete:
	// ask again, a few times.
	for i := 0; i < 5 && errors.Is(err, netlink.ErrDumpInterrupted); i++ {
		links, err = m.nl.LinkList()
	}
	if err != nil {
		return fmt.Errorf("netns: list links: %w", err)
	}
	var errs []error
	found := false
	for _, l := range links {
		a := l.Attrs()
		if (strings.HasPrefix(a.Name, hostPrefix) && l.Type() == "veth") || (a.Name == m.cfg.Bridge && l.Type() == "bridge") {
			found = true
			if err := m.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete %s: %w", a.Name, err))
			} else if !stopping {
				m.log.Info("removed a link left by an earlier run", "link", a.Name)
			}
		}
	}
	if _, err := os.Stat(m.forwardState()); err == nil {
		found = true
	}
	if found || always {
		if err := m.delRules(stopping); err != nil {
			errs = append(errs, err)
		}
	}
	if err := m.restoreForwarding(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netns: cleanup: %w", err)
	}
	return nil
}

// findUplink resolves the uplink and the MTU the scopes get.
func (m *Manager) findUplink() error {
	name := m.cfg.Uplink
	if name == "" {
		routes, err := m.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("netns: routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst == nil || r.Dst.IP.Equal(net.IPv4zero) && isZeroMask(r.Dst.Mask) {
				l, err := m.nl.LinkByIndex(r.LinkIndex)
				if err != nil {
					return fmt.Errorf("netns: default route's link: %w", err)
				}
				name = l.Attrs().Name
				break
			}
		}
		if name == "" {
			return fmt.Errorf("%w: the host has no IPv4 default route; set [network] uplink", ErrNoUplink)
		}
	}
	l, err := m.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrNoUplink, name, err)
	}
	m.uplink = name
	m.mtu = l.Attrs().MTU
	if m.mtu <= 0 || m.mtu > 1500 {
		m.mtu = 1500
	}
	return nil
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}

// checkSubnet refuses a subnet that overlaps a route of the host: scopes'
// addresses would shadow or be shadowed by a real network.
func (m *Manager) checkSubnet() error {
	routes, err := m.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("netns: routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		p, ok := prefixOf(r.Dst)
		if !ok || p.Bits() == 0 || p.Addr().IsLoopback() || r.Type == unix.RTN_BROADCAST {
			continue
		}
		if p.Overlaps(m.cfg.Subnet) {
			return fmt.Errorf("%w: subnet %s overlaps the host's route to %s; set [network] subnet", ErrInvalidConfig, m.cfg.Subnet, p)
		}
	}
	return nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

func addr(a netip.Addr, bits int) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}}
}

// fixedDeny are never reachable from a scope, whatever its allow-list.
var fixedDeny = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"), // link-local, cloud metadata
	netip.MustParsePrefix("224.0.0.0/4"),    // multicast
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, broadcast
}

// refreshDeny sets the hard deny list: the fixed ranges, the scopes' subnet
// and every address of the host.
func (m *Manager) refreshDeny() error {
	deny := append([]netip.Prefix{m.cfg.Subnet}, fixedDeny...)
	addrs, err := m.nl.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("netns: host addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			deny = append(deny, netip.PrefixFrom(ip.Unmap(), 32))
		}
	}
	return m.pol.setDeny(deny)
}

// watchAddrs keeps the deny list in step with the host's addresses.
func (m *Manager) watchAddrs() {
	defer m.wg.Done()
	for {
		ch := make(chan netlink.AddrUpdate, 16)
		done := make(chan struct{})
		host := m.host
		err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{Namespace: &host})
		if err != nil {
			m.log.Warn("cannot watch the host's addresses; the deny list is refreshed every minute", "err", err)
		}
		tick := time.NewTicker(time.Minute)
	loop:
		for {
			select {
			case <-m.stop:
				close(done)
				tick.Stop()
				return
			case _, ok := <-ch:
				if !ok {
					break loop
				}
			case <-tick.C:
			}
			if err := m.refreshDeny(); err != nil {
				m.log.Warn("refreshing the deny list", "err", err)
			}
		}
		close(done)
		tick.Stop()
	}
}

// inNS runs f on a thread in ns.
func inNS(ns vnetns.NsHandle, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	// Even if the thread is in ns already: f may move it (makeSlot does).
	if err := vnetns.Set(ns); err != nil {
		return err
	}
	ferr := f()
	if err := vnetns.Set(orig); err != nil {
		// The thread stays locked and so dies with the goroutine: never
		// reused in the wrong namespace.
		runtime.LockOSThread()
		return errors.Join(ferr, err)
	}
	return ferr
}

// Egress gives the scope whose unified cgroup is cgroupDir a namespace
// with an address, its allow-list and caps.
func (m *Manager) Egress(cgroupDir string, p Policy) (*Net, error) {
	if !m.enter() {
		return nil, ErrClosed
	}
	defer m.busy.Done()
	var st unix.Stat_t
	if err := unix.Stat(cgroupDir, &st); err != nil {
		return nil, fmt.Errorf("netns: scope cgroup: %w", err)
	}
	s, err := m.take()
	if err != nil {
		return nil, err
	}
	n := &Net{m: m, s: s, cg: st.Ino}
	if err := m.pol.setScope(n.cg, p.Allow); err != nil {
		m.drop(s)
		return nil, err
	}
	if n.detach, err = m.pol.attach(cgroupDir); err != nil {
		m.pol.forget(n.cg)
		m.drop(s)
		return nil, err
	}
	if err := m.setCaps(s, p.Caps); err != nil {
		n.release()
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		n.release()
		return nil, ErrClosed
	}
	m.live[n] = true
	m.mu.Unlock()
	return n, nil
}

// Path is the namespace's path for a sandbox to join (the manager keeps it
// open until Close).
func (n *Net) Path() string { return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(n.s.ns)) }

// Addr is the scope's address.
func (n *Net) Addr() netip.Addr { return n.s.addr }

// Update replaces the scope's allow-list and caps.
func (n *Net) Update(p Policy) error {
	n.m.mu.Lock()
	live := n.m.live[n]
	n.m.mu.Unlock()
	if !live || !n.m.enter() {
		return ErrClosed
	}
	defer n.m.busy.Done()
	if err := n.m.pol.setScope(n.cg, p.Allow); err != nil {
		return err
	}
	return n.m.setCaps(n.s, p.Caps)
}

// Close detaches the scope's programs and deletes its namespace's links.
// Call it once the scope's processes are gone.
func (n *Net) Close() error {
	var err error
	n.once.Do(func() {
		n.m.mu.Lock()
		delete(n.m.live, n)
		n.m.mu.Unlock()
		err = n.release()
	})
	return err
}

func (n *Net) release() error {
	var errs []error
	if n.detach != nil {
		errs = append(errs, n.detach())
	}
	errs = append(errs, n.m.pol.forget(n.cg))
	errs = append(errs, n.m.drop(n.s))
	return errors.Join(errs...)
}

// enter counts an Egress or Update in unless the manager is closed.
func (m *Manager) enter() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.busy.Add(1)
	return true
}

// take returns a ready slot, or makes one.
func (m *Manager) take() (*slot, error) {
	select {
	case s := <-m.ready:
		select {
		case m.kick <- struct{}{}:
		default:
		}
		return s, nil
	default:
	}
	return m.newSlot()
}

// fill keeps the pool full.
func (m *Manager) fill() {
	defer m.wg.Done()
	backoff := time.Second
	for {
		for len(m.ready) < cap(m.ready) {
			s, err := m.newSlot()
			if err != nil {
				m.log.Warn("cannot fill the namespace pool", "err", err)
				select {
				case <-m.stop:
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, time.Minute)
				continue
			}
			backoff = time.Second
			select {
			case m.ready <- s:
			case <-m.stop:
				m.drop(s)
				return
			}
		}
		select {
		case <-m.stop:
			return
		case <-m.kick:
		}
	}
}

// alloc reserves an address index.
func (m *Manager) alloc() (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, ErrClosed
	}
	max := 1<<(32-m.cfg.Subnet.Bits()) - 3 // network, gateway, broadcast
	for i := 0; i < max; i++ {
		if !m.used[i] {
			m.used[i] = true
			return i, nil
		}
	}
	return 0, fmt.Errorf("%w: %d addresses of %s in use", ErrExhausted, max, m.cfg.Subnet)
}

func (m *Manager) free(i int) {
	m.mu.Lock()
	delete(m.used, i)
	m.mu.Unlock()
}

func (m *Manager) addrOf(i int) netip.Addr {
	a := m.cfg.Subnet.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(i) + 2
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// newSlot makes a namespace with lo up and a veth into the bridge.
func (m *Manager) newSlot() (*slot, error) {
	idx, err := m.alloc()
	if err != nil {
		return nil, err
	}
	s := &slot{idx: idx, ns: -1, hostIf: fmt.Sprintf("%s%x", hostPrefix, idx), addr: m.addrOf(idx)}
	if err := m.makeSlot(s); err != nil {
		m.drop(s)
		return nil, fmt.Errorf("netns: make namespace: %w", err)
	}
	return s, nil
}

func (m *Manager) makeSlot(s *slot) error {
	if err := inNS(m.host, func() error {
		// unshare moves this (locked) thread into the new namespace; inNS
		// puts it back.
		ns, err := vnetns.New()
		if err != nil {
			return err
		}
		s.ns = ns
		return nil
	}); err != nil {
		return err
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: s.hostIf, MTU: m.mtu, MasterIndex: m.bridge.Attrs().Index},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(s.ns)),
	}
	if err := m.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth: %w", err)
	}
	hl, err := m.nl.LinkByName(s.hostIf)
	if err != nil {
		return err
	}
	if err := m.nl.LinkSetIsolated(hl, true); err != nil {
		return fmt.Errorf("isolate bridge port: %w", err)
	}
	if err := m.nl.LinkSetUp(hl); err != nil {
		return err
	}
	h, err := netlink.NewHandleAt(s.ns, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := h.LinkSetUp(lo); err != nil {
		return err
	}
	eth, err := h.LinkByName("eth0")
	if err != nil {
		return err
	}
	if err := h.AddrAdd(eth, addr(s.addr, m.cfg.Subnet.Bits())); err != nil {
		return fmt.Errorf("address: %w", err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return err
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: m.gw.AsSlice()}); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	return nil
}

// drop deletes a slot's links and closes its namespace.
func (m *Manager) drop(s *slot) error {
	var err error
	if l, lerr := m.nl.LinkByName(s.hostIf); lerr == nil {
		if derr := m.nl.LinkDel(l); derr != nil {
			err = fmt.Errorf("netns: delete %s: %w", s.hostIf, derr)
		}
	}
	if s.ns >= 0 {
		s.ns.Close()
		s.ns = -1
	}
	m.free(s.idx)
	return err
}

// Close removes every namespace, link, rule and program the manager made
// and restores ip_forward. Scopes' Nets still open are closed too.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	live := make([]*Net, 0, len(m.live))
	for n := range m.live {
		live = append(live, n)
	}
	m.mu.Unlock()
	close(m.stop)
	m.wg.Wait()
	m.busy.Wait()
	var errs []error
	for _, n := range live {
		errs = append(errs, n.Close())
	}
	if m.ready != nil {
	drain:
		for {
			select {
			case s := <-m.ready:
				errs = append(errs, m.drop(s))
			default:
				break drain
			}
		}
	}
	errs = append(errs, m.teardown())
	return errors.Join(errs...)
}

// teardown undoes open (also after a half-done open).
func (m *Manager) teardown() error {
	var errs []error
	if m.pol != nil {
		// Not set to nil: a Net's Update racing Close gets an error
		// from the closed policy, not a nil dereference.
		errs = append(errs, m.pol.Close())
	}
	errs = append(errs, m.cleanup(true, true))
	m.nl.Close()
	m.host.Close()
	return errors.Join(errs...)
}

// forwardState is where the host's ip_forward before Open is kept.
func (m *Manager) forwardState() string { return filepath.Join(m.cfg.StateDir, "ip_forward.orig") }

// enableForwarding turns on IPv4 forwarding in the host namespace,
// remembering the old value on disk so that a crash does not lose it.
func (m *Manager) enableForwarding() error {
	return inNS(m.host, func() error {
		const p = "/proc/sys/net/ipv4/ip_forward"
		old, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("netns: %w", err)
		}
		if strings.TrimSpace(string(old)) == "1" {
			return nil
		}
		if err := os.MkdirAll(m.cfg.StateDir, 0o700); err != nil {
			return fmt.Errorf("netns: %w", err)
		}
		if err := os.WriteFile(m.forwardState(), old, 0o600); err != nil {
			return fmt.Errorf("netns: %w", err)
		}
		if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("netns: enable forwarding: %w", err)
		}
		m.log.Info("enabled IPv4 forwarding (restored at stop)")
		return nil
	})
}

// restoreForwarding puts back the ip_forward value Open found.
func (m *Manager) restoreForwarding() error {
	old, err := os.ReadFile(m.forwardState())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := inNS(m.host, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", old, 0o644)
	}); err != nil {
		return fmt.Errorf("restore ip_forward: %w", err)
	}
	return os.Remove(m.forwardState())
}

// CheckConfig reports what Open would refuse in cfg before touching the host.
func CheckConfig(cfg Config) error { return cfg.setDefaults() }

// Cleanup removes what a run with cfg left behind (links, the nftables
// table, a changed ip_forward) without starting anything; for a daemon
// whose configuration no longer asks for egress.
func Cleanup(cfg Config, log *slog.Logger) error {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	m := &Manager{cfg: cfg, log: log.With("component", "netns")}
	var err error
	if m.host, err = cfg.hostNS(); err != nil {
		return err
	}
	defer m.host.Close()
	if m.nl, err = netlink.NewHandleAt(m.host, unix.NETLINK_ROUTE); err != nil {
		return fmt.Errorf("netns: netlink: %w", err)
	}
	defer m.nl.Close()
	return m.cleanup(false, false)
}
