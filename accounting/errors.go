package accounting

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error of this package wraps one of them or an error
// of the kernel.
var (
	// ErrNotSupported: eBPF accounting cannot run here (no BTF, kernel
	// too old, no unified hierarchy, no privilege). Open falls back to
	// cgroup files when it sees it; see NotSupportedError.
	ErrNotSupported   = errors.New("not supported")
	ErrInvalidOptions = errors.New("invalid accounting options")
	// ErrInvalidScope: the cgroup given to Track is not a scope below the
	// root at the configured level, or its id does not match.
	ErrInvalidScope = errors.New("invalid scope cgroup")
	ErrTracked      = errors.New("scope already tracked")
	ErrNotTracked   = errors.New("scope not tracked")
	// ErrFull: as many scopes are tracked as Options.MaxScopes allows.
	ErrFull   = errors.New("too many tracked scopes")
	ErrClosed = errors.New("accounting source closed")
)

// NotSupportedError says what this host lacks for eBPF accounting. It
// matches ErrNotSupported with errors.Is, and unwraps to the kernel's error
// when there is one.
type NotSupportedError struct {
	What string // what is missing or failed, e.g. "kernel BTF"
	Err  error  // the underlying error, or nil
}

func (e *NotSupportedError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("eBPF accounting not supported: %s", e.What)
	}
	return fmt.Sprintf("eBPF accounting not supported: %s: %v", e.What, e.Err)
}

func (e *NotSupportedError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotSupported) true.
func (e *NotSupportedError) Is(target error) bool { return target == ErrNotSupported }

func notSupported(what string, err error) error {
	return &NotSupportedError{What: what, Err: err}
}
