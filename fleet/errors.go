package fleet

import (
	"context"
	"errors"
	"fmt"

	"github.com/scoped-io/scoped/fleet/record"
)

// Sentinel errors; the API edge maps them to gRPC codes.
var (
	// ErrUnavailable: etcd cannot be reached now (degraded mode); the
	// write was not made. UNAVAILABLE.
	ErrUnavailable = errors.New("fleet state unavailable: etcd unreachable")
	// ErrPolicyMismatch: this node's policy differs from the fleet's.
	ErrPolicyMismatch = errors.New("fleet policy mismatch")
	// ErrNodeTaken: another live daemon is registered under this node name.
	ErrNodeTaken = errors.New("fleet node name taken")
	// ErrNotFound: no such record (NOT_FOUND).
	ErrNotFound = errors.New("not found in the fleet")
	// ErrInvalid: a bad argument or record (INVALID_ARGUMENT).
	ErrInvalid = record.ErrInvalid
	// ErrStopped: the component is not running.
	ErrStopped = errors.New("fleet component not running")
)

// unavailable wraps an etcd error in ErrUnavailable, unless it is the
// caller's own cancellation.
func unavailable(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
}
