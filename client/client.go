// Package client is the Go client a SaaS application imports to call the
// scoped daemon: Dial opens plain gRPC on the daemon's unix socket. For
// applications built on go-plugin, Plugin is the same API as a GRPCPlugin,
// reattached to the running daemon through the file it publishes
// (LoadReattach), in a way that the application's Kill can never stop it.
package client

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// DefaultSocket is where the daemon listens unless configured otherwise.
const DefaultSocket = "/run/scoped/scoped.sock"

// ErrNotRunning is returned by Dial when nothing serves on the socket: the
// socket file is missing, or it is left over and nobody listens on it.
var ErrNotRunning = errors.New("scoped is not running?")

// Client is a connection to the daemon. Call the API through the embedded
// scopedv1.ScopedClient (c.Invoke, c.Deploy, …); Close when done. A Client is
// safe for concurrent use and reconnects by itself when the daemon restarts.
type Client struct {
	scopedv1.ScopedClient
	conn *grpc.ClientConn
}

// Option configures Dial.
type Option func(*options)

type options struct {
	token   string
	maxMsg  int
	dialOpt []grpc.DialOption
}

// WithToken sends "authorization: Bearer <token>" with every call. The daemon
// maps the token to the tenants this client may act for; without a token it
// identifies the client by its uid and gid.
func WithToken(token string) Option {
	return func(o *options) { o.token = token }
}

// WithMaxMessageSize raises (or lowers) the largest message the client sends
// and receives, in bytes; gRPC's default is 4 MiB, which is smaller than a
// large bundle. The daemon applies its own caps.
func WithMaxMessageSize(n int) Option {
	return func(o *options) { o.maxMsg = n }
}

// WithDialOptions passes extra options to grpc.NewClient (interceptors,
// stats handlers, …).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpt = append(o.dialOpt, opts...) }
}

// Dial connects to the daemon on the unix socket at path (DefaultSocket when
// empty). It checks first that the socket exists and that something accepts
// on it, so a stopped daemon gives a clear error (wrapping ErrNotRunning)
// here rather than an Unavailable on the first call; ctx bounds that check.
func Dial(ctx context.Context, socket string, opts ...Option) (*Client, error) {
	if socket == "" {
		socket = DefaultSocket
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if err := probe(ctx, socket); err != nil {
		return nil, err
	}

	dopts := []grpc.DialOption{
		// A local unix socket: the kernel is the transport security, and the
		// daemon authenticates the peer with SO_PEERCRED or the token.
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}
	if o.token != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(TokenCredentials(o.token)))
	}
	if o.maxMsg > 0 {
		dopts = append(dopts, grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(o.maxMsg), grpc.MaxCallSendMsgSize(o.maxMsg)))
	}
	dopts = append(dopts, o.dialOpt...)
	conn, err := grpc.NewClient("unix://"+socket, dopts...)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", socket, err)
	}
	return &Client{ScopedClient: scopedv1.NewScopedClient(conn), conn: conn}, nil
}

// probe fails with a clear message when nothing can serve on socket.
func probe(ctx context.Context, socket string) error {
	fi, err := os.Stat(socket)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w no socket at %s", ErrNotRunning, socket)
	case err != nil:
		return fmt.Errorf("client: %w", err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("client: %s is not a unix socket", socket)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w nothing listens on %s (left over by a stopped daemon)", ErrNotRunning, socket)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("client: no permission to connect to %s: run as a user in the daemon's socket group: %w", socket, err)
	case err != nil:
		return fmt.Errorf("client: connect %s: %w", socket, err)
	}
	return c.Close()
}

// Conn returns the underlying gRPC connection, to build other clients on it
// (the gRPC health service, for example).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection; calls in flight fail with Canceled.
func (c *Client) Close() error { return c.conn.Close() }

// TokenCredentials returns per-RPC credentials that send
// "authorization: Bearer <token>" on every call, without requiring transport
// security (the daemon's socket is local). Use it with go-plugin as
// plugin.ClientConfig{GRPCDialOptions: []grpc.DialOption{
// grpc.WithPerRPCCredentials(client.TokenCredentials(tok))}}.
func TokenCredentials(token string) credentials.PerRPCCredentials {
	return bearer(token)
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }
