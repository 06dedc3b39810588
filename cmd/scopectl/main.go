// Command scopectl is the command line of the scoped daemon: it deploys,
// invokes, lists and removes extensions and shows scopes and their logs,
// over the daemon's unix socket through package client. The main only
// parses flags and prints; the daemon does the work.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runContext(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
