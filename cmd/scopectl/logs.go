package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

func runLogs(ctx context.Context, g *globals, args []string) error {
	f := newFlags(g, "logs")
	tenant := f.String("tenant", "", "tenant id (default: every tenant you may act for)")
	scope := f.String("scope", "", "only this scope")
	ext := f.String("extension", "", "only this extension")
	tail := f.Int("tail", 0, "the last `N` lines kept (0: all kept)")
	follow := f.Bool("f", false, "keep printing new lines until interrupted")
	if _, err := g.parse(f, args, 0, 0); err != nil {
		return err
	}
	if *tail < 0 {
		return usagef("--tail %d: must not be negative", *tail)
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()

	cctx, cancel := context.WithCancel(ctx)
	if !*follow {
		cancel()
		cctx, cancel = g.callCtx(ctx)
	}
	defer cancel()
	stream, err := c.Logs(cctx, &scopedv1.LogsRequest{
		Tenant: *tenant, Scope: *scope, Extension: *ext, Tail: int32(*tail), Follow: *follow,
	})
	if err != nil {
		return err
	}
	for {
		e, err := stream.Recv()
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil && *follow && ctx.Err() != nil && status.Code(err) == codes.Canceled:
			return nil // interrupted: how -f ends
		case err != nil:
			return err
		}
		if g.output == "json" {
			err = printJSONLine(g.stdout, e)
		} else {
			_, err = fmt.Fprintf(g.stdout, "%s %s %s %s %s %s: %s\n",
				e.GetTime().AsTime().Local().Format("2006-01-02T15:04:05.000"),
				dash(e.GetScope()), dash(e.GetWorker()), dash(e.GetExtension()),
				dash(e.GetInvocationId()), dash(e.GetStream()), e.GetLine())
		}
		if err != nil {
			return err
		}
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
