package bundles

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/scoped-io/scoped/internal/bundle"
	fleetv1 "github.com/scoped-io/scoped/proto/fleet/v1"
)

// ErrDigestMismatch: what a peer sent is not the bundle the digest names
// (a corrupt transfer or a lying peer). Nothing of it may be used.
var ErrDigestMismatch = bundle.ErrDigestMismatch

// Fetch gets the bundle with digest from the node at addr (host:port) over
// TLS with tlsConf (this node's certificate and the fleet's CA), within
// lim, and returns its files once their digest is verified. A malformed
// digest is refused before dialing (bundle.ErrInvalidDigest); a peer that
// sends more than lim allows, or breaks the protocol, is cut off
// (ErrTooLarge, ErrProtocol); files of another digest are refused
// (ErrDigestMismatch). Errors of the call itself are gRPC statuses (NOT_FOUND
// for a digest the peer lacks).
func Fetch(ctx context.Context, addr string, tlsConf *tls.Config, digest string, lim Limits) ([]bundle.File, error) {
	if err := bundle.CheckDigest(digest); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)))
	if err != nil {
		return nil, fmt.Errorf("bundle fetch from %s: %w", addr, err)
	}
	defer conn.Close()
	files, err := FetchFrom(ctx, conn, digest, lim)
	if err != nil {
		return nil, fmt.Errorf("bundle fetch from %s: %w", addr, err)
	}
	return files, nil
}

// FetchFrom is Fetch over an existing connection.
func FetchFrom(ctx context.Context, conn grpc.ClientConnInterface, digest string, lim Limits) ([]bundle.File, error) {
	if err := bundle.CheckDigest(digest); err != nil {
		return nil, err
	}
	if lim.MaxBytes <= 0 || lim.MaxFiles <= 0 {
		return nil, fmt.Errorf("bundle fetch: limits %+v must be positive", lim)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // cuts the stream off on any early return
	stream, err := fleetv1.NewBundlesClient(conn).Fetch(ctx, &fleetv1.FetchRequest{Digest: digest},
		grpc.MaxCallRecvMsgSize(ChunkSize+4096))
	if err != nil {
		return nil, err
	}
	r := receiver{lim: lim, seen: map[string]bool{}}
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := r.add(c); err != nil {
			return nil, err
		}
	}
	files, err := r.done()
	if err != nil {
		return nil, err
	}
	if err := bundle.Verify(files, digest); err != nil {
		return nil, err
	}
	return files, nil
}

// receiver puts chunks together into files, within the limits.
type receiver struct {
	lim   Limits
	files []bundle.File
	want  int64 // the length the current file said it has
	total int64 // bytes announced so far (every file's size)
	seen  map[string]bool
}

func (r *receiver) add(c *fleetv1.Chunk) error {
	if len(c.GetData()) > ChunkSize {
		return fmt.Errorf("%w: a chunk of %d bytes (at most %d)", ErrProtocol, len(c.GetData()), ChunkSize)
	}
	if c.GetPath() != "" {
		if err := r.finish(); err != nil {
			return err
		}
		p := c.GetPath()
		if err := checkPath(p); err != nil {
			return err
		}
		if r.seen[p] {
			return fmt.Errorf("%w: %.80q sent twice", ErrProtocol, p)
		}
		if c.GetMode()&^0o777 != 0 {
			return fmt.Errorf("%w: %.80q has mode %#o (not a regular file)", ErrProtocol, p, c.GetMode())
		}
		if len(r.files) >= r.lim.MaxFiles {
			return fmt.Errorf("%w: more than %d files", ErrTooLarge, r.lim.MaxFiles)
		}
		size := c.GetSize()
		if size < 0 || size > r.lim.MaxBytes-r.total {
			return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, r.lim.MaxBytes)
		}
		r.seen[p] = true
		r.total += size
		r.want = size
		r.files = append(r.files, bundle.File{Path: p, Mode: c.GetMode(), Content: make([]byte, 0, min(size, ChunkSize))})
	} else if c.GetMode() != 0 || c.GetSize() != 0 {
		return fmt.Errorf("%w: a continuation chunk with a mode or size", ErrProtocol)
	}
	if len(c.GetData()) == 0 {
		if c.GetPath() == "" {
			return fmt.Errorf("%w: an empty continuation chunk", ErrProtocol)
		}
		return nil
	}
	if len(r.files) == 0 {
		return fmt.Errorf("%w: data before the first file", ErrProtocol)
	}
	f := &r.files[len(r.files)-1]
	if int64(len(f.Content))+int64(len(c.GetData())) > r.want {
		return fmt.Errorf("%w: %.80q is longer than the %d bytes it said", ErrProtocol, f.Path, r.want)
	}
	f.Content = append(f.Content, c.GetData()...)
	return nil
}

// finish checks that the current file got all its bytes.
func (r *receiver) finish() error {
	if len(r.files) == 0 {
		return nil
	}
	if f := r.files[len(r.files)-1]; int64(len(f.Content)) != r.want {
		return fmt.Errorf("%w: %.80q has %d of the %d bytes it said", ErrProtocol, f.Path, len(f.Content), r.want)
	}
	return nil
}

func (r *receiver) done() ([]bundle.File, error) {
	if err := r.finish(); err != nil {
		return nil, err
	}
	if len(r.files) == 0 {
		return nil, fmt.Errorf("%w: no files", ErrProtocol)
	}
	return r.files, nil
}
