package netns

import "errors"

var (
	// ErrInvalidConfig is a configuration the manager cannot run with.
	ErrInvalidConfig = errors.New("netns: invalid configuration")
	// ErrNoUplink means no uplink interface was named and the host has no
	// IPv4 default route to take it from.
	ErrNoUplink = errors.New("netns: no uplink interface")
	// ErrExhausted means every address of the subnet is in use.
	ErrExhausted = errors.New("netns: address pool exhausted")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("netns: manager closed")
)
