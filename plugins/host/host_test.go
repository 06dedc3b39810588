package host

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/plugins"
	workerv1 "github.com/scoped-io/scoped/proto/worker/v1"
)

type fakeRPC struct{ err error }

func (f fakeRPC) Invoke(context.Context, *workerv1.InvokeRequest, ...grpc.CallOption) (*workerv1.InvokeResponse, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &workerv1.InvokeResponse{Result: []byte("ok")}, nil
}

// TestInvokeErrors: gRPC's codes end here: a result over the message size
// is plugins.ErrResultTooLarge, any other failure carries the message only.
func TestInvokeErrors(t *testing.T) {
	w := &sandboxWorker{rpc: fakeRPC{}}
	if resp, err := w.Invoke(context.Background(), &workerv1.InvokeRequest{}); err != nil || string(resp.GetResult()) != "ok" {
		t.Fatalf("Invoke = %v, %v", resp, err)
	}
	w.rpc = fakeRPC{err: status.Error(codes.ResourceExhausted, "grpc: received message larger than max")}
	if _, err := w.Invoke(context.Background(), &workerv1.InvokeRequest{}); !errors.Is(err, plugins.ErrResultTooLarge) {
		t.Errorf("ResourceExhausted: %v, want ErrResultTooLarge", err)
	}
	w.rpc = fakeRPC{err: status.Error(codes.Unavailable, "connection reset")}
	_, err := w.Invoke(context.Background(), &workerv1.InvokeRequest{})
	if err == nil || err.Error() != "connection reset" || strings.Contains(err.Error(), "rpc error") {
		t.Errorf("Unavailable: %v, want the message only", err)
	}
	if _, isStatus := status.FromError(err); isStatus {
		t.Error("a gRPC status leaves the package")
	}
}

// TestNoRunner: a worker whose runner never started has no pid, counts as
// exited, and has no exit to wait for.
func TestNoRunner(t *testing.T) {
	w := &sandboxWorker{}
	if w.Pid() != 0 || !w.Exited() {
		t.Errorf("pid %d, exited %v", w.Pid(), w.Exited())
	}
	if n, exited := w.WaitExit(0); n != 0 || exited {
		t.Errorf("WaitExit = %d, %v", n, exited)
	}
}
