package supervisor

import "errors"

// Sentinel errors. The API edge maps each to one gRPC code.
var (
	ErrInvalid       = errors.New("invalid argument")            // InvalidArgument
	ErrTooLarge      = errors.New("too large")                   // InvalidArgument
	ErrNotFound      = errors.New("not found")                   // NotFound
	ErrPermission    = errors.New("permission denied")           // PermissionDenied
	ErrUnauthorized  = errors.New("unauthenticated")             // Unauthenticated
	ErrDeadline      = errors.New("deadline exceeded")           // DeadlineExceeded
	ErrOutOfMemory   = errors.New("out of memory")               // ResourceExhausted
	ErrBusy          = errors.New("no worker available")         // ResourceExhausted
	ErrWorker        = errors.New("worker failed")               // Unavailable
	ErrHandler       = errors.New("extension returned an error") // Aborted
	ErrStopping      = errors.New("scoped is shutting down")     // Unavailable
	ErrSuspended     = errors.New("tenant suspended")            // FailedPrecondition
	ErrNetworkDenied = errors.New("network not allowed")         // FailedPrecondition
	ErrRateLimited   = errors.New("rate limit exceeded")         // ResourceExhausted, with a retry hint
	ErrConcurrency   = errors.New("concurrency limit exceeded")  // ResourceExhausted, with a retry hint
	ErrCPUTime       = errors.New("cpu time limit exceeded")     // ResourceExhausted
	ErrQuota         = errors.New("quota exceeded")              // ResourceExhausted, with a retry hint
	ErrLedger        = errors.New("spend caps unavailable")      // Unavailable, with a retry hint
	ErrScopeLimit    = errors.New("scope limit exceeded")        // ResourceExhausted, with a retry hint
)
