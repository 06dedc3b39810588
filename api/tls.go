package api

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/scoped-io/scoped/fleet"
	"github.com/scoped-io/scoped/fleet/bundles"
	"github.com/scoped-io/scoped/internal/bundle"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
	"github.com/scoped-io/scoped/supervisor"
)

// The fleet's TLS API: with [fleet] on, the daemon serves the same Scoped
// API on a TCP listener ([fleet] listen) with TLS (1.3 at least), beside
// the unix socket, and the node-to-node bundle service on it alone.
//
// Over TCP there are no peer credentials: a caller is who its bearer token
// ([[client]] token) says, and a call without a valid token is refused
// UNAUTHENTICATED. A client certificate is optional for applications; when
// one is presented it must verify against [fleet] tls_ca (else the TLS
// handshake fails). The bundle service (scoped.fleet.v1.Bundles) requires
// one: its callers are other nodes (mutual TLS).

// TLSConfig is the TLS API's server configuration from [fleet]: the node's
// certificate and key (tls_cert, tls_key) and the fleet's CA (tls_ca) to
// verify the client certificates presented.
func TLSConfig(fc *fleet.Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(fc.TLSCert, fc.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("%w: fleet.tls_cert/tls_key: %w", supervisor.ErrConfig, err)
	}
	pool, err := loadCA(fc.TLSCA)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}, nil
}

func loadCA(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: fleet.tls_ca: %w", supervisor.ErrConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%w: fleet.tls_ca %s holds no PEM certificate", supervisor.ErrConfig, file)
	}
	return pool, nil
}

// ListenTCP opens the TLS API's TCP listener ([fleet] listen). TLS is the
// server's (NewTLSServer).
func ListenTCP(fc *fleet.Config) (net.Listener, error) {
	l, err := net.Listen("tcp", fc.Listen)
	if err != nil {
		return nil, fmt.Errorf("fleet.listen: %w", err)
	}
	return l, nil
}

// NewTLSServer returns the gRPC server of the TLS API over s: the Scoped
// API as on the socket (callers authenticated by token) and the bundle
// service for other nodes.
func NewTLSServer(s *supervisor.Supervisor, log *slog.Logger, conf *tls.Config) *grpc.Server {
	a := &API{s: s, conf: s.Config, log: log, metrics: s.Metrics()}
	return a.newTLSServer(a, conf, bundles.NewServer(bundleSource(s.BundleFilesByDigest), a.bundleLimits, log))
}

// bundleSource adapts the store's read by digest to the bundle service.
func bundleSource(read func(string) ([]supervisor.BundleFile, error)) bundles.Source {
	return func(digest string) ([]bundle.File, error) {
		files, err := read(digest)
		if errors.Is(err, supervisor.ErrNotFound) {
			return nil, fmt.Errorf("%w: %w", bundles.ErrNotFound, err)
		}
		return files, err
	}
}

// bundleLimits are the bundle caps in force.
func (a *API) bundleLimits() bundles.Limits {
	l := a.conf().Limits
	return bundles.Limits{MaxBytes: l.MaxBundle, MaxFiles: l.MaxBundleFiles}
}

// newTLSServer is newServer over TLS with conf, with the bundle service
// when bs is not nil.
func (a *API) newTLSServer(impl scopedv1.ScopedServer, conf *tls.Config, bs *bundles.Server) *grpc.Server {
	srv := a.newServerCreds(impl, credentials.NewTLS(conf))
	if bs != nil {
		bs.Register(srv)
	}
	return srv
}

// tokenCaller authenticates a caller over TCP (TLS): by its bearer token
// only.
func (a *API) tokenCaller(ctx context.Context) (caller, error) {
	token := bearerToken(ctx)
	if token == "" {
		return caller{}, fmt.Errorf("%w: a call over TCP needs a bearer token (a [[client]] token)", supervisor.ErrUnauthorized)
	}
	c := caller{tenants: map[string]bool{}}
	matched := false
	for _, cl := range a.conf().Clients {
		if cl.Token == "" || subtle.ConstantTimeCompare([]byte(token), []byte(cl.Token)) != 1 {
			continue
		}
		matched = true
		c.grant(cl)
	}
	if !matched {
		return caller{}, fmt.Errorf("%w: unknown token", supervisor.ErrUnauthorized)
	}
	return c, nil
}

// bundleStream guards a call of the bundle service: the peer must be a
// node (a verified client certificate) before its request is read, and the
// request (a digest) is read with a small cap.
func (a *API) bundleStream(srv any, w *wrappedStream, method string, h grpc.StreamHandler) error {
	node, err := bundles.CheckNode(w.ServerStream.Context())
	if err != nil {
		return a.statusFor(method, caller{}, err)
	}
	ctx := w.ServerStream.Context()
	w.recv = func(v any) error {
		if r, ok := grpc.ServerTransportStreamFromContext(ctx).(requestReader); ok {
			return readRequest(r, v, bundleRequestCap)
		}
		return w.ServerStream.RecvMsg(v)
	}
	return a.statusFor(method, caller{name: "node " + node}, h(srv, w))
}

// bundleRequestCap is the largest FetchRequest read (a digest is 71 bytes).
const bundleRequestCap = 1 << 10
