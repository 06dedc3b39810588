package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/fleet/record"
	"github.com/scoped-io/scoped/fleet/route"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// ErrFleet wraps DialFleet's failures: bad options or files, or no first
// view of the fleet from etcd.
var ErrFleet = errors.New("client: fleet")

// FleetOptions configures DialFleet.
type FleetOptions struct {
	// Endpoints are etcd's client URLs; Prefix the fleet's key prefix
	// ([fleet] prefix; record.DefaultPrefix when empty).
	Endpoints []string
	Prefix    string
	// EtcdCA, EtcdCert and EtcdKey are PEM files for TLS to etcd: a CA
	// turns TLS on, a certificate and key authenticate this client.
	EtcdCA, EtcdCert, EtcdKey string

	// CA verifies the nodes' API certificates (the system's roots when
	// empty); Cert and Key are this client's certificate, for nodes that
	// require one. ServerName overrides the name checked in every node's
	// certificate (by default the host of the node's address).
	CA, Cert, Key string
	ServerName    string

	// Token is sent as "authorization: Bearer <token>" on every call.
	Token string
	// MaxMessageSize as WithMaxMessageSize; DialOptions are added to every
	// node's connection.
	MaxMessageSize int
	DialOptions    []grpc.DialOption

	// Probe is how often the client checks that etcd answers, to know
	// when it is degraded (default 2s).
	Probe time.Duration
	// Logger gets the fleet's changes and retries (none when nil).
	Logger *slog.Logger
}

// FleetClient calls a fleet of scoped nodes. Its embedded ScopedClient has
// the same methods as Client's: Invoke goes to the node ranked first for
// the request's scope (fleet/route: rendezvous hashing with bounded load,
// among the nodes carrying the tenant's tier placement), so the same
// scope lands on the same warm node (and stays on the node that last
// answered it, for 5 minutes after its last call, while that node is a
// candidate: bounded load places new scopes, it does not move warm
// ones); InspectScope and Logs with a scope go
// where that scope is routed; every other call (Deploy, SetTenant,
// GetUsage, ListScopes, …) goes to one live node, picked by its tenant.
// ListScopes, InspectScope, ListEvents and Logs show that node's view
// only.
//
// A call that fails with Unavailable because its node went away (the
// connection broke or was refused, or the node left the membership) is
// retried on the next ranked node only when its context is marked with
// Idempotent; otherwise the caller gets the Unavailable. With no live node
// for the placement the call gets Unavailable naming it.
//
// It watches etcd for the membership, the fleet policy and the tenants'
// tiers. When etcd cannot be reached it keeps routing with the last state
// it saw and Degraded says so. Close stops everything it started.
type FleetClient struct {
	scopedv1.ScopedClient
	r *router
}

// Idempotent marks ctx's calls as safe to run twice: a FleetClient
// retries them on the next node when theirs went away.
func Idempotent(ctx context.Context) context.Context {
	return context.WithValue(ctx, idempotentKey{}, true)
}

type idempotentKey struct{}

func isIdempotent(ctx context.Context) bool {
	v, _ := ctx.Value(idempotentKey{}).(bool)
	return v
}

// DialFleet connects to etcd, reads the fleet's membership, policy and
// tiers once (ctx bounds that) and starts watching them. Node connections
// are made lazily, on a node's first call.
func DialFleet(ctx context.Context, o FleetOptions) (*FleetClient, error) {
	if len(o.Endpoints) == 0 {
		return nil, fmt.Errorf("%w: no etcd endpoints", ErrFleet)
	}
	if o.Probe <= 0 {
		o.Probe = 2 * time.Second
	}
	apiTLS, err := tlsConfig(o.CA, o.Cert, o.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: API TLS: %w", ErrFleet, err)
	}
	if apiTLS == nil {
		apiTLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	apiTLS.ServerName = o.ServerName
	etcdTLS, err := tlsConfig(o.EtcdCA, o.EtcdCert, o.EtcdKey)
	if err != nil {
		return nil, fmt.Errorf("%w: etcd TLS: %w", ErrFleet, err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   o.Endpoints,
		TLS:         etcdTLS,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{reconnect},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: etcd: %w", ErrFleet, err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dopts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(apiTLS)), reconnect}
	if o.Token != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(TokenCredentials(o.Token)))
	}
	if o.MaxMessageSize > 0 {
		dopts = append(dopts, grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(o.MaxMessageSize), grpc.MaxCallSendMsgSize(o.MaxMessageSize)))
	}
	dopts = append(dopts, o.DialOptions...)
	r := &router{
		etcd:  cli,
		keys:  record.Keys{Prefix: o.Prefix},
		log:   log,
		probe: o.Probe,
		dopts: dopts,
		nodes: map[string]record.Node{},
		tiers: map[string]string{},
		conns: map[string]*nodeConn{},
		done:  make(chan struct{}),

		affinity: map[string]affine{},
	}
	rev, err := r.load(ctx)
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("%w: first read of the fleet from etcd: %w", ErrFleet, err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.watch(wctx, rev)
	return &FleetClient{ScopedClient: scopedv1.NewScopedClient(r), r: r}, nil
}

// reconnect caps the reconnection backoff (gRPC's default grows to two
// minutes): a node or etcd back from a restart is seen within seconds.
var reconnect = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
	MinConnectTimeout: 5 * time.Second,
})

// tlsConfig reads PEM files: nil without any; a CA alone verifies peers;
// a certificate needs its key.
func tlsConfig(ca, cert, key string) (*tls.Config, error) {
	if ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		b, err := os.ReadFile(ca)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s holds no PEM certificate", ca)
		}
		c.RootCAs = pool
	}
	if (cert == "") != (key == "") {
		return nil, errors.New("a certificate needs its key and a key its certificate")
	}
	if cert != "" {
		kp, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, err
		}
		c.Certificates = []tls.Certificate{kp}
	}
	return c, nil
}

// Nodes returns the live nodes as last seen, by name.
func (f *FleetClient) Nodes() []record.Node {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	ns := make([]record.Node, 0, len(f.r.nodes))
	for _, n := range f.r.nodes {
		ns = append(ns, n)
	}
	slices.SortFunc(ns, func(a, b record.Node) int { return strings.Compare(a.Name, b.Name) })
	return ns
}

// Degraded returns nil while the client sees etcd, or why it does not:
// it then routes with the last membership, policy and tiers it saw.
func (f *FleetClient) Degraded() error {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	return f.r.degraded
}

// Route returns the nodes a call for the scope of (tenant, environment,
// user, extension) would try, in order, with the scope key.
func (f *FleetClient) Route(tenant, environment, user, extension string) (string, []record.Node, error) {
	f.r.mu.Lock()
	key := record.ScopeKey(f.r.policy, tenant, environment, user, extension)
	f.r.mu.Unlock()
	ns, err := f.r.rank(key, tenant, true)
	return key, ns, err
}

// Close stops watching etcd and closes every connection; calls in flight
// fail with Canceled.
func (f *FleetClient) Close() error {
	r := f.r
	r.closeOnce.Do(func() {
		r.cancel()
		<-r.done
		r.mu.Lock()
		r.closed = true
		conns := r.conns
		r.conns = map[string]*nodeConn{}
		r.mu.Unlock()
		for _, c := range conns {
			c.cc.Close()
		}
		r.err = r.etcd.Close()
	})
	return r.err
}

// router is the grpc.ClientConnInterface under FleetClient's ScopedClient:
// it picks each call's node.
type router struct {
	etcd  *clientv3.Client
	keys  record.Keys
	log   *slog.Logger
	probe time.Duration
	dopts []grpc.DialOption

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	err       error

	mu       sync.Mutex
	nodes    map[string]record.Node
	policy   record.Policy
	tiers    map[string]string // tenant → tier
	degraded error
	conns    map[string]*nodeConn // by node name: the members' and retiring ones'
	closed   bool
	// affinity is the node that last answered each scope's call, by scope
	// key (see rank).
	affinity map[string]affine
}

// affine is where a scope's last call was answered, and when.
type affine struct {
	node string
	at   time.Time
}

// affinityTTL is how long a scope's last node is remembered after its last
// call (the daemon's default [pool] idle_timeout: by then its workers are
// gone anyway); maxAffinity bounds the scopes remembered.
const (
	affinityTTL = 5 * time.Minute
	maxAffinity = 1 << 16
)

// nodeConn is one node's connection. One that left the membership (or
// moved) is closed when its last call ends.
type nodeConn struct {
	name, addr string
	cc         *grpc.ClientConn
	refs       int  // calls and streams using it (under router.mu)
	retired    bool // no longer the member's connection (under router.mu)
	// down is set while the last dial failed or the connection broke;
	// breaks counts the breaks, so a call can tell its node went away.
	down   atomic.Bool
	breaks atomic.Uint64
}

// load reads the membership, the policy and the tiers in one transaction
// and replaces the state with them; it returns the revision read.
func (r *router) load(ctx context.Context) (int64, error) {
	resp, err := r.etcd.Txn(ctx).Then(
		clientv3.OpGet(r.keys.Nodes(), clientv3.WithPrefix()),
		clientv3.OpGet(r.keys.Policy()),
		clientv3.OpGet(r.keys.Tenants(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return 0, err
	}
	nodes, tiers := map[string]record.Node{}, map[string]string{}
	var policy record.Policy
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		if n, ok := r.node(string(kv.Key), kv.Value); ok {
			nodes[n.Name] = n
		}
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		policy = r.policyOf(kv.Value)
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		if t, tier, ok := r.tier(string(kv.Key), kv.Value); ok {
			tiers[t] = tier
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nodes, r.policy, r.tiers = nodes, policy, tiers
	r.syncConns()
	return resp.Header.Revision, nil
}

// node decodes a node record; a bad one is logged and skipped.
func (r *router) node(key string, v []byte) (record.Node, bool) {
	name, err := r.keys.NodeOf(key)
	var n record.Node
	if err == nil {
		err = record.Decode(v, &n)
	}
	if err == nil && n.Name != name {
		err = fmt.Errorf("record of %q under %q", n.Name, name)
	}
	if err != nil {
		r.log.Warn("fleet: skipping a bad node record", "key", key, "err", err)
		return record.Node{}, false
	}
	return n, true
}

// policyOf decodes the policy; a bad one counts as the empty policy (one
// scope per tenant, no placement), logged.
func (r *router) policyOf(v []byte) record.Policy {
	var p record.Policy
	if err := record.Decode(v, &p); err != nil {
		r.log.Warn("fleet: bad policy record, routing by tenant alone", "err", err)
		return record.Policy{}
	}
	return p
}

// tier decodes the tier of a tenant record (only its "tier" field).
func (r *router) tier(key string, v []byte) (tenant, tier string, ok bool) {
	tenant, ok = strings.CutPrefix(key, r.keys.Tenants())
	var rec struct {
		Tier string `json:"tier"`
	}
	if !ok || len(v) > record.MaxRecord || json.Unmarshal(v, &rec) != nil {
		r.log.Warn("fleet: skipping a bad tenant record", "key", key)
		return "", "", false
	}
	return tenant, rec.Tier, true
}

// watch follows the fleet's changes from rev on until ctx ends, reloading
// after a watch error and checking etcd every probe interval.
func (r *router) watch(ctx context.Context, rev int64) {
	defer close(r.done)
	tick := time.NewTicker(r.probe)
	defer tick.Stop()
	for ctx.Err() == nil {
		if rev == 0 {
			var err error
			if rev, err = r.load(ctx); err != nil {
				r.setDegraded(err)
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
				continue
			}
			r.setDegraded(nil)
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		from := clientv3.WithRev(rev + 1)
		chans := []clientv3.WatchChan{
			r.etcd.Watch(wctx, r.keys.Nodes(), clientv3.WithPrefix(), from),
			r.etcd.Watch(wctx, r.keys.Policy(), from),
			r.etcd.Watch(wctx, r.keys.Tenants(), clientv3.WithPrefix(), from),
		}
		rev = r.follow(ctx, chans, tick.C)
		cancel()
	}
}

// follow applies the watches' events until one fails (it returns 0: reload)
// or ctx ends.
func (r *router) follow(ctx context.Context, chans []clientv3.WatchChan, tick <-chan time.Time) int64 {
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case <-ctx.Done():
			return 0
		case <-tick:
			pctx, cancel := context.WithTimeout(ctx, r.probe)
			_, err := r.etcd.Get(pctx, r.keys.Policy(), clientv3.WithCountOnly())
			cancel()
			if ctx.Err() == nil {
				r.setDegraded(err)
			}
			continue
		case resp, ok = <-chans[0]:
		case resp, ok = <-chans[1]:
		case resp, ok = <-chans[2]:
		}
		if !ok || resp.Err() != nil || resp.Canceled {
			if ctx.Err() == nil {
				err := resp.Err()
				if err == nil {
					err = errors.New("watch closed")
				}
				r.setDegraded(err)
			}
			return 0
		}
		r.apply(resp.Events)
	}
}

func (r *router) apply(evs []*clientv3.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range evs {
		key, del := string(ev.Kv.Key), ev.Type == clientv3.EventTypeDelete
		switch {
		case key == r.keys.Policy():
			if del {
				r.policy = record.Policy{}
			} else {
				r.policy = r.policyOf(ev.Kv.Value)
			}
		case strings.HasPrefix(key, r.keys.Nodes()):
			name, err := r.keys.NodeOf(key)
			if err != nil {
				continue
			}
			delete(r.nodes, name)
			if !del {
				if n, ok := r.node(key, ev.Kv.Value); ok {
					r.nodes[name] = n
				}
			}
		case strings.HasPrefix(key, r.keys.Tenants()):
			// A bad record keeps the tier last seen: a siloed tenant
			// must not fall back to the shared pool on a bad write.
			if del {
				delete(r.tiers, strings.TrimPrefix(key, r.keys.Tenants()))
			} else if t, tier, ok := r.tier(key, ev.Kv.Value); ok {
				r.tiers[t] = tier
			}
		}
	}
	r.syncConns()
}

func (r *router) setDegraded(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err != nil && r.degraded == nil:
		r.log.Warn("fleet: etcd unreachable, routing with the last state seen", "err", err)
		r.degraded = fmt.Errorf("fleet state from etcd is stale: %w", err)
	case err == nil && r.degraded != nil:
		r.log.Info("fleet: etcd reachable again")
		r.degraded = nil
	}
}

// syncConns retires the connections of nodes that left or moved (under
// r.mu).
func (r *router) syncConns() {
	for name, c := range r.conns {
		if n, ok := r.nodes[name]; !ok || n.Addr != c.addr {
			delete(r.conns, name)
			c.retired = true
			if c.refs == 0 {
				c.cc.Close()
			}
		}
	}
}

// rank returns the nodes for key, among those of tenant's placement when
// placed is set (key is then a scope's). A scope whose last call a node
// answered within affinityTTL goes to that node first while it is a
// candidate: bounded load places new scopes, it does not move warm ones
// (the loads it reads are seconds old, and it cannot tell a scope live on
// a node from a new one, so without this a scope placed while a node was
// over its bound would start again on its first-ranked node once the
// loads evened out).
func (r *router) rank(key, tenant string, placed bool) ([]record.Node, error) {
	r.mu.Lock()
	nodes := make([]record.Node, 0, len(r.nodes))
	for _, n := range r.nodes {
		nodes = append(nodes, n)
	}
	var placement []string
	tier := r.tiers[tenant]
	if placed {
		placement = r.policy.Placement[tier]
	}
	last, warm := r.affinity[key]
	r.mu.Unlock()
	ns, err := route.Rank(key, nodes, placement)
	if err != nil && len(placement) > 0 {
		err = fmt.Errorf("%w (tier %s of tenant %s)", err, tier, tenant)
	}
	if err == nil && placed && warm && time.Since(last.at) < affinityTTL {
		if i := slices.IndexFunc(ns, func(n record.Node) bool { return n.Name == last.node }); i > 0 {
			n := ns[i]
			copy(ns[1:i+1], ns[:i])
			ns[0] = n
		}
	}
	return ns, err
}

// answered remembers that node answered a call of the scope key.
func (r *router) answered(key, node string) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.affinity[key]; !ok && len(r.affinity) >= maxAffinity {
		for k, a := range r.affinity {
			if now.Sub(a.at) >= affinityTTL {
				delete(r.affinity, k)
			}
		}
		for k := range r.affinity { // none expired: forget one
			if len(r.affinity) < maxAffinity {
				break
			}
			delete(r.affinity, k)
		}
	}
	r.affinity[key] = affine{node: node, at: now}
}

// acquire returns n's connection, making it on first use, with a
// reference the caller releases.
func (r *router) acquire(n record.Node) (*nodeConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, status.Error(codes.Canceled, "client: fleet client closed")
	}
	c, ok := r.conns[n.Name]
	if !ok || c.addr != n.Addr {
		if ok {
			c.retired = true
			if c.refs == 0 {
				c.cc.Close()
			}
		}
		c = &nodeConn{name: n.Name, addr: n.Addr}
		d := net.Dialer{}
		dial := func(ctx context.Context, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				c.down.Store(true)
				c.breaks.Add(1)
				return nil, err
			}
			c.down.Store(false)
			return &watchedConn{Conn: conn, c: c}, nil
		}
		opts := append([]grpc.DialOption{grpc.WithContextDialer(dial)}, r.dopts...)
		cc, err := grpc.NewClient("passthrough:///"+n.Addr, opts...)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "client: node %s at %s: %v", n.Name, n.Addr, err)
		}
		c.cc = cc
		if _, member := r.nodes[n.Name]; member {
			r.conns[n.Name] = c
		} else {
			c.retired = true
		}
	}
	c.refs++
	return c, nil
}

func (r *router) release(c *nodeConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c.refs--
	if c.refs == 0 && c.retired {
		c.cc.Close()
	}
}

// wentAway reports whether c's node went away since the call began (when
// c had seen breaks): its connection broke or is down, or it left.
func (r *router) wentAway(c *nodeConn, breaks uint64) bool {
	if c.down.Load() || c.breaks.Load() != breaks {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.nodes[c.name]
	return !ok || n.Addr != c.addr
}

// watchedConn counts its connection's breaks.
type watchedConn struct {
	net.Conn
	c    *nodeConn
	once sync.Once
}

func (w *watchedConn) broke() {
	w.once.Do(func() {
		w.c.down.Store(true)
		w.c.breaks.Add(1)
	})
}

func (w *watchedConn) Read(b []byte) (int, error) {
	n, err := w.Conn.Read(b)
	if err != nil {
		w.broke()
	}
	return n, err
}

func (w *watchedConn) Write(b []byte) (int, error) {
	n, err := w.Conn.Write(b)
	if err != nil {
		w.broke()
	}
	return n, err
}

func (w *watchedConn) Close() error {
	w.broke()
	return w.Conn.Close()
}

// target is what a request routes by: the scope key and tenant, and
// whether the tenant's placement applies.
func (r *router) target(args any) (key, tenant string, placed bool) {
	switch q := args.(type) {
	case *scopedv1.InvokeRequest:
		r.mu.Lock()
		defer r.mu.Unlock()
		return record.ScopeKey(r.policy, q.GetTenant(), q.GetEnvironment(), q.GetUser(), q.GetExtension()), q.GetTenant(), true
	case *scopedv1.InspectScopeRequest:
		t, _, _ := strings.Cut(q.GetScope(), ".")
		return q.GetScope(), t, true
	case *scopedv1.LogsRequest:
		if q.GetScope() != "" {
			return q.GetScope(), q.GetTenant(), true
		}
		return "tenant:" + q.GetTenant(), q.GetTenant(), false
	case interface{ GetTenant() string }:
		return "tenant:" + q.GetTenant(), q.GetTenant(), false
	}
	return "", "", false
}

// Invoke implements grpc.ClientConnInterface: the call goes to the first
// ranked node, and on to the next ones while it is idempotent and its
// node went away.
func (r *router) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	key, tenant, placed := r.target(args)
	ranked, err := r.rank(key, tenant, placed)
	if err != nil {
		return status.Errorf(codes.Unavailable, "client: %v", err)
	}
	idem := isIdempotent(ctx)
	var last error
	for i, n := range ranked {
		c, err := r.acquire(n)
		if err != nil {
			return err
		}
		breaks := c.breaks.Load()
		err = c.cc.Invoke(ctx, method, args, reply, opts...)
		away := status.Code(err) == codes.Unavailable && r.wentAway(c, breaks)
		r.release(c)
		if err == nil && placed {
			r.answered(key, n.Name)
		}
		if err == nil || !away || !idem || ctx.Err() != nil {
			return err
		}
		last = err
		if i+1 < len(ranked) {
			r.log.Info("fleet: node went away, retrying an idempotent call on the next node",
				"method", method, "scope", key, "node", n.Name, "next", ranked[i+1].Name, "err", err)
		}
	}
	return last
}

// NewStream implements grpc.ClientConnInterface: the stream goes to the
// first ranked node (a stream is not retried).
func (r *router) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return &routedStream{ctx: ctx, r: r, desc: desc, method: method, opts: opts}, nil
}

// routedStream opens its stream on its first SendMsg, when the request
// (and so the route) is known, and holds its connection until the stream
// ends.
type routedStream struct {
	grpc.ClientStream
	ctx    context.Context
	r      *router
	desc   *grpc.StreamDesc
	method string
	opts   []grpc.CallOption

	conn *nodeConn
	stop func() bool
	once sync.Once
}

func (s *routedStream) SendMsg(m any) error {
	if s.ClientStream != nil {
		return s.ClientStream.SendMsg(m)
	}
	key, tenant, placed := s.r.target(m)
	ranked, err := s.r.rank(key, tenant, placed)
	if err != nil {
		return status.Errorf(codes.Unavailable, "client: %v", err)
	}
	c, err := s.r.acquire(ranked[0])
	if err != nil {
		return err
	}
	cs, err := c.cc.NewStream(s.ctx, s.desc, s.method, s.opts...)
	if err != nil {
		s.r.release(c)
		return err
	}
	s.ClientStream, s.conn = cs, c
	s.stop = context.AfterFunc(s.ctx, s.end)
	return cs.SendMsg(m)
}

func (s *routedStream) RecvMsg(m any) error {
	if s.ClientStream == nil {
		return status.Error(codes.Internal, "client: stream received before its request was sent")
	}
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.stop()
		s.end()
	}
	return err
}

func (s *routedStream) Header() (metadata.MD, error) {
	if s.ClientStream == nil {
		return nil, status.Error(codes.Internal, "client: stream header read before its request was sent")
	}
	return s.ClientStream.Header()
}

func (s *routedStream) Trailer() metadata.MD {
	if s.ClientStream == nil {
		return nil
	}
	return s.ClientStream.Trailer()
}

func (s *routedStream) Context() context.Context {
	if s.ClientStream == nil {
		return s.ctx
	}
	return s.ClientStream.Context()
}

func (s *routedStream) CloseSend() error {
	if s.ClientStream == nil {
		return nil
	}
	return s.ClientStream.CloseSend()
}

// end releases the stream's connection, once: when it fails or ends, or
// when its context does.
func (s *routedStream) end() { s.once.Do(func() { s.r.release(s.conn) }) }
