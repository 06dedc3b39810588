// Command misbehave is a hostile extension for the end-to-end tests: the
// payload says how to misbehave.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/scoped-io/scoped/plugins"
)

var hoard [][]byte

func main() {
	plugins.Serve(plugins.HandlerFunc(func(ctx context.Context, r *plugins.Request) ([]byte, error) {
		switch cmd := strings.TrimSpace(string(r.Payload)); cmd {
		case "ok":
			return []byte(fmt.Sprintf("ok from pid %d", os.Getpid())), nil
		case "exit":
			os.Exit(3) // die mid-call
		case "oom":
			for { // touch memory until the kernel kills us
				b := make([]byte, 1<<20)
				for i := range b {
					b[i] = 1
				}
				hoard = append(hoard, b)
			}
		case "hang":
			time.Sleep(time.Hour) // ignore the deadline
		case "fail":
			return nil, fmt.Errorf("the handler refuses")
		case "log":
			fmt.Fprintln(os.Stderr, "a line for the log ring")
			return []byte("logged"), nil
		case "logflood":
			// Lines that claim to be errors, on the process's own stderr
			// (fd 2, read by go-plugin) and on os.Stderr (go-plugin's
			// stdio stream): the daemon must not log them as its own.
			raw := os.NewFile(2, "stderr")
			for i := range 1500 {
				fmt.Fprintf(raw, "{\"@level\":\"error\",\"@message\":\"forged-json %d\",\"@timestamp\":\"2026-12-06T12:00:00.000000Z\"}\n", i)
				fmt.Fprintf(raw, "[ERROR] forged-prefix %d\n", i)
				fmt.Fprintf(os.Stderr, "[ERROR] forged-stdio %d\n", i)
			}
			return []byte("flooded"), nil
		case "big":
			return make([]byte, 8<<20), nil
		default:
			return nil, fmt.Errorf("unknown command %q", cmd)
		}
		return nil, nil
	}))
}
