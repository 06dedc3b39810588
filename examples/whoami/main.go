// Command whoami is an example extension (Go SDK) that shows where it runs:
// it returns JSON with its hostname, pid, user-namespace uid map, cgroups,
// the payload and the invocation id. Two tenants calling it see different
// sandboxes.
package main

import (
	"context"
	"encoding/json"
	"os"

	"github.com/scoped-io/scoped/plugins"
)

type reply struct {
	Hostname     string   `json:"hostname"`
	PID          int      `json:"pid"`
	UIDMap       string   `json:"uid_map"`
	Cgroup       string   `json:"cgroup"`
	Payload      string   `json:"payload"`
	InvocationID string   `json:"invocation_id"`
	Errors       []string `json:"errors,omitempty"`
}

func main() {
	plugins.Serve(plugins.HandlerFunc(whoami))
}

func whoami(_ context.Context, req *plugins.Request) ([]byte, error) {
	r := reply{PID: os.Getpid(), Payload: string(req.Payload), InvocationID: req.InvocationID}
	var err error
	if r.Hostname, err = os.Hostname(); err != nil {
		r.Errors = append(r.Errors, err.Error())
	}
	r.UIDMap = readFile("/proc/self/uid_map", &r.Errors)
	r.Cgroup = readFile("/proc/self/cgroup", &r.Errors)
	return json.Marshal(r)
}

// readFile returns path's contents, or "" with the error added to errs (a
// sandbox without /proc still answers).
func readFile(path string, errs *[]string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		*errs = append(*errs, err.Error())
	}
	return string(b)
}
