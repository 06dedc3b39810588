package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/scoped-io/scoped/fleet/bundles"
	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/metrics"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
	"github.com/scoped-io/scoped/supervisor"
)

// API is the gRPC edge: it authenticates callers, checks what they may do,
// calls the supervisor and turns its sentinel errors into status codes.
type API struct {
	scopedv1.UnimplementedScopedServer
	s           *supervisor.Supervisor
	conf        func() *supervisor.Config // the configuration in force
	log         *slog.Logger
	metrics     *metrics.Registry // nil: panics are not counted
	capFallback atomic.Bool       // requests were capped after reading (and that was logged)
}

var _ scopedv1.ScopedServer = (*API)(nil)

// Listen creates the API's unix socket (removing a stale one), with the
// configured mode and group.
func Listen(cfg *supervisor.Config) (net.Listener, error) {
	path := cfg.Socket
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("another scoped is serving %s", path)
		}
		_ = os.Remove(path)
	}
	if err := os.MkdirAll(cfg.RuntimeDir, 0o711); err != nil {
		return nil, err
	}
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, err
	}
	gid := -1
	if g := cfg.SocketGroup; g != "" {
		if n, err := strconv.Atoi(g); err == nil {
			gid = n
		} else if grp, err := user.LookupGroup(g); err == nil {
			gid, _ = strconv.Atoi(grp.Gid)
		} else {
			l.Close()
			return nil, fmt.Errorf("%w: socket_group %q: %w", supervisor.ErrConfig, g, err)
		}
	}
	if err := os.Chown(path, -1, gid); err != nil {
		l.Close()
		return nil, err
	}
	if err := os.Chmod(path, os.FileMode(cfg.SocketMode)); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// NewServer returns the gRPC server of the API over s, logging to log (the
// supervisor's). (The daemon's main adds go-plugin's health service for
// applications that reattach.)
func NewServer(s *supervisor.Supervisor, log *slog.Logger) *grpc.Server {
	api := &API{s: s, conf: s.Config, log: log, metrics: s.Metrics()}
	return api.newServer(api)
}

// newServer serves impl, the API or a stand-in of tests, with the API's
// authentication, limits, error mapping and panic recovery. The server's
// receive limit is Deploy's (the bundle); register holds every other
// method to maxRequest.
func (a *API) newServer(impl scopedv1.ScopedServer) *grpc.Server {
	return a.newServerCreds(impl, peerCreds{})
}

// newServerCreds is newServer with the transport credentials creds (the
// unix socket's peer credentials, or TLS: see tls.go).
func (a *API) newServerCreds(impl scopedv1.ScopedServer, creds credentials.TransportCredentials) *grpc.Server {
	srv := grpc.NewServer(
		grpc.Creds(creds),
		grpc.MaxRecvMsgSize(int(a.conf().Limits.MaxBundle+1<<20)),
		grpc.MaxSendMsgSize(int(a.conf().Limits.MaxResult+1<<20)),
		grpc.UnaryInterceptor(a.unary),
		grpc.StreamInterceptor(a.stream),
		// A pool of stream goroutines instead of one new goroutine per
		// call, whose stack grows (and is copied) on every call.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	)
	a.register(srv, impl)
	return srv
}

// --- authentication ----------------------------------------------------

// peerCreds reads the caller's uid/gid from the unix socket (SO_PEERCRED).
type peerCreds struct{}

type peerInfo struct {
	credentials.CommonAuthInfo
	uid, gid uint32
	pid      int32
}

func (peerInfo) AuthType() string { return "peercred" }

func (peerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, nil, err
	}
	if cerr != nil {
		return nil, nil, cerr
	}
	return c, peerInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		uid: cred.Uid, gid: cred.Gid, pid: cred.Pid}, nil
}

func (peerCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("server-side credentials only")
}
func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}
func (p peerCreds) Clone() credentials.TransportCredentials { return p }
func (peerCreds) OverrideServerName(string) error           { return nil }

// caller is who is calling and which tenants it may act for.
type caller struct {
	name    string
	all     bool
	admin   bool // may assign tiers
	tenants map[string]bool
}

func (c caller) may(tenant string) bool { return c.all || c.tenants[tenant] }

// grant adds what the configured client cl may do to c.
func (c *caller) grant(cl supervisor.Client) {
	c.name = cl.Name
	c.admin = c.admin || cl.Admin
	for _, t := range cl.Tenants {
		if t == "*" {
			c.all = true
		}
		c.tenants[t] = true
	}
}

type callerKey struct{}

// authenticate maps the peer and its token to the configured clients.
func (a *API) authenticate(ctx context.Context) (caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return caller{}, fmt.Errorf("%w: no peer", supervisor.ErrPermission)
	}
	pi, ok := p.AuthInfo.(peerInfo)
	if !ok {
		if _, isTLS := p.AuthInfo.(credentials.TLSInfo); isTLS {
			return a.tokenCaller(ctx) // the fleet's TLS API (tls.go)
		}
		return caller{}, fmt.Errorf("%w: no peer credentials", supervisor.ErrPermission)
	}
	token := bearerToken(ctx)
	c := caller{name: fmt.Sprintf("uid %d", pi.uid), tenants: map[string]bool{}}
	if pi.uid == 0 {
		c.name, c.all, c.admin = "root", true, true
	}
	matched := c.all
	for _, cl := range a.conf().Clients {
		byToken := token != "" && cl.Token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(cl.Token)) == 1
		if !byToken && !slices.Contains(cl.UIDs, pi.uid) && !slices.Contains(cl.GIDs, pi.gid) {
			continue
		}
		matched = true
		c.grant(cl)
	}
	if !matched {
		return caller{}, fmt.Errorf("%w: uid %d (gid %d) is not a configured client", supervisor.ErrPermission, pi.uid, pi.gid)
	}
	if token != "" && !c.all && len(c.tenants) == 0 {
		return caller{}, fmt.Errorf("%w: unknown token", supervisor.ErrPermission)
	}
	return c, nil
}

// bearerToken is the call's "authorization: Bearer …" token, or "".
func bearerToken(ctx context.Context) string {
	token := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, v := range md.Get("authorization") {
			if t, ok := strings.CutPrefix(v, "Bearer "); ok {
				token = t
			}
		}
	}
	return token
}

// unary authenticates the caller of a Scoped method and maps the
// handler's error; a panic of any handler becomes INTERNAL. (register caps
// the request of a unary method.)
func (a *API) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	var c caller
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, a.panicked(ctx, info.FullMethod, c, tenantOf(req), p)
		}
	}()
	if !strings.HasPrefix(info.FullMethod, "/scoped.v1.") {
		return h(ctx, req) // health
	}
	if c, err = a.authenticate(ctx); err != nil {
		return nil, a.statusFor(info.FullMethod, c, err)
	}
	resp, err = h(context.WithValue(ctx, callerKey{}, c), req)
	return resp, a.statusFor(info.FullMethod, c, err)
}

type wrappedStream struct {
	grpc.ServerStream
	ctx    context.Context
	recv   func(any) error // reads the request within its cap; nil: ServerStream's
	tenant string          // of the last request received, for the log of a panic
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

func (w *wrappedStream) RecvMsg(m any) error {
	recv := w.ServerStream.RecvMsg
	if w.recv != nil {
		recv = w.recv
	}
	err := recv(m)
	if err == nil {
		w.tenant = tenantOf(m)
	}
	return err
}

// stream is unary for streaming methods; it caps the request of a Scoped
// method that does not stream requests, at maxRequest.
func (a *API) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	var c caller
	w := &wrappedStream{ServerStream: ss, ctx: ss.Context()}
	defer func() {
		if p := recover(); p != nil {
			err = a.panicked(ss.Context(), info.FullMethod, c, w.tenant, p)
		}
	}()
	if bundles.IsMethod(info.FullMethod) {
		return a.bundleStream(srv, w, info.FullMethod, h) // the fleet's TLS server only (tls.go)
	}
	if !strings.HasPrefix(info.FullMethod, "/scoped.v1.") {
		return h(srv, w)
	}
	if c, err = a.authenticate(ss.Context()); err != nil {
		return a.statusFor(info.FullMethod, c, err)
	}
	w.ctx = context.WithValue(ss.Context(), callerKey{}, c)
	if !info.IsClientStream {
		w.recv = a.cappedDecoder(ss.Context(), ss.RecvMsg)
	}
	return a.statusFor(info.FullMethod, c, h(srv, w))
}

func callerOf(ctx context.Context) caller {
	c, _ := ctx.Value(callerKey{}).(caller)
	return c
}

// mayAct checks the tenant id and that the caller may act for it. This is
// the one check of a request's tenant: beneath the edge it travels as the
// ident.Tenant returned (in a supervisor.Target, see target).
func mayAct(ctx context.Context, tenant string) (ident.Tenant, error) {
	t, err := ident.ParseTenant(tenant)
	if err != nil {
		return "", fmt.Errorf("%w: %w", supervisor.ErrInvalid, err)
	}
	if c := callerOf(ctx); !c.may(tenant) {
		return "", fmt.Errorf("%w: %s may not act for tenant %s", supervisor.ErrPermission, c.name, tenant)
	}
	return t, nil
}

// target is the checked target of a request the caller may make for
// tenant (user "" for none).
func target(ctx context.Context, tenant, env, user, ext string) (supervisor.Target, error) {
	t, err := mayAct(ctx, tenant)
	if err != nil {
		return supervisor.Target{}, err
	}
	return supervisor.NewTarget(t, env, user, ext)
}

// --- RPCs --------------------------------------------------------------

func extensionPB(e supervisor.ExtensionInfo) *scopedv1.Extension {
	return &scopedv1.Extension{
		Tenant: e.Tenant, Environment: e.Environment, Name: e.Name, Version: e.Version,
		Digest: e.Digest, Runtime: e.Runtime, Size: e.Size, Created: timestamppb.New(e.Created),
	}
}

func (a *API) Deploy(ctx context.Context, req *scopedv1.DeployRequest) (*scopedv1.DeployResponse, error) {
	tg, err := target(ctx, req.GetTenant(), req.GetEnvironment(), "", req.GetName())
	if err != nil {
		return nil, err
	}
	files := make([]supervisor.BundleFile, 0, len(req.GetBundle().GetFiles()))
	for _, f := range req.GetBundle().GetFiles() {
		files = append(files, supervisor.BundleFile{Path: f.GetPath(), Mode: f.GetMode(), Content: f.GetContent()})
	}
	info, unchanged, err := a.s.Deploy(tg, files)
	if err != nil {
		return nil, err
	}
	return &scopedv1.DeployResponse{Extension: extensionPB(info), Unchanged: unchanged}, nil
}

func (a *API) RemoveExtension(ctx context.Context, req *scopedv1.RemoveExtensionRequest) (*scopedv1.RemoveExtensionResponse, error) {
	tg, err := target(ctx, req.GetTenant(), req.GetEnvironment(), "", req.GetName())
	if err != nil {
		return nil, err
	}
	return &scopedv1.RemoveExtensionResponse{}, a.s.RemoveExtension(tg)
}

// filter returns which tenants a listing shows: the one asked for (which
// the caller must be allowed), or every tenant the caller may act for.
func filter(ctx context.Context, tenant string) (func(string) bool, error) {
	if tenant != "" {
		if _, err := mayAct(ctx, tenant); err != nil {
			return nil, err
		}
		return func(t string) bool { return t == tenant }, nil
	}
	return callerOf(ctx).may, nil
}

func (a *API) ListExtensions(ctx context.Context, req *scopedv1.ListExtensionsRequest) (*scopedv1.ListExtensionsResponse, error) {
	allow, err := filter(ctx, req.GetTenant())
	if err != nil {
		return nil, err
	}
	exts, err := a.s.Extensions(allow)
	if err != nil {
		return nil, err
	}
	resp := &scopedv1.ListExtensionsResponse{}
	for _, e := range exts {
		resp.Extensions = append(resp.Extensions, extensionPB(e))
	}
	return resp, nil
}

func (a *API) Invoke(ctx context.Context, req *scopedv1.InvokeRequest) (*scopedv1.InvokeResponse, error) {
	tenant, err := mayAct(ctx, req.GetTenant())
	if err != nil {
		return nil, err
	}
	var timeout time.Duration
	if t := req.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil {
			return nil, fmt.Errorf("%w: timeout: %w", supervisor.ErrInvalid, err)
		}
		timeout = t.AsDuration()
	}
	tg, err := supervisor.NewTarget(tenant, req.GetEnvironment(), req.GetUser(), req.GetExtension())
	if err != nil {
		return nil, err
	}
	res, err := a.s.Invoke(ctx, supervisor.InvokeRequest{
		Target: tg, Version: req.GetVersion(), Payload: req.GetPayload(), Metadata: req.GetMetadata(), Timeout: timeout,
	})
	if err != nil {
		return nil, err
	}
	return &scopedv1.InvokeResponse{Result: res.Result, Figures: &scopedv1.Figures{
		InvocationId: res.InvocationID, Scope: res.Scope, Worker: res.Worker, Cold: res.Cold,
		Duration: durationpb.New(res.Duration), Queued: durationpb.New(res.Queued), ColdStart: res.ColdStart.Proto(),
	}}, nil
}

func scopePB(si supervisor.ScopeInfo) *scopedv1.Scope {
	out := &scopedv1.Scope{
		Key: si.ID.Key(), Tenant: si.ID.Tenant, Environment: si.ID.Environment, User: si.ID.User,
		Extension: si.ID.Extension, Cgroup: si.Cgroup, HostUid: si.HostUID,
		Stats: &scopedv1.CgroupStats{
			CpuUsage: durationpb.New(si.Stats.CPUUsage), CpuThrottled: durationpb.New(si.Stats.CPUThrottled),
			MemoryCurrent: si.Stats.MemoryCurrent, MemoryPeak: si.Stats.MemoryPeak,
			OomKills: si.Stats.OOMKills, PidsCurrent: si.Stats.PidsCurrent,
		},
		Limits: &scopedv1.Limits{CpuWeight: si.Limits.CPUWeight, CpuMax: si.Limits.CPUMax, MemoryMax: si.Limits.MemoryMax, PidsMax: si.Limits.PidsMax},
		Tier:   si.Tier, ThrottleLevel: int32(si.ThrottleLevel), NetworkAddr: si.NetworkAddr,
		Usage: &scopedv1.Usage{
			Source: si.Usage.Source, Cpu: durationpb.New(si.Usage.CPU), RunqBuckets: si.Usage.RunqBuckets,
			RunqCount: si.Usage.RunqCount, RunqSum: durationpb.New(si.Usage.RunqSum), Preemptions: si.Usage.Preemptions,
			NetRxBytes: si.Usage.NetRxBytes, NetTxBytes: si.Usage.NetTxBytes,
			NetRxPackets: si.Usage.NetRxPackets, NetTxPackets: si.Usage.NetTxPackets,
			Invocations: uint64(si.Usage.Invocations), Time: timestamppb.New(si.Usage.Time),
		},
	}
	for _, w := range si.Workers {
		out.Workers = append(out.Workers, &scopedv1.Worker{
			Id: w.ID, Extension: w.Extension, Version: w.Version, Pid: int32(w.Pid),
			Started: timestamppb.New(w.Started), Invocations: w.Invocations, InFlight: w.InFlight, Cgroup: w.Cgroup,
		})
	}
	return out
}

func (a *API) ListScopes(ctx context.Context, req *scopedv1.ListScopesRequest) (*scopedv1.ListScopesResponse, error) {
	allow, err := filter(ctx, req.GetTenant())
	if err != nil {
		return nil, err
	}
	resp := &scopedv1.ListScopesResponse{}
	for _, si := range a.s.Scopes(allow) {
		resp.Scopes = append(resp.Scopes, scopePB(si))
	}
	return resp, nil
}

func (a *API) InspectScope(ctx context.Context, req *scopedv1.InspectScopeRequest) (*scopedv1.Scope, error) {
	key := req.GetScope()
	if err := ident.CheckDotted("scope", key); err != nil {
		return nil, fmt.Errorf("%w: %w", supervisor.ErrInvalid, err)
	}
	tenant, _, _ := strings.Cut(key, ".")
	if _, err := mayAct(ctx, tenant); err != nil {
		return nil, err
	}
	si, err := a.s.Scope(key)
	if err != nil {
		return nil, err
	}
	return scopePB(si), nil
}

func logPB(l supervisor.LogLine) *scopedv1.LogEntry {
	return &scopedv1.LogEntry{Time: timestamppb.New(l.Time), Scope: l.Scope, Worker: l.Worker,
		Extension: l.Extension, InvocationId: l.InvocationID, Stream: l.Stream, Line: l.Line}
}

func (a *API) Logs(req *scopedv1.LogsRequest, stream grpc.ServerStreamingServer[scopedv1.LogEntry]) error {
	ctx := stream.Context()
	allow, err := filter(ctx, req.GetTenant())
	if err != nil {
		return err
	}
	if s := req.GetScope(); s != "" {
		if err := ident.CheckDotted("scope", s); err != nil {
			return fmt.Errorf("%w: %w", supervisor.ErrInvalid, err)
		}
		tenant, _, _ := strings.Cut(s, ".")
		if _, err := mayAct(ctx, tenant); err != nil {
			return err
		}
	}
	if e := req.GetExtension(); e != "" {
		if err := ident.Check("extension", e); err != nil {
			return fmt.Errorf("%w: %w", supervisor.ErrInvalid, err)
		}
	}
	lines, ch, stop := a.s.Logs(allow, req.GetScope(), req.GetExtension(), int(req.GetTail()), req.GetFollow())
	defer stop()
	for _, l := range lines {
		if err := stream.Send(logPB(l)); err != nil {
			return err
		}
	}
	if ch == nil {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case l := <-ch:
			if err := stream.Send(logPB(l)); err != nil {
				return err
			}
		}
	}
}

func tierPB(t supervisor.Tier) *scopedv1.Tier {
	return &scopedv1.Tier{
		CpuWeight: t.CPUWeight, CpuMax: t.CPUMax, MemoryMax: t.MemoryMax, ScopeMemoryMax: t.ScopeMemoryMax,
		ScopePidsMax: t.ScopePidsMax, MaxConcurrent: int32(t.MaxConcurrent), Rate: t.Rate, Burst: int32(t.Burst),
		Timeout: durationpb.New(t.Timeout.Duration), CpuTime: durationpb.New(t.CPUTime.Duration),
		MaxWorkers: int32(t.MaxWorkers), Suspended: t.Suspended,
		Network: t.Network, EgressAllow: t.EgressAllow, EgressRate: t.EgressRate, IngressRate: t.IngressRate,
	}
}

func (a *API) tenantPB(ti supervisor.TenantInfo) *scopedv1.Tenant {
	out := &scopedv1.Tenant{
		Tenant: ti.Tenant, Tier: ti.Tier, Assigned: ti.Assigned, Scopes: int32(ti.Scopes), InFlight: int32(ti.InFlight),
		Settings: tierPB(a.conf().Tiers[ti.Tier]), EgressAllow: ti.EgressAllow,
	}
	if !ti.Updated.IsZero() {
		out.Updated = timestamppb.New(ti.Updated)
	}
	return out
}

func (a *API) SetTenant(ctx context.Context, req *scopedv1.SetTenantRequest) (*scopedv1.Tenant, error) {
	tenant, err := mayAct(ctx, req.GetTenant())
	if err != nil {
		return nil, err
	}
	if c := callerOf(ctx); !c.admin {
		return nil, fmt.Errorf("%w: %s may not assign tiers (only root and clients with admin = true)", supervisor.ErrPermission, c.name)
	}
	var allow *[]string
	if req.GetSetEgressAllow() {
		list := req.GetEgressAllow()
		allow = &list
	}
	ti, err := a.s.SetTenantTier(tenant, req.GetTier(), allow)
	if err != nil {
		return nil, err
	}
	return a.tenantPB(ti), nil
}

func (a *API) ListTenants(ctx context.Context, req *scopedv1.ListTenantsRequest) (*scopedv1.ListTenantsResponse, error) {
	resp := &scopedv1.ListTenantsResponse{}
	if req.GetTenant() != "" {
		t, err := mayAct(ctx, req.GetTenant())
		if err != nil {
			return nil, err
		}
		resp.Tenants = append(resp.Tenants, a.tenantPB(a.s.Tenant(t)))
		return resp, nil
	}
	for _, ti := range a.s.Tenants(callerOf(ctx).may) {
		resp.Tenants = append(resp.Tenants, a.tenantPB(ti))
	}
	return resp, nil
}

// ListEvents lists the noisy-neighbour controller's events. Root and
// clients with all tenants or admin = true see every event; another client
// sees the events that name a scope of its tenants, as the antagonist or as
// a victim, with the scopes and tenant of the others redacted.
func (a *API) ListEvents(ctx context.Context, req *scopedv1.ListEventsRequest) (*scopedv1.ListEventsResponse, error) {
	c := callerOf(ctx)
	may := c.may
	if c.admin {
		may = func(string) bool { return true }
	}
	show := may
	if t := req.GetTenant(); t != "" {
		if err := ident.Check("tenant", t); err != nil {
			return nil, fmt.Errorf("%w: %w", supervisor.ErrInvalid, err)
		}
		if !may(t) {
			return nil, fmt.Errorf("%w: %s may not act for tenant %s", supervisor.ErrPermission, c.name, t)
		}
		show = func(x string) bool { return x == t }
	}
	var since time.Time
	if req.GetSince() != nil {
		since = req.GetSince().AsTime()
	}
	events, enabled := a.s.ControlEvents(func(string) bool { return true }, since)
	return &scopedv1.ListEventsResponse{ControllerEnabled: enabled, Events: eventsFor(events, show, may)}, nil
}

// redacted stands for a scope or tenant the caller may not see.
const redacted = "(other tenant)"

// eventsFor is the events that name a scope of a tenant show accepts, with
// every scope and tenant may does not accept redacted, in the event's
// fields and in its reason.
func eventsFor(events []supervisor.ControlEvent, show, may func(string) bool) []*scopedv1.Event {
	var out []*scopedv1.Event
	for _, e := range events {
		shown := show(e.Tenant)
		hidden := map[string]bool{} // tenants and scope keys to redact
		if !may(e.Tenant) {
			hidden[e.Tenant], hidden[e.Scope] = true, true
		}
		for _, v := range e.Victims {
			t, _, _ := strings.Cut(v, ".")
			shown = shown || show(t)
			if !may(t) {
				hidden[t], hidden[v] = true, true
			}
		}
		if !shown {
			continue
		}
		pe := &scopedv1.Event{
			Time: timestamppb.New(e.At), Kind: e.Kind, Scope: e.Scope, Tenant: e.Tenant,
			Victims: slices.Clone(e.Victims), Level: int32(e.Level), Reason: e.Reason,
		}
		if len(hidden) > 0 {
			if hidden[pe.Tenant] {
				pe.Scope, pe.Tenant = redacted, ""
			}
			for i, v := range pe.Victims {
				if hidden[v] {
					pe.Victims[i] = redacted
				}
			}
			pe.Reason = redactWords(pe.Reason, hidden)
		}
		out = append(out, pe)
	}
	return out
}

// redactWords replaces each word of s (a run of the characters of ids and
// scope keys, without a trailing dot) that is hidden, or a scope key of a
// hidden tenant, by redacted.
func redactWords(s string, hidden map[string]bool) string {
	isWord := func(r byte) bool {
		return r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.'
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if !isWord(s[i]) {
			b.WriteByte(s[i])
			i++
			continue
		}
		j := i
		for j < len(s) && isWord(s[j]) {
			j++
		}
		k := j
		for k > i && s[k-1] == '.' {
			k--
		}
		w := s[i:k]
		t, _, _ := strings.Cut(w, ".")
		if hidden[w] || hidden[t] && strings.Contains(w, ".") {
			w = redacted
		}
		b.WriteString(w)
		b.WriteString(s[k:j])
		i = j
	}
	return b.String()
}

func (a *API) GetUsage(ctx context.Context, req *scopedv1.GetUsageRequest) (*scopedv1.GetUsageResponse, error) {
	tenant, err := mayAct(ctx, req.GetTenant())
	if err != nil {
		return nil, err
	}
	if req.GetFrom() == nil || req.GetTo() == nil {
		return nil, fmt.Errorf("%w: from and to are required", supervisor.ErrInvalid)
	}
	rows, err := a.s.TenantUsage(supervisor.UsageQuery{
		Tenant: tenant, Meter: req.GetMeter(), From: req.GetFrom().AsTime(), To: req.GetTo().AsTime(),
		By: req.GetBy(), PerWindow: req.GetPerWindow(),
	})
	if err != nil {
		return nil, err
	}
	resp := &scopedv1.GetUsageResponse{}
	for _, r := range rows {
		row := &scopedv1.UsageRow{Tenant: r.Tenant, Meter: r.Meter, Group: r.Group, Value: r.Value}
		if !r.WindowStart.IsZero() {
			row.WindowStart = timestamppb.New(r.WindowStart)
			row.Window = durationpb.New(r.Window)
		}
		resp.Rows = append(resp.Rows, row)
	}
	return resp, nil
}
