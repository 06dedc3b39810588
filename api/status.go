package api

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/scoped-io/scoped/accounting"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/control"
	"github.com/scoped-io/scoped/fleet"
	"github.com/scoped-io/scoped/fleet/bundles"
	"github.com/scoped-io/scoped/internal/bundle"
	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/metering"
	"github.com/scoped-io/scoped/netns"
	"github.com/scoped-io/scoped/plugins"
	"github.com/scoped-io/scoped/sandbox"
	"github.com/scoped-io/scoped/supervisor"
)

// sentinel is the code of the errors that wrap err.
type sentinel struct {
	err  error
	code codes.Code
}

// supervisorCodes are the codes of the supervisor's sentinels, in order:
// the first that an error wraps decides. Their errors are written for the
// client, which gets the whole text.
var supervisorCodes = []sentinel{
	{supervisor.ErrInvalid, codes.InvalidArgument},
	{supervisor.ErrTooLarge, codes.InvalidArgument},
	{supervisor.ErrNotFound, codes.NotFound},
	{supervisor.ErrPermission, codes.PermissionDenied},
	{supervisor.ErrUnauthorized, codes.Unauthenticated},
	{supervisor.ErrDeadline, codes.DeadlineExceeded},
	{supervisor.ErrOutOfMemory, codes.ResourceExhausted},
	{supervisor.ErrBusy, codes.ResourceExhausted},
	{supervisor.ErrCPUTime, codes.ResourceExhausted},
	{supervisor.ErrRateLimited, codes.ResourceExhausted},
	{supervisor.ErrConcurrency, codes.ResourceExhausted},
	{supervisor.ErrQuota, codes.ResourceExhausted},
	{supervisor.ErrScopeLimit, codes.ResourceExhausted},
	{supervisor.ErrSuspended, codes.FailedPrecondition},
	{supervisor.ErrNetworkDenied, codes.FailedPrecondition},
	{supervisor.ErrWorker, codes.Unavailable},
	{supervisor.ErrStopping, codes.Unavailable},
	{supervisor.ErrLedger, codes.Unavailable},
	{supervisor.ErrUnhealthy, codes.Unavailable},
	{supervisor.ErrHandler, codes.Aborted},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// packageCodes are the codes of the sentinels of the packages beneath the
// supervisor, for an error that reaches the edge without a supervisor
// sentinel around it. Their errors may name host paths or addresses: the
// client gets the code and the sentinel's own text with an id, the log the
// whole error under that id.
var packageCodes = []sentinel{
	{ident.ErrInvalid, codes.InvalidArgument},
	{netns.ErrInvalidRule, codes.InvalidArgument},
	{netns.ErrExhausted, codes.ResourceExhausted},
	{netns.ErrNoUplink, codes.FailedPrecondition},
	{netns.ErrClosed, codes.Unavailable},
	{sandbox.ErrNoIDs, codes.ResourceExhausted},
	{sandbox.ErrStart, codes.Unavailable},
	{sandbox.ErrAddress, codes.Unavailable},
	{sandbox.ErrUnsafeSocket, codes.Unavailable},
	{cgroups.ErrBusy, codes.Unavailable},
	{accounting.ErrFull, codes.ResourceExhausted},
	{accounting.ErrClosed, codes.Unavailable},
	{control.ErrClosed, codes.Unavailable},
	{metering.ErrUnknownMeter, codes.InvalidArgument},
	{metering.ErrInvalid, codes.InvalidArgument},
	{metering.ErrTooLarge, codes.InvalidArgument},
	{metering.ErrClosed, codes.Unavailable},
	{metering.ErrLocked, codes.Unavailable},
	{plugins.ErrInvalidMetadata, codes.InvalidArgument},
	{plugins.ErrResultTooLarge, codes.InvalidArgument},
	{plugins.ErrReplyTooLarge, codes.InvalidArgument},
	{plugins.ErrHandlerPanic, codes.Aborted},
	{plugins.ErrExit, codes.Aborted},
	// The fleet's bundle service (to other nodes) and transfer.
	{bundles.ErrNotNode, codes.Unauthenticated},
	{bundle.ErrInvalidDigest, codes.InvalidArgument},
	{bundles.ErrNotFound, codes.NotFound},
	{bundles.ErrTooLarge, codes.FailedPrecondition},
	{bundles.ErrProtocol, codes.Unavailable},
	{bundle.ErrDigestMismatch, codes.DataLoss},
	// The fleet's state in etcd.
	{fleet.ErrNoBundle, codes.Unavailable}, // before ErrUnavailable, which it also is
	{fleet.ErrUnavailable, codes.Unavailable},
	{fleet.ErrStopped, codes.Unavailable},
	{fleet.ErrNotFound, codes.NotFound},
}

// toStatus maps sentinel errors to gRPC codes; the one place that does. An
// error that maps to none is INTERNAL without its text, which may name host
// paths; API.statusFor logs it.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := statusOf(err); ok {
		return st
	}
	return status.Error(codes.Internal, "internal error")
}

// statusFor is toStatus for a call of method by c: an internal error is
// logged whole with an id, and the client gets INTERNAL with only that id;
// so is an error of a package beneath the supervisor, with its code and its
// sentinel's text.
func (a *API) statusFor(method string, c caller, err error) error {
	if err == nil {
		return nil
	}
	if st, ok := statusOf(err); ok {
		return st
	}
	for _, s := range packageCodes {
		if errors.Is(err, s.err) {
			id := a.logError(slog.LevelWarn, method, c, "API call failed", "err", err)
			return status.Errorf(s.code, "%s (id %s)", s.err, id)
		}
	}
	return a.internalError(method, c, "API call failed", "err", err)
}

// statusOf is the status of a supervisor sentinel error (with the error's
// own text, for the client), of a context error, or a status error made at
// the edge or by grpc itself; false for any other error.
func statusOf(err error) (error, bool) {
	code := codes.OK
	for _, s := range supervisorCodes {
		if errors.Is(err, s.err) {
			code = s.code
			break
		}
	}
	if code == codes.OK {
		// Only a status error itself: one wrapped in another error may
		// come from a worker, which must not choose the code.
		if se, ok := err.(interface{ GRPCStatus() *status.Status }); ok && se.GRPCStatus().Code() != codes.OK {
			return err, true
		}
		return nil, false
	}
	st := status.New(code, err.Error())
	if ra := (*supervisor.RetryAfterError)(nil); errors.As(err, &ra) {
		// The standard hint (google.rpc.RetryInfo) for clients that read
		// details; the message says it too.
		if withHint, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(ra.After)}); derr == nil {
			st = withHint
		}
	}
	return st.Err(), true
}
