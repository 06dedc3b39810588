package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/scoped-io/scoped/client"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// timeoutGrace is how much longer than an invocation's own timeout the call
// waits, so that the daemon's DEADLINE_EXCEEDED arrives rather than ours.
const timeoutGrace = 5 * time.Second

// metaFlag collects repeated --meta k=v.
type metaFlag map[string]string

func (m metaFlag) String() string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

func (m metaFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	m[k] = v
	return nil
}

func runInvoke(ctx context.Context, g *globals, args []string) error {
	f := newFlags(g, "invoke", "timeout")
	tenant := f.String("tenant", "", "tenant id (required)")
	env := f.String("env", "", "environment (required)")
	user := f.String("user", "", "user id (part of the scope when the isolation policy says so)")
	version := f.String("version", "", "extension version (default: the current one)")
	meta := metaFlag{}
	f.Var(meta, "meta", "metadata `key=value` for the extension (repeatable)")
	timeout := f.Duration("timeout", 0, "the invocation's deadline (default: the daemon's); the call waits 5s more")
	data := f.String("data", "", "the payload (default: read stdin)")
	idempotent := f.Bool("idempotent", false, "with --fleet: safe to run twice, so retried on the next node when its node goes away")
	pos, err := g.parse(f, args, 1, 1)
	if err != nil {
		return err
	}
	if err := required("tenant", *tenant, "env", *env); err != nil {
		return err
	}
	if *timeout < 0 {
		return usagef("--timeout %v: must not be negative", *timeout)
	}
	dataSet := false
	f.Visit(func(fl *flag.Flag) { dataSet = dataSet || fl.Name == "data" })

	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()

	payload := []byte(*data)
	if !dataSet {
		if isTerminal(g.stdin) {
			fmt.Fprintln(g.stderr, "scopectl: reading the payload from stdin (end with Ctrl-D; or use --data)")
		}
		if g.stdin == nil {
			payload = nil
		} else if payload, err = io.ReadAll(g.stdin); err != nil {
			return fmt.Errorf("reading the payload from stdin: %w", err)
		}
	}
	req := &scopedv1.InvokeRequest{
		Tenant: *tenant, Environment: *env, User: *user, Extension: pos[0],
		Version: *version, Payload: payload, Metadata: meta,
	}
	cctx, cancel := g.callCtx(ctx)
	if *timeout > 0 {
		req.Timeout = durationpb.New(*timeout)
		cancel()
		cctx, cancel = context.WithTimeout(ctx, *timeout+timeoutGrace)
	}
	defer cancel()
	if *idempotent {
		cctx = client.Idempotent(cctx)
	}

	resp, err := c.Invoke(cctx, req)
	if err != nil {
		return err
	}
	if g.verbose {
		fg := resp.GetFigures()
		start := "warm"
		if fg.GetCold() {
			start = "cold"
		}
		fmt.Fprintf(g.stderr, "invocation %s: scope %s, worker %s, %s, took %s (queued %s), %d bytes\n",
			fg.GetInvocationId(), fg.GetScope(), fg.GetWorker(), start,
			dur(fg.GetDuration()), dur(fg.GetQueued()), len(resp.GetResult()))
	}
	if g.output == "json" {
		return printJSON(g.stdout, resp)
	}
	_, err = g.stdout.Write(resp.GetResult())
	return err
}

func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
