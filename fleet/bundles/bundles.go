// Package bundles moves a stored bundle from one fleet node to another by
// its digest (scoped.fleet.v1.Bundles), over the fleet's TLS API with
// mutual TLS: Server serves the bundles of this node's store to peers with
// a certificate of the fleet's CA; Fetch gets one from a peer, within the
// daemon's bundle caps, and verifies its sha256 digest (computed as the
// store computes it, internal/bundle.Digest) before returning it. Nothing
// here stores anything: the caller imports what Fetch returned
// (supervisor.Store.Import, which checks the digest again).
//
// The package imports neither the supervisor nor the API, so that either
// may use it.
package bundles

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// ChunkSize is the most data one Chunk carries.
const ChunkSize = 1 << 20

// Limits bound one bundle: its total bytes and its number of files (the
// daemon's [limits] max_bundle and max_bundle_files).
type Limits struct {
	MaxBytes int64
	MaxFiles int
}

var (
	// ErrNotFound: the serving node stores no bundle with the digest (a
	// Source's error wraps it).
	ErrNotFound = errors.New("no bundle with this digest")
	// ErrTooLarge: the bundle is over the limits (the sender is cut off).
	ErrTooLarge = errors.New("bundle over the limits")
	// ErrProtocol: the peer sent what the protocol does not allow (data
	// without a file, a file shorter or longer than it said, a bad path).
	ErrProtocol = errors.New("bundle peer broke the protocol")
	// ErrNotNode: the caller presented no certificate of the fleet's CA.
	ErrNotNode = errors.New("not a fleet node")
)

// checkPath accepts a clean relative slash path of at most 255 bytes
// without "..", NUL or backslash (the store checks it again on import).
func checkPath(p string) error {
	switch {
	case p == "" || len(p) > 255:
		return fmt.Errorf("%w: file path of %d bytes", ErrProtocol, len(p))
	case strings.ContainsAny(p, "\x00\\"), path.IsAbs(p), path.Clean(p) != p, p == ".", p == "..", strings.HasPrefix(p, "../"):
		return fmt.Errorf("%w: file path %.80q is not clean and relative", ErrProtocol, p)
	}
	return nil
}
