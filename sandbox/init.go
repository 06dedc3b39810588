package sandbox

import (
	"os"

	"github.com/opencontainers/runc/libcontainer"
	// nsexec, the C constructor that sets up namespaces before the Go
	// runtime of the init process starts.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

// Init turns the process into a sandbox init if it was started as one
// (os.Args[1] == "init"); it then never returns. Otherwise it returns at
// once. Call it first thing in main and in TestMain.
func Init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
}
