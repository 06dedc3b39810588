// Command scoped-exec is the worker of the exec runtime: it serves the
// worker protocol and runs the extension's program once per invocation
// (payload on stdin, result from stdout; see plugins.ExecWith).
//
// The supervisor starts it in the scope's sandbox with
//
//	SCOPED_EXEC_ENTRYPOINT  the program, an absolute path (e.g. /ext/shout.sh)
//	SCOPED_EXEC_ARGS        optional: its arguments, a JSON array of strings
//
// The program runs in the entrypoint's directory. scoped-exec is pid 1 of
// its sandbox, so the orphans of programs become its children: it reaps
// them (plugins.ExecOptions.Reap), else each would hold a pid of the
// scope's pids.max. Programs get oom_score_adj 500, so that the kernel's
// OOM killer picks them rather than the worker; the supervisor kills what
// a program leaves running once its invocation ended (by cgroup), and
// reports an OOM-killed program as out of memory. It starts a few spare OS
// threads ahead, so that a program filling the scope's pids.max cannot
// make its Go runtime fail to create one. scoped-exec starts in
// every exec-runtime sandbox, so it stays small: it imports plugins and the
// standard library only, and builds with CGO_ENABLED=0.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/scoped-io/scoped/plugins"
)

const (
	envEntrypoint = "SCOPED_EXEC_ENTRYPOINT"
	envArgs       = "SCOPED_EXEC_ARGS"

	// programOOMScoreAdj adds half the cgroup's memory to a program's
	// OOM badness: the worker is picked only if it holds that much more.
	programOOMScoreAdj = 500

	// spareThreads are OS threads started ahead: a fork bomb that fills
	// the scope's pids.max must not leave the worker's runtime unable to
	// create one (the worker runs a handful).
	spareThreads = 8
)

func main() {
	program, args, err := config()
	if err != nil {
		fmt.Fprintln(os.Stderr, "scoped-exec:", err)
		os.Exit(2)
	}
	plugins.Serve(plugins.ExecWith(plugins.ExecOptions{Dir: filepath.Dir(program), Reap: true, OOMScoreAdj: programOOMScoreAdj, SpareThreads: spareThreads}, program, args...))
}

// config reads and checks the program and its arguments from the
// environment.
func config() (program string, args []string, err error) {
	program = os.Getenv(envEntrypoint)
	if program == "" {
		return "", nil, errors.New(envEntrypoint + " is not set")
	}
	if !filepath.IsAbs(program) {
		return "", nil, fmt.Errorf("%s=%q is not an absolute path", envEntrypoint, program)
	}
	fi, err := os.Stat(program)
	if err != nil {
		return "", nil, err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", nil, fmt.Errorf("%s: not an executable file", program)
	}
	if s := os.Getenv(envArgs); s != "" {
		if err := json.Unmarshal([]byte(s), &args); err != nil {
			return "", nil, fmt.Errorf("%s: want a JSON array of strings: %w", envArgs, err)
		}
	}
	return program, args, nil
}
