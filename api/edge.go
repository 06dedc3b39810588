package api

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/scoped-io/scoped/internal/ident"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// What the API edge guards beyond authentication: a handler's panic and an
// error no sentinel names become INTERNAL with an id that the log line
// carries (never the panic or the error's text, which may name host paths),
// and every request but Deploy's is capped at the payload cap plus
// requestHeadroom before its body is read.

// newErrorID names one internal error in the answer and in the log.
func newErrorID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// internalError logs what went wrong with the call, whole, and returns what
// the client sees: INTERNAL with the id of the log line.
func (a *API) internalError(method string, c caller, msg string, attrs ...any) error {
	id := a.logError(slog.LevelError, method, c, msg, attrs...)
	return status.Errorf(codes.Internal, "internal error (id %s)", id)
}

// logError logs what went wrong with the call, whole, under a new id, and
// returns the id.
func (a *API) logError(level slog.Level, method string, c caller, msg string, attrs ...any) string {
	id := newErrorID()
	attrs = append([]any{"method", method, "error_id", id}, attrs...)
	if c.name != "" {
		attrs = append(attrs, "client", c.name)
	}
	a.log.Log(context.Background(), level, msg, attrs...)
	return id
}

// panicked turns a handler's panic into INTERNAL: it logs the panic with its
// stack, the method, the caller and the tenant the request names (when it
// is a valid id), and counts it in scoped_api_panics_total.
func (a *API) panicked(ctx context.Context, method string, c caller, tenant string, p any) error {
	var attrs []any
	if pr, ok := peer.FromContext(ctx); ok {
		if pi, ok := pr.AuthInfo.(peerInfo); ok {
			attrs = append(attrs, "peer_uid", pi.uid, "peer_pid", pi.pid)
		}
	}
	if ident.Check("tenant", tenant) == nil {
		attrs = append(attrs, "tenant", tenant)
	}
	msg := fmt.Sprint(p)
	if len(msg) > 1024 {
		msg = msg[:1024] + "…"
	}
	attrs = append(attrs, "panic", msg, "stack", string(debug.Stack()))
	if a.metrics != nil {
		a.metrics.IncAPIPanic(method)
	}
	return a.internalError(method, c, "API handler panicked", attrs...)
}

// tenantOf is the tenant a request names, if its message has one.
func tenantOf(req any) string {
	if r, ok := req.(interface{ GetTenant() string }); ok {
		return r.GetTenant()
	}
	return ""
}

// --- request caps -------------------------------------------------------

// requestHeadroom is what a request may carry beyond limits.max_payload:
// Invoke's ids, timeout and up to 64 metadata entries of 128 + 4096 bytes.
const requestHeadroom = 512 << 10

// maxRequest is the largest request message of every method but Deploy,
// whose limit is the server's (limits.max_bundle plus 1 MiB, set when the
// server is made).
func (a *API) maxRequest() int {
	return int(min(a.conf().Limits.MaxPayload, 1<<30)) + requestHeadroom
}

// register registers impl (the API itself, or a stand-in in tests) as the
// Scoped service, with a guard around each unary method: its peer must be a
// client before its request is read (the interceptor checks again and
// decides what the caller may do), and every request but Deploy's is read
// with maxRequest as its limit. (The stream interceptor caps the request of
// a streaming method, after it has authenticated the peer.)
//
// grpc-go's limit (MaxRecvMsgSize) is one per server and must let Deploy's
// bundle in; it is checked against a message's 5-byte length prefix before
// the message is read. The generated unary handlers decode the request
// before any interceptor runs, so the per-method limit is applied in the
// decode function the guard hands them: it reads the length prefix itself
// from the transport stream in the call's context and refuses a longer
// message with RESOURCE_EXHAUSTED without reading it (see readRequest).
func (a *API) register(r grpc.ServiceRegistrar, impl scopedv1.ScopedServer) {
	sd := scopedv1.Scoped_ServiceDesc
	sd.Methods = slices.Clone(sd.Methods)
	for i, m := range sd.Methods {
		h, capped := m.Handler, m.MethodName != "Deploy"
		method := "/" + sd.ServiceName + "/" + m.MethodName
		sd.Methods[i].Handler = func(srv any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (resp any, err error) {
			defer func() { // in the decoding; the interceptor recovers the handler's
				if p := recover(); p != nil {
					resp, err = nil, a.panicked(ctx, method, caller{}, "", p)
				}
			}()
			if _, err := a.authenticate(ctx); err != nil {
				return nil, a.statusFor(method, caller{}, err)
			}
			if capped {
				dec = a.cappedDecoder(ctx, dec)
			}
			return h(srv, ctx, dec, in)
		}
	}
	r.RegisterService(&sd, impl)
}

// requestReader is what grpc-go's server transport stream (the
// ServerTransportStream in a call's context, grpc-go v1.85) offers to read
// a request: the same calls its own decoding makes.
type requestReader interface {
	ReadMessageHeader(header []byte) error
	Read(n int) (mem.BufferSlice, error)
	RecvCompress() string
}

// cappedDecoder returns a decode function that reads the call's request
// with maxRequest as its limit.
func (a *API) cappedDecoder(ctx context.Context, dec func(any) error) func(any) error {
	limit := a.maxRequest()
	return func(v any) error {
		if r, ok := grpc.ServerTransportStreamFromContext(ctx).(requestReader); ok {
			return readRequest(r, v, limit)
		}
		// A grpc-go whose transport stream reads otherwise: the request is
		// read within the server's limit and refused after.
		if a.capFallback.CompareAndSwap(false, true) {
			a.log.Warn("API: requests are checked against their limit only after they are read (grpc-go's transport stream changed)")
		}
		if err := dec(v); err != nil {
			return err
		}
		if m, ok := v.(proto.Message); ok {
			if n := proto.Size(m); n > limit {
				return tooLarge(n, limit)
			}
		}
		return nil
	}
}

func tooLarge(n, limit int) error {
	return status.Errorf(codes.ResourceExhausted,
		"request message of %d bytes is larger than this method accepts (%d: limits.max_payload + %d KiB)",
		n, limit, requestHeadroom>>10)
}

// readRequest reads the one request message of a call that does not stream
// requests, as grpc-go's own decoding does, but with limit: a length prefix
// over it is refused before the message is read, a compressed message is
// held to it after decompression too.
func readRequest(r requestReader, v any, limit int) error {
	var hdr [5]byte
	if err := r.ReadMessageHeader(hdr[:]); err != nil {
		if err == io.EOF {
			return status.Error(codes.Internal, "cardinality violation: received no request message from non-client-streaming RPC")
		}
		return recvError(err)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if uint64(n) > uint64(limit) {
		return tooLarge(int(min(n, 1<<31-1)), limit)
	}
	data, err := r.Read(int(n))
	if err != nil {
		return recvError(err)
	}
	defer data.Free()
	switch hdr[0] {
	case 0:
	case 1:
		name := r.RecvCompress()
		c := encoding.GetCompressor(name)
		if c == nil || name == encoding.Identity {
			return status.Errorf(codes.Internal, "grpc: compressed flag set with encoding %q", name)
		}
		src := data.Reader()
		defer src.Close()
		dr, err := c.Decompress(src)
		if err != nil {
			return status.Errorf(codes.Internal, "grpc: failed to decompress the message: %v", err)
		}
		if cl, ok := dr.(io.Closer); ok {
			defer cl.Close()
		}
		out, err := mem.ReadAll(io.LimitReader(dr, int64(limit)+1), mem.DefaultBufferPool())
		defer out.Free()
		if err != nil {
			return status.Errorf(codes.Internal, "grpc: failed to read decompressed data: %v", err)
		}
		if out.Len() > limit {
			return tooLarge(out.Len(), limit)
		}
		data = out
	default:
		return status.Errorf(codes.Internal, "grpc: received unexpected payload format %d", hdr[0])
	}
	if err := encoding.GetCodecV2(protocodec.Name).Unmarshal(data, v); err != nil {
		return status.Errorf(codes.Internal, "grpc: failed to unmarshal the received message: %v", err)
	}
	// One message, then the end of the request stream.
	switch err := r.ReadMessageHeader(hdr[:]); err {
	case io.EOF:
		return nil
	case nil:
		return status.Error(codes.Internal, "cardinality violation: received multiple request messages for non-client-streaming RPC")
	default:
		return recvError(err)
	}
}

// recvError is a read error of the transport stream as a status: it is one
// already, or the stream broke.
func recvError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	if err == io.ErrUnexpectedEOF {
		return status.Error(codes.Internal, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}
