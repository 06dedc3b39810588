package sandbox

// NewRunnerForTest returns a Runner that only translates addresses.
func NewRunnerForTest(socketDir string) *Runner { return &Runner{socketDir: socketDir, dirFD: -1} }
