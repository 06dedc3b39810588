package api

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/encoding/gzip" // the gzip compressor, for a client that compresses
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/scoped-io/scoped/internal/testutil"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
	"github.com/scoped-io/scoped/supervisor"
)

// edgeAPI stands in for the API's handlers behind the real server, its
// interceptors and limits: what a test needs of the supervisor is here.
type edgeAPI struct {
	*API
}

func (edgeAPI) Deploy(_ context.Context, req *scopedv1.DeployRequest) (*scopedv1.DeployResponse, error) {
	n := 0
	for _, f := range req.GetBundle().GetFiles() {
		n += len(f.GetContent())
	}
	return &scopedv1.DeployResponse{Extension: &scopedv1.Extension{Size: int64(n)}}, nil
}

func (edgeAPI) Invoke(_ context.Context, req *scopedv1.InvokeRequest) (*scopedv1.InvokeResponse, error) {
	return &scopedv1.InvokeResponse{Result: []byte(strconv.Itoa(len(req.GetPayload())))}, nil
}

func (edgeAPI) ListScopes(context.Context, *scopedv1.ListScopesRequest) (*scopedv1.ListScopesResponse, error) {
	var m map[string]int
	m["boom"]++ // a nil map: the handler panics
	return nil, nil
}

func (edgeAPI) ListTenants(context.Context, *scopedv1.ListTenantsRequest) (*scopedv1.ListTenantsResponse, error) {
	return nil, errors.New("save tier assignments: open /var/lib/scoped/tenants.json: read-only file system")
}

func (edgeAPI) Logs(req *scopedv1.LogsRequest, _ grpc.ServerStreamingServer[scopedv1.LogEntry]) error {
	if req.GetScope() == "acme.panic" {
		panic("logs of " + req.GetScope())
	}
	return nil
}

// startEdge serves edgeAPI on a unix socket of a temporary directory with
// the API's server setup and returns the API, its log and a client
// connection. The test runs as whatever uid: root may act for all tenants,
// any other uid is made a client for acme.
func startEdge(t *testing.T) (*API, *testutil.SyncBuffer, *grpc.ClientConn) {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	api := unitAPI(supervisor.Client{Name: "test", UIDs: []uint32{uint32(os.Getuid())}, Tenants: []string{"acme"}})
	api.log = slog.New(slog.NewTextHandler(logs, nil))
	srv := api.newServer(edgeAPI{api})
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return api, logs, dialEdge(t, sock)
}

func dialEdge(t *testing.T, sock string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///scoped",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(128<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func edgeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var reErrorID = regexp.MustCompile(`^internal error \(id ([0-9a-f]{12})\)$`)

// errorID is the id of an INTERNAL answer without more, or fails the test.
func errorID(t *testing.T, err error) string {
	t.Helper()
	st := status.Convert(err)
	m := reErrorID.FindStringSubmatch(st.Message())
	if st.Code() != codes.Internal || m == nil {
		t.Fatalf("got %v, want Internal \"internal error (id …)\"", err)
	}
	return m[1]
}

// logLine is the line of the log with the error id.
func logLine(logs *testutil.SyncBuffer, id string) string {
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "error_id="+id) {
			return l
		}
	}
	return ""
}

func panicCount(api *API, method string) string {
	var b bytes.Buffer
	api.metrics.WritePrometheus(&b)
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, `scoped_api_panics_total{method="`+method+`"} `) {
			return strings.TrimPrefix(l, `scoped_api_panics_total{method="`+method+`"} `)
		}
	}
	return ""
}

// A handler's panic is INTERNAL with an id, logged with its stack and
// counted; the daemon serves on.
func TestUnitAPIPanic(t *testing.T) {
	api, logs, cc := startEdge(t)
	c := scopedv1.NewScopedClient(cc)
	ctx := edgeCtx(t)

	_, err := c.ListScopes(ctx, &scopedv1.ListScopesRequest{Tenant: "acme"})
	id := errorID(t, err)
	if strings.Contains(status.Convert(err).Message(), "nil map") {
		t.Errorf("the answer tells the panic: %v", err)
	}
	line := logLine(logs, id)
	for _, want := range []string{"level=ERROR", `msg="API handler panicked"`, "method=/scoped.v1.Scoped/ListScopes",
		"tenant=acme", "client=", "peer_uid=", "assignment to entry in nil map", "stack=", "edgeAPI.ListScopes"} {
		if !strings.Contains(line, want) {
			t.Errorf("log line of the panic lacks %q: %s", want, line)
		}
	}
	if n := panicCount(api, "/scoped.v1.Scoped/ListScopes"); n != "1" {
		t.Errorf("scoped_api_panics_total of ListScopes = %q, want 1", n)
	}

	// A streaming handler's panic too.
	s, err := c.Logs(ctx, &scopedv1.LogsRequest{Tenant: "acme", Scope: "acme.panic"})
	if err == nil {
		_, err = s.Recv()
	}
	line = logLine(logs, errorID(t, err))
	for _, want := range []string{"method=/scoped.v1.Scoped/Logs", "tenant=acme", "logs of acme.panic", "edgeAPI.Logs"} {
		if !strings.Contains(line, want) {
			t.Errorf("log line of the stream's panic lacks %q: %s", want, line)
		}
	}
	if n := panicCount(api, "/scoped.v1.Scoped/Logs"); n != "1" {
		t.Errorf("scoped_api_panics_total of Logs = %q, want 1", n)
	}

	// The server still serves, on the same connection and on a new one.
	if r, err := c.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: "acme", Payload: []byte("hi")}); err != nil || string(r.GetResult()) != "2" {
		t.Errorf("Invoke after the panics: %v, %v", r, err)
	}
	if _, err := c.ListScopes(ctx, &scopedv1.ListScopesRequest{Tenant: "acme"}); status.Code(err) != codes.Internal {
		t.Errorf("second panic: %v", err)
	}
	if n := panicCount(api, "/scoped.v1.Scoped/ListScopes"); n != "2" {
		t.Errorf("scoped_api_panics_total of ListScopes = %q, want 2", n)
	}
}

// An error that maps to no code is INTERNAL with an id, never its text; the
// log has the text under that id. A sentinel's text goes to the client.
func TestUnitAPIInternalError(t *testing.T) {
	_, logs, cc := startEdge(t)
	c := scopedv1.NewScopedClient(cc)
	ctx := edgeCtx(t)

	_, err := c.ListTenants(ctx, &scopedv1.ListTenantsRequest{})
	id := errorID(t, err)
	if strings.Contains(err.Error(), "/var/lib") {
		t.Errorf("the answer names a host path: %v", err)
	}
	if !strings.Contains(logs.String(), "error_id="+id) || !strings.Contains(logs.String(), "/var/lib/scoped/tenants.json") {
		t.Errorf("the log lacks the error under id %s:\n%s", id, logs)
	}

	_, err = c.GetUsage(ctx, &scopedv1.GetUsageRequest{Tenant: "acme"})
	if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != "invalid argument: from and to are required" {
		t.Errorf("bad tenant: %v, want InvalidArgument with the sentinel's text", err)
	}
}

// rawCodec sends a message the test encoded before: the client allocates
// nothing of its size while the server's allocations are measured.
type rawCodec struct{}

type rawMsg []byte

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(rawMsg); ok {
		return mem.BufferSlice{mem.SliceBuffer(r)}, nil
	}
	b, err := proto.Marshal(v.(proto.Message))
	return mem.BufferSlice{mem.SliceBuffer(b)}, err
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

func (rawCodec) Name() string { return "proto" }

// allocated is how many bytes the process allocated while f ran.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// Every method but Deploy is held to limits.max_payload plus headroom; a
// longer request is refused by its length before it is read.
func TestUnitAPIRequestCaps(t *testing.T) {
	api, _, cc := startEdge(t)
	c := scopedv1.NewScopedClient(cc)
	ctx := edgeCtx(t)
	maxPayload := int(api.conf().Limits.MaxPayload)
	if api.maxRequest() != maxPayload+requestHeadroom {
		t.Fatalf("maxRequest %d", api.maxRequest())
	}
	const big = 10 << 20
	isTooLarge := func(err error) bool {
		return status.Code(err) == codes.ResourceExhausted && strings.Contains(err.Error(), "larger than this method accepts")
	}

	// An Invoke of 10 MiB: refused, and the daemon did not read it. The
	// request is encoded before, so that what is measured is the server's.
	raw, err := proto.Marshal(&scopedv1.InvokeRequest{Tenant: "acme", Payload: bytes.Repeat([]byte{'x'}, big)})
	if err != nil {
		t.Fatal(err)
	}
	var refusedAlloc uint64
	for range 3 { // the smallest of three: other goroutines allocate too
		var resp scopedv1.InvokeResponse
		n := allocated(func() {
			err = cc.Invoke(ctx, "/scoped.v1.Scoped/Invoke", rawMsg(raw), &resp, grpc.ForceCodecV2(rawCodec{}))
		})
		if !isTooLarge(err) {
			t.Fatalf("Invoke of 10 MiB: %v, want ResourceExhausted", err)
		}
		if refusedAlloc == 0 || n < refusedAlloc {
			refusedAlloc = n
		}
	}
	// The same bytes as a Deploy, which the server reads whole.
	rawDeploy, err := proto.Marshal(&scopedv1.DeployRequest{Tenant: "acme",
		Bundle: &scopedv1.Bundle{Files: []*scopedv1.File{{Path: "blob", Content: bytes.Repeat([]byte{'x'}, big)}}}})
	if err != nil {
		t.Fatal(err)
	}
	var dresp scopedv1.DeployResponse
	readAlloc := allocated(func() {
		err = cc.Invoke(ctx, "/scoped.v1.Scoped/Deploy", rawMsg(rawDeploy), &dresp, grpc.ForceCodecV2(rawCodec{}))
	})
	if err != nil || dresp.GetExtension().GetSize() != big {
		t.Fatalf("Deploy of 10 MiB: %v, %v", &dresp, err)
	}
	t.Logf("allocated while refusing an Invoke of 10 MiB: %d KiB; while reading a Deploy of 10 MiB: %d KiB",
		refusedAlloc>>10, readAlloc>>10)
	if refusedAlloc > big/4 || refusedAlloc > readAlloc/4 {
		t.Errorf("refusing 10 MiB allocated %d KiB (reading them %d KiB)", refusedAlloc>>10, readAlloc>>10)
	}
	if api.capFallback.Load() {
		t.Error("requests were capped after reading: grpc-go's transport stream no longer offers readRequest's calls")
	}

	// Just under the payload cap, with the most metadata Invoke takes: served.
	md := map[string]string{}
	for i := range 64 {
		md[strings.Repeat("k", 125)+strconv.Itoa(100+i)] = strings.Repeat("v", 4096)
	}
	r, err := c.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: "acme", Environment: "production", Extension: "hook",
		User: strings.Repeat("u", 63), Version: "v12", Payload: make([]byte, maxPayload), Metadata: md})
	if err != nil || string(r.GetResult()) != strconv.Itoa(maxPayload) {
		t.Errorf("Invoke at the payload cap: %v, %v", r, err)
	}
	// Just over the request cap: refused.
	_, err = c.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: "acme", Payload: make([]byte, api.maxRequest())})
	if !isTooLarge(err) {
		t.Errorf("Invoke over the request cap: %v, want ResourceExhausted", err)
	}
	// Compressed under the cap, over it once decompressed: refused.
	_, err = c.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: "acme", Payload: make([]byte, big)}, grpc.UseCompressor("gzip"))
	if !isTooLarge(err) {
		t.Errorf("gzip Invoke of 10 MiB: %v, want ResourceExhausted", err)
	}
	// Compressed and within it: served.
	if r, err := c.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: "acme", Payload: make([]byte, 1000)}, grpc.UseCompressor("gzip")); err != nil || string(r.GetResult()) != "1000" {
		t.Errorf("gzip Invoke of 1000 bytes: %v, %v", r, err)
	}
	// Other methods too, streaming ones included.
	if _, err := c.ListExtensions(ctx, &scopedv1.ListExtensionsRequest{Tenant: strings.Repeat("a", big)}); !isTooLarge(err) {
		t.Errorf("ListExtensions of 10 MiB: %v, want ResourceExhausted", err)
	}
	s, err := c.Logs(ctx, &scopedv1.LogsRequest{Scope: strings.Repeat("a", big)})
	if err == nil {
		_, err = s.Recv()
	}
	if !isTooLarge(err) {
		t.Errorf("Logs of 10 MiB: %v, want ResourceExhausted", err)
	}
	// Deploy takes a bundle of 20 MiB (the cap is 64 MiB).
	d, err := c.Deploy(ctx, &scopedv1.DeployRequest{Tenant: "acme",
		Bundle: &scopedv1.Bundle{Files: []*scopedv1.File{{Path: "blob", Content: make([]byte, 20<<20)}}}})
	if err != nil || d.GetExtension().GetSize() != 20<<20 {
		t.Errorf("Deploy of 20 MiB: %v, %v", d, err)
	}
	// The connection still serves.
	if r, err := c.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: "acme", Payload: []byte("ok")}); err != nil || string(r.GetResult()) != "2" {
		t.Errorf("Invoke after the refusals: %v, %v", r, err)
	}
}

func TestUnitEventsFor(t *testing.T) {
	at := time.Unix(1700000000, 0)
	events := []supervisor.ControlEvent{
		{At: at, Kind: "stepped_down", Scope: "globex.production", Tenant: "globex", Victims: []string{"acme.production", "initech.staging"},
			Level: 1, Reason: "weight 100 → 50: victim acme.production: run-queue p99 4ms, preempted 120/s by other scopes, victim initech.staging: run-queue p99 3ms; " +
				"globex.production made 90% of those preemptions (300/s), using 1.50 CPUs (tenant globex: 1.50 CPUs, entitled to 0.50); for 3 ticks"},
		{At: at, Kind: "stepped_down", Scope: "acme.batch", Tenant: "acme", Victims: []string{"acme.production", "globex.production"},
			Level: 1, Reason: "victim globex.production: …; acme.batch made 80%"},
		{At: at, Kind: "restored", Scope: "initech.staging", Tenant: "initech", Reason: "weight 100 back: initech.staging calm"},
	}
	all := func(string) bool { return true }
	acme := func(t string) bool { return t == "acme" }

	// All callers and admins see every event as it is.
	got := eventsFor(events, all, all)
	if len(got) != 3 || got[0].GetReason() != events[0].Reason || got[0].GetScope() != "globex.production" ||
		strings.Join(got[0].GetVictims(), ",") != "acme.production,initech.staging" {
		t.Fatalf("all: %v", got)
	}

	// acme's client sees the events that name its scopes, the others redacted.
	got = eventsFor(events, acme, acme)
	if len(got) != 2 {
		t.Fatalf("acme sees %d events, want 2: %v", len(got), got)
	}
	e := got[0]
	if e.GetScope() != redacted || e.GetTenant() != "" || strings.Join(e.GetVictims(), ",") != "acme.production,"+redacted {
		t.Errorf("acme, antagonist of another tenant: %v", e)
	}
	for _, leak := range []string{"globex", "initech"} {
		if strings.Contains(e.GetReason(), leak) {
			t.Errorf("reason names %s: %q", leak, e.GetReason())
		}
	}
	if want := "victim acme.production: run-queue p99 4ms"; !strings.Contains(e.GetReason(), want) ||
		!strings.Contains(e.GetReason(), "using 1.50 CPUs") || !strings.Contains(e.GetReason(), "(other tenant) made 90%") {
		t.Errorf("reason %q lost what acme may see", e.GetReason())
	}
	e = got[1]
	if e.GetScope() != "acme.batch" || e.GetTenant() != "acme" || strings.Join(e.GetVictims(), ",") != "acme.production,"+redacted ||
		e.GetReason() != "victim (other tenant): …; acme.batch made 80%" {
		t.Errorf("acme, its own antagonist: %v", e)
	}

	// A tenant asked for selects; may still decides what is redacted.
	initech := func(t string) bool { return t == "initech" }
	got = eventsFor(events, initech, all)
	if len(got) != 2 || got[0].GetScope() != "globex.production" || got[1].GetScope() != "initech.staging" {
		t.Errorf("admin, tenant initech: %v", got)
	}
	if got := eventsFor(events, func(t string) bool { return t == "hooli" }, all); len(got) != 0 {
		t.Errorf("tenant without events: %v", got)
	}
}

func TestUnitListEventsAccess(t *testing.T) {
	api := unitAPI()
	tenantCtx := context.WithValue(context.Background(), callerKey{}, caller{name: "app", tenants: map[string]bool{"acme": true}})
	if _, err := api.ListEvents(tenantCtx, &scopedv1.ListEventsRequest{Tenant: "globex"}); !errors.Is(err, supervisor.ErrPermission) {
		t.Errorf("acme's client asks for globex: %v, want supervisor.ErrPermission", err)
	}
	if _, err := api.ListEvents(tenantCtx, &scopedv1.ListEventsRequest{Tenant: "../x"}); !errors.Is(err, supervisor.ErrInvalid) {
		t.Errorf("bad tenant: %v, want supervisor.ErrInvalid", err)
	}
	if r, err := api.ListEvents(tenantCtx, &scopedv1.ListEventsRequest{Tenant: "acme"}); err != nil || r.GetControllerEnabled() {
		t.Errorf("acme's own: %v, %v (no controller)", r, err)
	}
	adminCtx := context.WithValue(context.Background(), callerKey{}, caller{name: "ops", admin: true, tenants: map[string]bool{}})
	if _, err := api.ListEvents(adminCtx, &scopedv1.ListEventsRequest{Tenant: "globex"}); err != nil {
		t.Errorf("admin asks for globex: %v", err)
	}
}
