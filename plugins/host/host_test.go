package host

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc"

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

// TestInvokeErrors: the worker's errors come as the worker client of
// package plugins made them (no gRPC status there).
func TestInvokeErrors(t *testing.T) {
	w := &sandboxWorker{rpc: fakeRPC{}}
	if resp, err := w.Invoke(context.Background(), &workerv1.InvokeRequest{}); err != nil || string(resp.GetResult()) != "ok" {
		t.Fatalf("Invoke = %v, %v", resp, err)
	}
	big := fmt.Errorf("%w: grpc: received message larger than max", plugins.ErrReplyTooLarge)
	w.rpc = fakeRPC{err: big}
	if _, err := w.Invoke(context.Background(), &workerv1.InvokeRequest{}); !errors.Is(err, plugins.ErrReplyTooLarge) {
		t.Errorf("too large: %v, want ErrReplyTooLarge", err)
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
