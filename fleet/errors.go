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
	// ErrNoBundle: no node provided a verified copy of a bundle this node
	// must run (none holds it, or every transfer failed or was refused).
	// UNAVAILABLE; it is an ErrUnavailable too, with its own text (etcd
	// may be reachable).
	ErrNoBundle error = noBundle{}
)

type noBundle struct{}

func (noBundle) Error() string        { return "fleet bundle unavailable: no node provided a verified copy" }
func (noBundle) Is(target error) bool { return target == ErrUnavailable }

// unavailable wraps an etcd error in ErrUnavailable, unless it is the
// caller's own cancellation.
func unavailable(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
}
