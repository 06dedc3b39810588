package bundles

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/scoped-io/scoped/internal/bundle"
	fleetv1 "github.com/scoped-io/scoped/proto/fleet/v1"
)

// Source reads the files of a stored bundle by digest; an unknown digest is
// an error wrapping ErrNotFound.
type Source func(digest string) ([]bundle.File, error)

// Server serves Fetch from a Source.
type Server struct {
	fleetv1.UnimplementedBundlesServer
	src    Source
	limits func() Limits // the caps in force (a reload may change them)
	log    *slog.Logger
}

// NewServer serves src's bundles within limits' caps, logging to log.
func NewServer(src Source, limits func() Limits, log *slog.Logger) *Server {
	return &Server{src: src, limits: limits, log: log}
}

// Register registers the service on r (the fleet's TLS server only).
func (s *Server) Register(r grpc.ServiceRegistrar) { fleetv1.RegisterBundlesServer(r, s) }

// MethodPrefix starts the full names of the service's methods.
const MethodPrefix = "/" + "scoped.fleet.v1.Bundles" + "/"

// IsMethod reports whether a full method name is one of the service's.
func IsMethod(fullMethod string) bool { return strings.HasPrefix(fullMethod, MethodPrefix) }

// CheckNode checks that the call's peer is a fleet node: a TLS peer whose
// certificate verified against the fleet's CA (the server's ClientCAs). It
// returns the certificate's common name, or an error wrapping ErrNotNode.
func CheckNode(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", fmt.Errorf("%w: no peer", ErrNotNode)
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", fmt.Errorf("%w: not a TLS connection", ErrNotNode)
	}
	chains := ti.State.VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return "", fmt.Errorf("%w: no client certificate of the fleet's CA", ErrNotNode)
	}
	return chains[0][0].Subject.CommonName, nil
}

// Fetch streams the bundle with the requested digest. Its errors are
// sentinels (ErrNotNode, bundle.ErrInvalidDigest, ErrNotFound, ErrTooLarge)
// or the Source's, which the API's edge maps to codes (api/status.go).
func (s *Server) Fetch(req *fleetv1.FetchRequest, stream grpc.ServerStreamingServer[fleetv1.Chunk]) error {
	ctx := stream.Context()
	node, err := CheckNode(ctx)
	if err != nil {
		return err
	}
	digest := req.GetDigest()
	if err := bundle.CheckDigest(digest); err != nil {
		return err
	}
	files, err := s.src(digest)
	if err != nil {
		return fmt.Errorf("bundle %s for node %s: %w", digest, node, err)
	}
	if err := checkBounds(files, s.limits()); err != nil {
		return fmt.Errorf("stored bundle %s is over the caps in force: %w", digest, err)
	}
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b bundle.File) int { return strings.Compare(a.Path, b.Path) })
	for _, f := range files {
		data := f.Content
		first := &fleetv1.Chunk{Path: f.Path, Mode: bundle.NormMode(f.Mode), Size: int64(len(data))}
		n := min(len(data), ChunkSize)
		first.Data, data = data[:n], data[n:]
		if err := stream.Send(first); err != nil {
			return err
		}
		for len(data) > 0 {
			n := min(len(data), ChunkSize)
			if err := stream.Send(&fleetv1.Chunk{Data: data[:n]}); err != nil {
				return err
			}
			data = data[n:]
		}
	}
	s.log.Debug("bundle served", "peer_node", node, "digest", digest, "files", len(files))
	return nil
}

// checkBounds checks a bundle against the limits.
func checkBounds(files []bundle.File, lim Limits) error {
	if len(files) > lim.MaxFiles {
		return fmt.Errorf("%w: %d files, at most %d", ErrTooLarge, len(files), lim.MaxFiles)
	}
	var size int64
	for _, f := range files {
		size += int64(len(f.Content))
	}
	if size > lim.MaxBytes {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, size, lim.MaxBytes)
	}
	return nil
}
