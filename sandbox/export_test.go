package sandbox

// NewRunnerForTest returns a Runner that only translates addresses.
func NewRunnerForTest(socketDir string) *Runner { return &Runner{socketDir: socketDir, dirFD: -1} }

// CleanupParallel is how many sandboxes Cleanup destroys at once.
const CleanupParallel = cleanupParallel
