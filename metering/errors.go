package metering

import "errors"

// Sentinel errors. Every error of this package wraps one of them, or an
// error of the database or the file system.
var (
	// ErrInvalid: an argument breaks the contract of the call (an id that
	// fails internal/ident, a negative or non-finite value, a time out of
	// range, a window that does not divide a day, …). The more specific
	// ErrUnknownMeter and ErrTooLarge are wrapped together with it.
	ErrInvalid = errors.New("invalid metering input")
	// ErrUnknownMeter: the meter is none of the Meters.
	ErrUnknownMeter = errors.New("unknown meter")
	// ErrTooLarge: more deltas, cursors or bytes than one call may carry.
	ErrTooLarge = errors.New("too large")
	// ErrSchemaTooNew: the ledger was written by a newer scoped; this one
	// refuses it rather than misread it.
	ErrSchemaTooNew = errors.New("ledger schema is newer than this build understands")
	// ErrNotLedger: the file is an SQLite database, but not a metering
	// ledger (wrong application id, or tables of someone else).
	ErrNotLedger = errors.New("not a scoped metering ledger")
	// ErrLocked: another Ledger (in this process or another) has the
	// directory open for writing.
	ErrLocked = errors.New("ledger in use")
	// ErrClosed: the Ledger was closed.
	ErrClosed = errors.New("ledger closed")
	// ErrReadOnly: a write on a Ledger from OpenReadOnly.
	ErrReadOnly = errors.New("ledger opened read-only")
	// ErrCorrupt: the ledger failed its integrity check, or its metadata
	// contradicts itself.
	ErrCorrupt = errors.New("ledger corrupt")
	// ErrSealed: a write would have changed a sealed record. Commit never
	// does that on purpose (late usage moves to the first open window); it
	// is the guard that makes a bug roll the transaction back instead.
	ErrSealed = errors.New("record already sealed")
)
