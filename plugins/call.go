package plugins

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	workerv1 "github.com/scoped-io/scoped/proto/worker/v1"
)

// ErrReplyTooLarge: a worker's reply was larger than the supervisor's
// connection to it accepts (its receive limit); the worker itself is fine.
var ErrReplyTooLarge = errors.New("worker reply too large")

// callErrors is the supervisor's worker client: a call's error is no gRPC
// status but ErrReplyTooLarge or the status's message, so that the
// supervisor reads no gRPC codes (only the API edge turns errors into
// codes). A worker cannot choose its error this way: its handler's error
// travels in the reply (InvokeResponse.Error), not as a status.
type callErrors struct{ c workerv1.WorkerClient }

func (w callErrors) Invoke(ctx context.Context, in *workerv1.InvokeRequest, opts ...grpc.CallOption) (*workerv1.InvokeResponse, error) {
	resp, err := w.c.Invoke(ctx, in, opts...)
	return resp, callError(err)
}

// callError is err of a call to a worker without its gRPC status.
func callError(err error) error {
	st, ok := status.FromError(err)
	switch {
	case err == nil || !ok:
		return err
	case st.Code() == codes.ResourceExhausted:
		return fmt.Errorf("%w: %s", ErrReplyTooLarge, st.Message())
	}
	return errors.New(st.Message())
}
