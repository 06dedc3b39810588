package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/metrics"
	"github.com/scoped-io/scoped/supervisor"
)

func TestUnitToStatus(t *testing.T) {
	if toStatus(nil) != nil {
		t.Fatal("toStatus(nil) != nil")
	}
	for _, c := range []struct {
		err  error
		code codes.Code
	}{
		{supervisor.ErrInvalid, codes.InvalidArgument},
		{supervisor.ErrTooLarge, codes.InvalidArgument},
		{supervisor.ErrNotFound, codes.NotFound},
		{supervisor.ErrPermission, codes.PermissionDenied},
		{supervisor.ErrUnauthorized, codes.Unauthenticated},
		{supervisor.ErrDeadline, codes.DeadlineExceeded},
		{supervisor.ErrOutOfMemory, codes.ResourceExhausted},
		{supervisor.ErrBusy, codes.ResourceExhausted},
		{supervisor.ErrWorker, codes.Unavailable},
		{supervisor.ErrStopping, codes.Unavailable},
		{supervisor.ErrLedger, codes.Unavailable},
		{supervisor.ErrHandler, codes.Aborted},
		{context.Canceled, codes.Canceled},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errors.New("open /var/lib/scoped/x: disk on fire"), codes.Internal},
		{supervisor.ErrConfig, codes.Internal},
	} {
		for _, err := range []error{
			c.err,
			fmt.Errorf("deploy acme/hook: %w", c.err),
			fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", c.err)),
			errors.Join(errors.New("first"), c.err),
		} {
			got := toStatus(err)
			st, ok := status.FromError(got)
			if !ok || st.Code() != c.code {
				t.Errorf("toStatus(%q) = %v, want %v", err, got, c.code)
				continue
			}
			if c.code == codes.Internal {
				// Not the error's text, which may name host paths.
				if st.Message() != "internal error" {
					t.Errorf("toStatus(%q) message %q", err, st.Message())
				}
			} else if st.Message() != err.Error() {
				t.Errorf("toStatus(%q) message %q", err, st.Message())
			}
		}
	}
	// A status error passes through unchanged.
	in := status.Error(codes.FailedPrecondition, "already")
	if got := toStatus(in); got != in {
		t.Errorf("toStatus(status) = %v", got)
	}
	// A status error wrapped in another (a worker's, say) does not choose
	// the code.
	if got := status.Code(toStatus(fmt.Errorf("call: %w", status.Error(codes.PermissionDenied, "x")))); got != codes.Internal {
		t.Errorf("wrapped status = %v, want Internal", got)
	}
	// The first sentinel of the documented order wins when an error wraps two.
	if got := status.Code(toStatus(fmt.Errorf("%w: %w", supervisor.ErrInvalid, supervisor.ErrNotFound))); got != codes.InvalidArgument {
		t.Errorf("supervisor.ErrInvalid+supervisor.ErrNotFound = %v", got)
	}
}

func unitAPI(clients ...supervisor.Client) *API {
	cfg := supervisor.DefaultConfig()
	cfg.Clients = clients
	return &API{s: &supervisor.Supervisor{}, conf: func() *supervisor.Config { return &cfg },
		log: slog.New(slog.DiscardHandler), metrics: metrics.New()}
}

func peerCtx(uid, gid uint32, token string) context.Context {
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: peerInfo{uid: uid, gid: gid, pid: 1}})
	if token != "" {
		ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+token))
	}
	return ctx
}

func TestUnitAuthenticate(t *testing.T) {
	const tokA = "token-of-app-a-0123456789"
	const tokCI = "token-of-ci-0123456789ab"
	api := unitAPI(
		supervisor.Client{Name: "app-a", UIDs: []uint32{1001}, Token: tokA, Tenants: []string{"acme", "globex"}},
		supervisor.Client{Name: "group-b", GIDs: []uint32{2002}, Tenants: []string{"initech"}},
		supervisor.Client{Name: "ci", Token: tokCI, Tenants: []string{"*"}},
		supervisor.Client{Name: "nothing", UIDs: []uint32{3003}},
	)
	type want struct {
		err   error
		all   bool
		may   []string
		mayNo []string
	}
	for _, c := range []struct {
		name string
		ctx  context.Context
		want want
	}{
		{"no peer", context.Background(), want{err: supervisor.ErrPermission}},
		{"not peercred", peer.NewContext(context.Background(), &peer.Peer{}), want{err: supervisor.ErrPermission}},
		{"root", peerCtx(0, 0, ""), want{all: true, may: []string{"acme", "anyone"}}},
		{"root with a bad token", peerCtx(0, 0, "wrong-token-0123456789"), want{all: true}},
		{"by uid", peerCtx(1001, 100, ""), want{may: []string{"acme", "globex"}, mayNo: []string{"initech", "other"}}},
		{"by gid", peerCtx(5000, 2002, ""), want{may: []string{"initech"}, mayNo: []string{"acme"}}},
		{"uid and gid", peerCtx(1001, 2002, ""), want{may: []string{"acme", "globex", "initech"}, mayNo: []string{"other"}}},
		{"by token", peerCtx(4000, 4000, tokA), want{may: []string{"acme", "globex"}, mayNo: []string{"initech"}}},
		{"wildcard token", peerCtx(4000, 4000, tokCI), want{all: true, may: []string{"anyone"}}},
		{"unknown uid", peerCtx(4000, 4000, ""), want{err: supervisor.ErrPermission}},
		{"unknown token", peerCtx(4000, 4000, "wrong-token-0123456789"), want{err: supervisor.ErrPermission}},
		{"prefix of a token", peerCtx(4000, 4000, tokA[:len(tokA)-1]), want{err: supervisor.ErrPermission}},
		{"token without Bearer", peer.NewContext(metadata.NewIncomingContext(context.Background(),
			metadata.Pairs("authorization", tokA)), &peer.Peer{AuthInfo: peerInfo{uid: 4000, gid: 4000}}), want{err: supervisor.ErrPermission}},
		{"client without tenants", peerCtx(3003, 3003, ""), want{mayNo: []string{"acme"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := api.authenticate(c.ctx)
			if c.want.err != nil {
				if !errors.Is(err, c.want.err) {
					t.Fatalf("authenticate = %+v, %v; want %v", got, err, c.want.err)
				}
				if st, _ := statusOf(err); status.Code(st) != codes.PermissionDenied {
					t.Fatalf("maps to %v", status.Code(st))
				}
				return
			}
			if err != nil {
				t.Fatalf("authenticate: %v", err)
			}
			if got.all != c.want.all {
				t.Errorf("all = %v, want %v", got.all, c.want.all)
			}
			for _, tn := range c.want.may {
				if !got.may(tn) {
					t.Errorf("%s may not act for %s", got.name, tn)
				}
			}
			for _, tn := range c.want.mayNo {
				if got.may(tn) {
					t.Errorf("%s may act for %s", got.name, tn)
				}
			}
		})
	}
}

func TestUnitMayAct(t *testing.T) {
	ctx := context.WithValue(context.Background(), callerKey{}, caller{name: "app", tenants: map[string]bool{"acme": true}})
	if _, err := mayAct(ctx, "acme"); err != nil {
		t.Errorf("mayAct(acme) = %v", err)
	}
	if _, err := mayAct(ctx, "globex"); !errors.Is(err, supervisor.ErrPermission) {
		t.Errorf("mayAct(globex) = %v, want supervisor.ErrPermission", err)
	}
	for _, bad := range []string{"", "../acme", "ACME", "*", strings.Repeat("a", 70)} {
		if _, err := mayAct(ctx, bad); !errors.Is(err, supervisor.ErrInvalid) {
			t.Errorf("mayAct(%q) = %v, want supervisor.ErrInvalid", bad, err)
		}
	}
	// No caller in the context: nothing is allowed.
	if _, err := mayAct(context.Background(), "acme"); !errors.Is(err, supervisor.ErrPermission) {
		t.Errorf("mayAct without caller = %v", err)
	}
	// A wildcard client may act for any valid tenant, never for an invalid one.
	all := context.WithValue(context.Background(), callerKey{}, caller{name: "ci", all: true})
	if _, err := mayAct(all, "anyone"); err != nil {
		t.Errorf("wildcard mayAct = %v", err)
	}
	if _, err := mayAct(all, "../x"); !errors.Is(err, supervisor.ErrInvalid) {
		t.Errorf("wildcard mayAct(../x) = %v", err)
	}
}

// A refusal with a retry hint (supervisor.RetryAfterError) carries it as a
// google.rpc.RetryInfo, with its sentinel's code: what the supervisor's
// tests of spend caps, max_scopes and tiers' rates hand to the edge.
func TestUnitRetryHint(t *testing.T) {
	for _, c := range []struct {
		err  error
		code codes.Code
	}{
		{supervisor.ErrLedger, codes.Unavailable},
		{supervisor.ErrScopeLimit, codes.ResourceExhausted},
		{supervisor.ErrRateLimited, codes.ResourceExhausted},
		{supervisor.ErrConcurrency, codes.ResourceExhausted},
		{supervisor.ErrQuota, codes.ResourceExhausted},
	} {
		err := &supervisor.RetryAfterError{Err: fmt.Errorf("%w: tenant acme", c.err), After: 1500 * time.Millisecond}
		st := status.Convert(toStatus(err))
		hinted := false
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().AsDuration() == err.After {
				hinted = true
			}
		}
		if st.Code() != c.code || !hinted || st.Message() != err.Error() {
			t.Errorf("%v: %v %q %v, want %v with a RetryInfo of %s", c.err, st.Code(), st.Message(), st.Details(), c.code, err.After)
		}
	}
	if st := status.Convert(toStatus(fmt.Errorf("%w: x", supervisor.ErrSuspended))); st.Code() != codes.FailedPrecondition || len(st.Details()) != 0 {
		t.Errorf("suspended → %v %v, want FailedPrecondition without a hint", st.Code(), st.Details())
	}
}
