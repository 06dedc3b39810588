// Package plugins is the go-plugin glue between the supervisor and its
// workers: the handshake, the worker.v1 protocol as a go-plugin GRPCPlugin,
// the Go SDK an extension is written with (a small main calling Serve), and
// the exec runtime that runs any program once per invocation, payload on
// stdin and result from stdout. A worker's stdout belongs to go-plugin's
// handshake, so workers log to stderr (see Serve).
package plugins

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	workerv1 "github.com/scoped-io/scoped/proto/worker/v1"
)

// Handshake is the go-plugin handshake between the supervisor and a worker.
// A worker binary started without the cookie refuses to run.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "SCOPED_WORKER",
	MagicCookieValue: "Hs5mzvyyD22E40OCP0PGUyIRvQ0EQWe",
}

// PluginName is the name a worker's plugin is dispensed under.
const PluginName = "worker"

var (
	// ErrNoHandler: a worker plugin was asked to serve without a Handler.
	ErrNoHandler = errors.New("plugins: no handler to serve")
	// ErrHandlerPanic: the handler panicked; the invocation failed, the
	// worker keeps serving.
	ErrHandlerPanic = errors.New("handler panicked")
)

// Request is one invocation as a handler sees it.
type Request struct {
	InvocationID string
	Extension    string
	Payload      []byte
	Metadata     map[string]string // never nil
	// Deadline is the invocation's deadline (zero if it has none); the
	// handler's ctx carries the same deadline.
	Deadline time.Time
}

// Handler runs invocations. Invoke may be called concurrently. A returned
// error fails the invocation (its text reaches the caller); the worker keeps
// serving.
type Handler interface {
	Invoke(ctx context.Context, req *Request) ([]byte, error)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, req *Request) ([]byte, error)

// Invoke calls f.
func (f HandlerFunc) Invoke(ctx context.Context, req *Request) ([]byte, error) {
	return f(ctx, req)
}

// WorkerPlugin is the worker protocol as a go-plugin GRPCPlugin. On the
// worker side Handler serves the calls; on the supervisor side Handler is
// nil and dispensing PluginName yields a workerv1.WorkerClient.
type WorkerPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Handler Handler

	// firstCall, if set, runs once before the first invocation (Serve uses
	// it to hand stdout and stderr back to file descriptor 2).
	firstCall func()
}

var _ plugin.GRPCPlugin = (*WorkerPlugin)(nil)

// GRPCServer registers the worker service around p.Handler.
func (p *WorkerPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Handler == nil {
		return ErrNoHandler
	}
	srv := &server{h: p.Handler}
	if p.firstCall != nil {
		srv.first = sync.OnceFunc(p.firstCall)
	}
	workerv1.RegisterWorkerServer(s, srv)
	return nil
}

// GRPCClient returns a workerv1.WorkerClient on the plugin's connection,
// its errors without gRPC status (see callErrors).
func (p *WorkerPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return callErrors{workerv1.NewWorkerClient(c)}, nil
}

// PluginSet is the plugin set of a worker serving h, or, with h nil, the
// set a supervisor's go-plugin client is configured with.
func PluginSet(h Handler) plugin.PluginSet {
	return plugin.PluginSet{PluginName: &WorkerPlugin{Handler: h}}
}

// Serve is the Go SDK's entry point: an extension's main calls
//
//	plugins.Serve(plugins.HandlerFunc(func(ctx context.Context, req *plugins.Request) ([]byte, error) {
//		return req.Payload, nil
//	}))
//
// and Serve runs the worker until the supervisor stops it. Started without
// the supervisor's handshake cookie it prints an explanation and exits 1.
//
// The worker must not write to stdout before Serve has printed go-plugin's
// handshake line. go-plugin then points os.Stdout and os.Stderr at pipes of
// its own; Serve undoes that before the first invocation: from then on file
// descriptor 1 is a copy of descriptor 2, and os.Stdout and os.Stderr both
// write to the worker's stderr, where the supervisor collects and tags the
// lines. Log with log/slog or the log package to stderr.
func Serve(h Handler) {
	if h == nil {
		fmt.Fprintln(os.Stderr, ErrNoHandler)
		os.Exit(1)
	}
	stdout, stderr := os.Stdout, os.Stderr // before go-plugin swaps them
	p := &WorkerPlugin{Handler: h, firstCall: func() {
		// The handshake line is out (the supervisor is calling), so stdout
		// is free: send everything to stderr.
		_ = unix.Dup2(2, 1)
		os.Stdout, os.Stderr = stdout, stderr
	}}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         plugin.PluginSet{PluginName: p},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			// A pool of stream goroutines instead of one new goroutine
			// per call, whose stack grows (and is copied) on every call.
			return plugin.DefaultGRPCServer(append(opts, grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0)))))
		},
		// go-plugin's own messages: only what an operator should see, as
		// JSON lines the supervisor's go-plugin client recognises.
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: stderr, JSONFormat: true}),
	})
}

// server adapts a Handler to workerv1.WorkerServer.
type server struct {
	workerv1.UnimplementedWorkerServer
	h     Handler
	first func()
}

func (s *server) Invoke(ctx context.Context, in *workerv1.InvokeRequest) (*workerv1.InvokeResponse, error) {
	if s.first != nil {
		s.first()
	}
	if _, ok := ctx.Deadline(); !ok && in.GetDeadlineMs() > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(in.GetDeadlineMs())*time.Millisecond)
		defer cancel()
	}
	req := &Request{
		InvocationID: in.GetInvocationId(),
		Extension:    in.GetExtension(),
		Payload:      in.GetPayload(),
		Metadata:     in.GetMetadata(),
	}
	if d, ok := ctx.Deadline(); ok {
		req.Deadline = d
	}
	if req.Metadata == nil {
		req.Metadata = map[string]string{}
	}
	result, err := s.call(ctx, req)
	if err != nil {
		return &workerv1.InvokeResponse{Error: errorText(err)}, nil
	}
	return &workerv1.InvokeResponse{Result: result}, nil
}

// maxErrorText bounds the error text of a failed invocation.
const maxErrorText = 8 << 10

// errorText is err's text as a proto string may carry it: valid UTF-8,
// at most maxErrorText bytes, never empty.
func errorText(err error) string {
	msg := err.Error()
	if len(msg) > maxErrorText {
		msg = msg[:maxErrorText] + "…"
	}
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if msg == "" {
		msg = "handler failed"
	}
	return msg
}

// call runs the handler, turning a panic into an error (and its stack into
// stderr lines) so that one bad invocation does not take the worker down.
func (s *server) call(ctx context.Context, req *Request) (result []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "panic in invocation %s: %v\n%s", req.InvocationID, r, debug.Stack())
			result, err = nil, fmt.Errorf("%w: %v", ErrHandlerPanic, r)
		}
	}()
	return s.h.Invoke(ctx, req)
}
