package sandbox_test

import (
	"fmt"
	"os"
)

// inside is the program the test binary runs inside a sandbox. It prints
// one line and returns the exit code.
func inside(mode string) int {
	switch mode {
	case "hello":
		host, _ := os.Hostname()
		uidmap, _ := os.ReadFile("/proc/self/uid_map")
		fmt.Printf("hello from %s pid %d uid_map %q\n", host, os.Getpid(), uidmap)
		return 0
	}
	fmt.Printf("unknown mode %q\n", mode)
	return 2
}
