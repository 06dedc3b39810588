package plugins

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/scoped-io/scoped/internal/testutil"
	workerv1 "github.com/scoped-io/scoped/proto/worker/v1"
)

func TestMain(m *testing.M) { testutil.HelperMain(m) }

// workerHelper makes the test binary a worker that serves testWorker.
var workerHelper = testutil.Helper("plugins-worker", func([]string) int {
	Serve(HandlerFunc(testWorker))
	return 0
})

// testWorker prints to stdout and stderr, then echoes the payload.
func testWorker(_ context.Context, req *Request) ([]byte, error) {
	fmt.Println("stdout-of-" + req.InvocationID)
	fmt.Fprintln(os.Stderr, "stderr-of-"+req.InvocationID)
	return req.Payload, nil
}

// dial serves h in-process through go-plugin and returns the worker client
// a supervisor would dispense.
func dial(t *testing.T, h Handler) workerv1.WorkerClient {
	t.Helper()
	client, _ := plugin.TestPluginGRPCConn(t, false, PluginSet(h))
	// Close asks the server to shut down (its Shutdown RPC stops it).
	t.Cleanup(func() { _ = client.Close() })
	raw, err := client.Dispense(PluginName)
	if err != nil {
		t.Fatalf("dispense: %v", err)
	}
	w, ok := raw.(workerv1.WorkerClient)
	if !ok {
		t.Fatalf("dispensed %T, want workerv1.WorkerClient", raw)
	}
	return w
}

func TestInvokeResult(t *testing.T) {
	seen := make(chan *Request, 1)
	w := dial(t, HandlerFunc(func(_ context.Context, req *Request) ([]byte, error) {
		seen <- req
		return append([]byte("echo:"), req.Payload...), nil
	}))
	resp, err := w.Invoke(context.Background(), &workerv1.InvokeRequest{
		InvocationId: "inv1", Extension: "ext", Payload: []byte("hi"),
		Metadata: map[string]string{"k": "v"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.GetResult()) != "echo:hi" || resp.GetError() != "" {
		t.Errorf("response %q / error %q, want echo:hi and no error", resp.GetResult(), resp.GetError())
	}
	got := <-seen
	if got.InvocationID != "inv1" || got.Extension != "ext" || got.Metadata["k"] != "v" || string(got.Payload) != "hi" {
		t.Errorf("handler saw %+v", got)
	}
	if !got.Deadline.IsZero() {
		t.Errorf("Deadline %v for a call without one", got.Deadline)
	}
}

func TestInvokeHandlerError(t *testing.T) {
	w := dial(t, HandlerFunc(func(context.Context, *Request) ([]byte, error) {
		return []byte("ignored"), errors.New("no such customer\xff")
	}))
	resp, err := w.Invoke(context.Background(), &workerv1.InvokeRequest{InvocationId: "inv"})
	if err != nil {
		t.Fatalf("a handler error came back as a gRPC error: %v", err)
	}
	if resp.GetError() != "no such customer\uFFFD" || len(resp.GetResult()) != 0 {
		t.Errorf("response %q / error %q", resp.GetResult(), resp.GetError())
	}
}

func TestInvokeHandlerPanic(t *testing.T) {
	var calls atomic.Int32
	w := dial(t, HandlerFunc(func(context.Context, *Request) ([]byte, error) {
		if calls.Add(1) == 1 {
			panic("boom")
		}
		return []byte("ok"), nil
	}))
	resp, err := w.Invoke(context.Background(), &workerv1.InvokeRequest{InvocationId: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(resp.GetError(), ErrHandlerPanic.Error()) || !strings.Contains(resp.GetError(), "boom") {
		t.Errorf("error %q, want the panic", resp.GetError())
	}
	resp, err = w.Invoke(context.Background(), &workerv1.InvokeRequest{InvocationId: "p2"})
	if err != nil || string(resp.GetResult()) != "ok" {
		t.Errorf("the worker does not serve after a panic: %v %q", err, resp.GetResult())
	}
}

// deadlineHandler reports the deadline it sees and, with payload "wait",
// waits for its ctx.
func deadlineHandler(seen chan<- time.Time) Handler {
	return HandlerFunc(func(ctx context.Context, req *Request) ([]byte, error) {
		d, ok := ctx.Deadline()
		if !ok || !d.Equal(req.Deadline) {
			return nil, fmt.Errorf("ctx deadline %v (%v), Request.Deadline %v", d, ok, req.Deadline)
		}
		seen <- d
		if string(req.Payload) == "wait" {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, nil
	})
}

func TestDeadlineFromGRPC(t *testing.T) {
	seen := make(chan time.Time, 1)
	w := dial(t, deadlineHandler(seen))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	want, _ := ctx.Deadline()
	// deadline_ms says otherwise: the gRPC deadline wins.
	resp, err := w.Invoke(ctx, &workerv1.InvokeRequest{DeadlineMs: 60_000})
	if err != nil || resp.GetError() != "" {
		t.Fatalf("%v %q", err, resp.GetError())
	}
	if d := <-seen; d.Before(want.Add(-time.Second)) || d.After(want.Add(100*time.Millisecond)) {
		t.Errorf("handler deadline %v, caller's %v", d, want)
	}
}

func TestDeadlineFromDeadlineMs(t *testing.T) {
	seen := make(chan time.Time, 1)
	w := dial(t, deadlineHandler(seen))
	start := time.Now()
	resp, err := w.Invoke(context.Background(), &workerv1.InvokeRequest{DeadlineMs: 300, Payload: []byte("wait")})
	if err != nil {
		t.Fatal(err)
	}
	d := <-seen
	if d.Before(start.Add(250*time.Millisecond)) || d.After(time.Now().Add(time.Second)) {
		t.Errorf("handler deadline %v after the call, want ≈ 300ms", d.Sub(start))
	}
	if !strings.Contains(resp.GetError(), context.DeadlineExceeded.Error()) {
		t.Errorf("error %q, want the deadline", resp.GetError())
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("the call took %v", el)
	}
}

func TestNoHandler(t *testing.T) {
	if err := (&WorkerPlugin{}).GRPCServer(nil, nil); !errors.Is(err, ErrNoHandler) {
		t.Errorf("GRPCServer without a handler: %v", err)
	}
}

// TestServe runs the test binary as a real worker through go-plugin: the
// handshake works, and once serving, what the handler prints to os.Stdout
// and os.Stderr reaches the worker's stderr.
func TestServe(t *testing.T) {
	stderr := &testutil.SyncBuffer{}
	cmd := testutil.HelperCommand(t, workerHelper)
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          PluginSet(nil),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Stderr:           stderr,
		Logger:           hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: os.Stderr}),
		StartTimeout:     20 * time.Second,
	})
	defer client.Kill()
	rpc, err := client.Client()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rpc.Dispense(PluginName)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := raw.(workerv1.WorkerClient).Invoke(ctx, &workerv1.InvokeRequest{InvocationId: "serve1", Payload: []byte("ping")})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.GetResult()) != "ping" {
		t.Errorf("result %q", resp.GetResult())
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s := stderr.String()
		if strings.Contains(s, "stdout-of-serve1\n") && strings.Contains(s, "stderr-of-serve1\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the handler's output did not reach the worker's stderr; stderr:\n%s", s)
		}
	}
}
