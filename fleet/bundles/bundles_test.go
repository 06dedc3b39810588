package bundles

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/internal/bundle"
	"github.com/scoped-io/scoped/internal/tlstest"
	fleetv1 "github.com/scoped-io/scoped/proto/fleet/v1"
)

var loopback = []net.IP{net.IPv4(127, 0, 0, 1)}

// testBundle has a manifest, a worker and a file of three chunks and a bit.
func testBundle() []bundle.File {
	big := bytes.Repeat([]byte("0123456789abcdef"), (3*ChunkSize+100)/16)
	return []bundle.File{
		{Path: "manifest.toml", Mode: 0o644, Content: []byte("runtime = \"go\"\nentrypoint = \"worker\"\n")},
		{Path: "worker", Mode: 0o755, Content: []byte("#!/bin/true\n")},
		{Path: "data/big.bin", Mode: 0o644, Content: big},
		{Path: "data/empty", Mode: 0o644},
	}
}

type fleetEnv struct {
	ca       *tlstest.CA
	addr     string
	node     *tls.Config // a node's client configuration (mutual TLS)
	app      *tls.Config // a client without a certificate
	stranger *tls.Config // a certificate of another CA
	lim      Limits
	srvLogs  *bytes.Buffer
}

// startServer serves impl (nil: a Server over files) with TLS on loopback,
// client certificates optional and verified against the test CA.
func startServer(t *testing.T, files []bundle.File, impl fleetv1.BundlesServer) *fleetEnv {
	t.Helper()
	ca := tlstest.NewCA(t)
	sc, sk := ca.Issue(t, "node-a", loopback)
	nc, nk := ca.Issue(t, "node-b", nil)
	xc, xk := ca.IssueSelfSigned(t, "node-x", nil)
	env := &fleetEnv{ca: ca, lim: Limits{MaxBytes: 8 << 20, MaxFiles: 16}, srvLogs: &bytes.Buffer{}}
	digest := bundle.Digest(files)
	if impl == nil {
		src := func(d string) ([]bundle.File, error) {
			if d != digest {
				return nil, fmt.Errorf("%w: %s", ErrNotFound, d)
			}
			return files, nil
		}
		impl = NewServer(src, func() Limits { return env.lim }, slog.New(slog.NewTextHandler(env.srvLogs, nil)))
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.ServerConfig(t, sc, sk, tls.VerifyClientCertIfGiven))),
		grpc.StreamInterceptor(testEdge))
	fleetv1.RegisterBundlesServer(srv, impl)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	env.addr = l.Addr().String()
	env.node = ca.ClientConfig(t, "127.0.0.1", nc, nk)
	env.app = ca.ClientConfig(t, "127.0.0.1", "", "")
	env.stranger = ca.ClientConfig(t, "127.0.0.1", xc, xk)
	return env
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestUnitFetchVerified(t *testing.T) {
	files := testBundle()
	env := startServer(t, files, nil)
	got, err := Fetch(ctxT(t), env.addr, env.node, bundle.Digest(files), env.lim)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if bundle.Digest(got) != bundle.Digest(files) || len(got) != len(files) {
		t.Fatalf("fetched %d files of digest %s", len(got), bundle.Digest(got))
	}
	// Unknown digest: NOT_FOUND.
	other := "sha256:" + strings.Repeat("0", 64)
	if _, err := Fetch(ctxT(t), env.addr, env.node, other, env.lim); status.Code(errors.Unwrap(err)) != codes.NotFound && status.Code(err) != codes.NotFound {
		t.Fatalf("unknown digest: %v, want NotFound", err)
	}
	// Over the receiver's limits: cut off.
	if _, err := Fetch(ctxT(t), env.addr, env.node, bundle.Digest(files), Limits{MaxBytes: 1 << 20, MaxFiles: 16}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("bundle over MaxBytes: %v, want ErrTooLarge", err)
	}
	if _, err := Fetch(ctxT(t), env.addr, env.node, bundle.Digest(files), Limits{MaxBytes: 8 << 20, MaxFiles: 3}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("bundle over MaxFiles: %v, want ErrTooLarge", err)
	}
	// Over the server's caps in force (lowered by a reload): refused.
	env.lim = Limits{MaxBytes: 1 << 20, MaxFiles: 16}
	if _, err := Fetch(ctxT(t), env.addr, env.node, bundle.Digest(files), Limits{MaxBytes: 8 << 20, MaxFiles: 16}); status.Code(errors.Unwrap(err)) != codes.FailedPrecondition {
		t.Fatalf("bundle over the server's caps: %v", err)
	}
}

func TestUnitFetchNeedsNodeCertificate(t *testing.T) {
	files := testBundle()
	env := startServer(t, files, nil)
	_, err := Fetch(ctxT(t), env.addr, env.app, bundle.Digest(files), env.lim)
	if st, _ := status.FromError(errors.Unwrap(err)); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), ErrNotNode.Error()) {
		t.Fatalf("a peer without a client certificate: %v, want Unauthenticated", err)
	}
	// A certificate of another CA fails the handshake.
	if _, err := Fetch(ctxT(t), env.addr, env.stranger, bundle.Digest(files), env.lim); status.Code(errors.Unwrap(err)) != codes.Unavailable {
		t.Fatalf("a peer with a stranger's certificate: %v, want Unavailable (handshake refused)", err)
	}
	// Plain TCP: no answer.
	conn, err := grpc.NewClient("passthrough:///"+env.addr, grpc.WithTransportCredentials(insecureCreds()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := FetchFrom(ctxT(t), conn, bundle.Digest(files), env.lim); status.Code(err) != codes.Unavailable {
		t.Fatalf("plain TCP: %v, want Unavailable", err)
	}
}

func TestUnitFetchBadDigest(t *testing.T) {
	env := startServer(t, testBundle(), nil)
	for _, d := range []string{"", "sha256:", "sha256:../../etc/passwd", "SHA256:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("A", 64)} {
		if _, err := Fetch(ctxT(t), env.addr, env.node, d, env.lim); !errors.Is(err, bundle.ErrInvalidDigest) {
			t.Fatalf("Fetch(%q): %v, want ErrInvalidDigest before dialing", d, err)
		}
		// The server refuses it too (a client that does not check).
		conn := dial(t, env.addr, env.node)
		s, err := fleetv1.NewBundlesClient(conn).Fetch(ctxT(t), &fleetv1.FetchRequest{Digest: d})
		if err == nil {
			_, err = s.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("server, digest %q: %v, want InvalidArgument", d, err)
		}
	}
}

func dial(t *testing.T, addr string, conf *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// liar is a peer that sends what send makes of the honest chunks.
type liar struct {
	fleetv1.UnimplementedBundlesServer
	send func(stream grpc.ServerStreamingServer[fleetv1.Chunk]) error
}

func (l liar) Fetch(_ *fleetv1.FetchRequest, s grpc.ServerStreamingServer[fleetv1.Chunk]) error {
	return l.send(s)
}

func sendAll(cs ...*fleetv1.Chunk) func(grpc.ServerStreamingServer[fleetv1.Chunk]) error {
	return func(s grpc.ServerStreamingServer[fleetv1.Chunk]) error {
		for _, c := range cs {
			if err := s.Send(c); err != nil {
				return err
			}
		}
		return nil
	}
}

// TestUnitFetchCorruptTransfer: a peer that flips one byte of the bundle
// it streams is caught by the digest.
func TestUnitFetchCorruptTransfer(t *testing.T) {
	files := testBundle()
	digest := bundle.Digest(files)
	flipped := make([]bundle.File, len(files))
	copy(flipped, files)
	flipped[2].Content = bytes.Clone(files[2].Content)
	flipped[2].Content[ChunkSize+7] ^= 0x01
	env := startServer(t, nil, NewServer(func(string) ([]bundle.File, error) { return flipped, nil },
		func() Limits { return Limits{MaxBytes: 8 << 20, MaxFiles: 16} }, slog.New(slog.DiscardHandler)))
	got, err := Fetch(ctxT(t), env.addr, env.node, digest, env.lim)
	if !errors.Is(err, ErrDigestMismatch) || got != nil {
		t.Fatalf("corrupt transfer: %d files, %v; want ErrDigestMismatch", len(got), err)
	}
}

func TestUnitFetchLyingPeer(t *testing.T) {
	digest := bundle.Digest(testBundle())
	mb := bytes.Repeat([]byte{'x'}, ChunkSize)
	for _, c := range []struct {
		name string
		send func(grpc.ServerStreamingServer[fleetv1.Chunk]) error
		want error
	}{
		{"nothing", sendAll(), ErrProtocol},
		{"data first", sendAll(&fleetv1.Chunk{Data: []byte("x")}), ErrProtocol},
		{"short file", sendAll(&fleetv1.Chunk{Path: "a", Size: 5, Data: []byte("abc")}), ErrProtocol},
		{"long file", sendAll(&fleetv1.Chunk{Path: "a", Size: 2, Data: []byte("abc")}), ErrProtocol},
		{"long continuation", sendAll(&fleetv1.Chunk{Path: "a", Size: 2, Data: []byte("ab")}, &fleetv1.Chunk{Data: []byte("c")}), ErrProtocol},
		{"dotdot", sendAll(&fleetv1.Chunk{Path: "../etc/passwd", Size: 1, Data: []byte("x")}), ErrProtocol},
		{"absolute", sendAll(&fleetv1.Chunk{Path: "/etc/passwd", Size: 1, Data: []byte("x")}), ErrProtocol},
		{"twice", sendAll(&fleetv1.Chunk{Path: "a", Size: 1, Data: []byte("x")}, &fleetv1.Chunk{Path: "a", Size: 1, Data: []byte("x")}), ErrProtocol},
		{"symlink", sendAll(&fleetv1.Chunk{Path: "a", Mode: 0o120777, Size: 1, Data: []byte("x")}), ErrProtocol},
		{"negative size", sendAll(&fleetv1.Chunk{Path: "a", Size: -1}), ErrTooLarge},
		{"huge size", sendAll(&fleetv1.Chunk{Path: "a", Size: 1 << 62}), ErrTooLarge},
		{"too many files", func(s grpc.ServerStreamingServer[fleetv1.Chunk]) error {
			for i := 0; i < 1000; i++ {
				if err := s.Send(&fleetv1.Chunk{Path: fmt.Sprintf("f%d", i), Size: 1, Data: []byte("x")}); err != nil {
					return err
				}
			}
			return nil
		}, ErrTooLarge},
		{"flood", func(s grpc.ServerStreamingServer[fleetv1.Chunk]) error {
			// Says 1 MiB per file, sends files until cut off.
			for i := 0; i < 100; i++ {
				if err := s.Send(&fleetv1.Chunk{Path: fmt.Sprintf("f%d", i), Size: ChunkSize, Data: mb}); err != nil {
					return err
				}
			}
			return nil
		}, ErrTooLarge},
		{"oversize chunk", sendAll(&fleetv1.Chunk{Path: "a", Size: 2 * ChunkSize, Data: bytes.Repeat([]byte{'x'}, 2*ChunkSize)}), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := startServer(t, nil, liar{send: c.send})
			got, err := Fetch(ctxT(t), env.addr, env.node, digest, Limits{MaxBytes: 4 << 20, MaxFiles: 16})
			if got != nil || err == nil {
				t.Fatalf("got %d files, %v", len(got), err)
			}
			if c.want == nil { // grpc's own receive cap
				if status.Code(errors.Unwrap(err)) != codes.ResourceExhausted {
					t.Fatalf("%v, want ResourceExhausted", err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("%v, want %v", err, c.want)
			}
		})
	}
}

// FuzzUnitReceiver: any sequence of chunks is either refused with an
// error or makes files within the limits whose sizes are what they said;
// never a panic.
func FuzzUnitReceiver(f *testing.F) {
	f.Add([]byte("\x01a\x00\x03abc"), int64(10), 3)
	f.Add([]byte("\x01a\x00\x02ab\x00\x00\x01c"), int64(10), 3)
	f.Add([]byte("\x00\x00\x01x"), int64(10), 3)
	f.Fuzz(func(t *testing.T, script []byte, maxBytes int64, maxFiles int) {
		if maxBytes <= 0 || maxFiles <= 0 {
			return
		}
		r := receiver{lim: Limits{MaxBytes: maxBytes, MaxFiles: maxFiles}, seen: map[string]bool{}}
		var failed bool
		// script: [hasPath][pathLen][path][size][dataLen][data]...
		for len(script) >= 3 && !failed {
			c := &fleetv1.Chunk{}
			if script[0]&1 == 1 {
				n := min(int(script[1]), len(script)-2)
				c.Path = string(script[2 : 2+n])
				script = script[2+n:]
				if len(script) < 2 {
					break
				}
				c.Size = int64(script[0]) - 8
				c.Mode = uint32(script[0]) << 3
				script = script[1:]
			} else {
				script = script[2:]
			}
			if len(script) == 0 {
				break
			}
			n := min(int(script[0]), len(script)-1)
			c.Data = script[1 : 1+n]
			script = script[1+n:]
			failed = r.add(c) != nil
		}
		if failed {
			return
		}
		files, err := r.done()
		if err != nil {
			return
		}
		var total int64
		for _, f := range files {
			total += int64(len(f.Content))
			if checkPath(f.Path) != nil || f.Mode&^0o777 != 0 {
				t.Fatalf("accepted file %+v", f.Path)
			}
		}
		if len(files) > maxFiles || total > maxBytes {
			t.Fatalf("%d files, %d bytes over %d, %d", len(files), total, maxFiles, maxBytes)
		}
	})
}

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }

// testEdge maps the service's sentinels as the API's edge does
// (api/status.go; tested there with the real edge).
func testEdge(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	err := h(srv, ss)
	for _, m := range []struct {
		err  error
		code codes.Code
	}{
		{ErrNotNode, codes.Unauthenticated}, {bundle.ErrInvalidDigest, codes.InvalidArgument},
		{ErrNotFound, codes.NotFound}, {ErrTooLarge, codes.FailedPrecondition},
	} {
		if errors.Is(err, m.err) {
			return status.Error(m.code, err.Error())
		}
	}
	return err
}
