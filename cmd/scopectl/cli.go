package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/client"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the daemon answered with an error, or it could not be reached, or I/O failed
	exitUsage = 2
)

// maxMessage lets a bundle up to the daemon's own cap through; gRPC's default
// of 4 MiB would be hit first.
const maxMessage = 256 << 20

const usageText = `scopectl controls the scoped daemon.

Usage:
  scopectl [global flags] COMMAND [flags] [args]

Commands:
  deploy  --tenant T --env E --name N DIR   deploy the files under DIR as extension N
  invoke  --tenant T --env E [--user U] [--version V] [--meta k=v]... [--timeout D] [--idempotent] NAME [--data STRING]
                                            run extension NAME once: the payload is --data,
                                            or stdin without it; the result goes to stdout as is
  ls      [--tenant T]                      list extensions
  scopes  [--tenant T]                      list live scopes
  inspect SCOPE                             show one scope: workers, limits, usage
  logs    [--tenant T] [--scope S] [--extension X] [--tail N] [-f]
                                            print the workers' output lines
  rm      --tenant T --env E NAME           remove an extension and stop its workers
  top     [--tenant T] [--interval D] [--sort KEY] [-n N]
                                            live per-scope table like systemd-cgtop: CPU %,
                                            run-queue p99, memory, net, invocations/s;
                                            -o json prints one snapshot
  tenant  set TENANT --tier TIER            place TENANT in TIER (persisted; root or admin clients)
  tenant  get TENANT | ls                   show tenants: tier, its limits, live scopes
  events  [--tenant T] [--since D]          the noisy-neighbour controller's recent events
  usage   --tenant T [--from F] [--to T] [--by scope|extension|environment] [--meter M] [--per-window]
                                            metered usage from the ledger (-o table, csv or json)
  status                                    the daemon's state: live scopes; on a fleet node, the fleet
                                            as it sees it (degraded or not, members; root or admin clients)
  help    [COMMAND]                         show this help, or a command's flags

Global flags (accepted before or after COMMAND):
  --socket PATH  the daemon's socket (env SCOPED_SOCKET; default ` + client.DefaultSocket + `)
  --token TOKEN  bearer token (env SCOPED_TOKEN); without one the daemon knows you by uid/gid
  --fleet URLS   call a fleet instead of the socket: etcd's client URLs, comma-separated
                 (env SCOPED_FLEET); each call goes to its scope's node over TLS. With it:
                 --fleet-prefix P, --fleet-ca/--fleet-cert/--fleet-key FILE (the nodes' API
                 TLS), --fleet-server-name N, --etcd-ca/--etcd-cert/--etcd-key FILE
  -o FORMAT      table or json (default table); json is protojson, one document per call,
                 one object per line for logs
  --timeout D    deadline of each call (default 30s; 0: none)
  -v             more on stderr (invoke: how the invocation ran)

Exit status: 0 ok; 1 error (a daemon error prints its gRPC code and message);
2 usage error.
`

// globals are the flags every command takes.
type globals struct {
	socket  string
	token   string
	output  string
	timeout time.Duration
	verbose bool
	fleet   fleetFlags

	stdin          io.Reader
	stdout, stderr io.Writer
}

// register adds the global flags to fs, bound to g, except those named in
// skip (a command's own flag of the same name wins).
func (g *globals) register(fs *flag.FlagSet, skip ...string) {
	has := func(name string) bool {
		for _, s := range skip {
			if s == name {
				return true
			}
		}
		return false
	}
	fs.StringVar(&g.socket, "socket", g.socket, "the daemon's unix socket (env SCOPED_SOCKET)")
	fs.StringVar(&g.token, "token", g.token, "bearer token (env SCOPED_TOKEN)")
	fs.StringVar(&g.output, "o", g.output, "output format: table or json")
	if !has("timeout") {
		fs.DurationVar(&g.timeout, "timeout", g.timeout, "deadline of each call (0: none)")
	}
	fs.BoolVar(&g.verbose, "v", g.verbose, "more on stderr")
	g.fleet.register(fs)
}

// command is one subcommand.
type command struct {
	name, args, summary string
	run                 func(ctx context.Context, g *globals, args []string) error
}

var commands []command

func init() {
	commands = []command{
		{"deploy", "--tenant T --env E --name N DIR", "deploy the files under DIR (regular files only) as extension N", runDeploy},
		{"invoke", "--tenant T --env E [flags] NAME [--data STRING]", "run extension NAME once; payload from --data or stdin; result to stdout as is", runInvoke},
		{"ls", "[--tenant T]", "list extensions", runLs},
		{"scopes", "[--tenant T]", "list live scopes", runScopes},
		{"inspect", "SCOPE", "show one scope: workers, limits, usage", runInspect},
		{"logs", "[--tenant T] [--scope S] [--extension X] [--tail N] [-f]", "print the workers' output lines", runLogs},
		{"rm", "--tenant T --env E NAME", "remove an extension and stop its workers", runRm},
		{"top", "[--tenant T] [--interval D] [--sort cpu|runq|memory|net|inv|scope] [-n N]", "live per-scope table: CPU %, run-queue p99, memory, net, invocations/s", runTop},
		{"tenant", "set TENANT --tier TIER | get TENANT | ls", "place a tenant in a tier (root or admin clients), or show tenants and their tiers", runTenant},
		{"events", "[--tenant T] [--since D]", "the noisy-neighbour controller's recent events", runEvents},
		{"usage", "--tenant T [--from F] [--to T] [--by scope|extension|environment] [--meter M] [--per-window]", "metered usage from the ledger; -o table, csv or json", runUsage},
		{"status", "", "the daemon's state: live scopes; on a fleet node, the fleet as it sees it (root or admin clients)", runStatus},
	}
}

func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// errHelp: help was asked for and printed.
var errHelp = errors.New("help")

// run is the whole CLI, for tests: args without the program name.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return runContext(context.Background(), args, stdin, stdout, stderr)
}

func runContext(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globals{
		socket:  envOr("SCOPED_SOCKET", client.DefaultSocket),
		token:   os.Getenv("SCOPED_TOKEN"),
		fleet:   fleetFlags{endpoints: os.Getenv("SCOPED_FLEET")},
		output:  "table",
		timeout: 30 * time.Second,
		stdin:   stdin,
		stdout:  stdout,
		stderr:  stderr,
	}
	fs := flag.NewFlagSet("scopectl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usageText)
			return exitOK
		}
		fmt.Fprintf(stderr, "scopectl: %v\n\n%s", err, usageText)
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, usageText)
		return exitUsage
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	if name == "help" {
		return help(g, rest)
	}
	cmd := lookup(name)
	if cmd == nil {
		fmt.Fprintf(stderr, "scopectl: unknown command %q\n\n%s", name, usageText)
		return exitUsage
	}
	err := cmd.run(ctx, g, rest)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "scopectl %s: %v\nusage: scopectl %s %s\n(scopectl help %s for its flags)\n", name, err, name, cmd.args, name)
		return exitUsage
	}
	fmt.Fprintf(stderr, "scopectl %s: %s\n", name, describe(err))
	return exitError
}

func help(g *globals, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(g.stdout, usageText)
		return exitOK
	}
	cmd := lookup(args[0])
	if cmd == nil {
		fmt.Fprintf(g.stderr, "scopectl: unknown command %q\n\n%s", args[0], usageText)
		return exitUsage
	}
	// Each command prints its own flags on -h.
	cmd.run(context.Background(), g, []string{"-h"})
	return exitOK
}

// describe turns an error into one line; a gRPC status is "Code: message".
func describe(err error) string {
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: %s", s.Code(), s.Message())
	}
	return err.Error()
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// newFlags returns the flag set of a command, with the global flags.
func newFlags(g *globals, cmd string, skip ...string) *flag.FlagSet {
	fs := flag.NewFlagSet("scopectl "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse reports errors; -h prints to stdout
	c := lookup(cmd)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: scopectl %s %s\n\n%s.\n\nflags (global ones included):\n", cmd, c.args, c.summary)
		fs.PrintDefaults()
	}
	g.register(fs, skip...)
	return fs
}

// parse parses args with flags and positional arguments in any order ("--"
// ends the flags) and checks the count of positional arguments.
func (g *globals) parse(fs *flag.FlagSet, args []string, minArgs, maxArgs int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(g.stdout)
				fs.Usage()
				return nil, errHelp
			}
			return nil, &usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	switch {
	case g.output == "csv" && fs.Name() == "scopectl usage":
	case g.output != "table" && g.output != "json":
		return nil, usagef("-o %q: want table or json (csv for usage)", g.output)
	case len(pos) < minArgs:
		return nil, usagef("missing argument")
	case maxArgs >= 0 && len(pos) > maxArgs:
		return nil, usagef("unexpected argument %q", pos[maxArgs])
	}
	return pos, nil
}

// required checks that flags that must be given are not empty.
func required(pairs ...string) error {
	var missing []string
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			missing = append(missing, "--"+pairs[i])
		}
	}
	if len(missing) > 0 {
		return usagef("missing %s", strings.Join(missing, ", "))
	}
	return nil
}

// conn is a daemon's or a fleet's client.
type conn interface {
	scopedv1.ScopedClient
	Close() error
}

// dial connects to the daemon, or to the fleet with --fleet.
func (g *globals) dial(ctx context.Context) (conn, error) {
	if g.fleet.endpoints != "" {
		return g.dialFleet(ctx)
	}
	opts := []client.Option{client.WithMaxMessageSize(maxMessage)}
	if g.token != "" {
		opts = append(opts, client.WithToken(g.token))
	}
	return client.Dial(ctx, g.socket, opts...)
}

// callCtx bounds one call by --timeout.
func (g *globals) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if g.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, g.timeout)
}
