package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

// The phases of a scoped cold start, between the client's call, three
// lines of the daemon's debug log and the reply. The log's timestamps have
// millisecond resolution.
const (
	phScope     = "scope"     // call → "scope created": gRPC, API edge, checks, store lookup, the scope's cgroup nodes
	phSandbox   = "sandbox"   // → go-plugin's "waiting for RPC address": worker cgroup, rootfs, libcontainer create + run
	phHandshake = "handshake" // → go-plugin's "using plugin": the worker's start up to its handshake line
	phReply     = "reply"     // → the reply at the client: gRPC connection, Dispense, the first call, the reply
)

var (
	hclogLine  = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\S+) \[\w+\] +go-plugin: (waiting for RPC address|using plugin):(.*)$`)
	tenantAttr = regexp.MustCompile(` tenant=(\S+)`)
	pluginPath = regexp.MustCompile(`/extensions/([^/]+)/`)
)

// coldEvents are the times of one tenant's cold-start log lines.
type coldEvents struct {
	scope, sandbox, handshake time.Time
}

// coldPhases reads the daemon's log at path and returns the phases of the
// given cold starts. The cold starts ran one at a time, so go-plugin's
// "using plugin", which names no plugin, belongs to the last worker that
// was waiting for its address.
func coldPhases(path string, calls []coldCall) (map[string][]time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ev := map[string]*coldEvents{}
	get := func(tenant string) *coldEvents {
		if ev[tenant] == nil {
			ev[tenant] = &coldEvents{}
		}
		return ev[tenant]
	}
	waiting := ""
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		line := s.Text()
		if m := hclogLine.FindStringSubmatch(line); m != nil {
			t, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil {
				continue
			}
			switch m[2] {
			case "waiting for RPC address":
				if pm := pluginPath.FindStringSubmatch(m[3]); pm != nil {
					waiting = pm[1]
					get(waiting).sandbox = t
				}
			case "using plugin":
				if waiting != "" {
					get(waiting).handshake = t
					waiting = ""
				}
			}
			continue
		}
		ts, rest, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(ts, "time=") || !strings.Contains(rest, `msg="scope created"`) {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(ts, "time="))
		if err != nil {
			continue
		}
		if m := tenantAttr.FindStringSubmatch(rest); m != nil {
			get(m[1]).scope = t
		}
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	out := map[string][]time.Duration{}
	for _, c := range calls {
		e := ev[c.tenant]
		if e == nil || e.scope.IsZero() || e.sandbox.IsZero() || e.handshake.IsZero() {
			return nil, fmt.Errorf("the daemon's log lacks the scope creation, sandbox start or handshake of tenant %s (did its messages change?)", c.tenant)
		}
		out[phScope] = append(out[phScope], e.scope.Sub(c.start))
		out[phSandbox] = append(out[phSandbox], e.sandbox.Sub(e.scope))
		out[phHandshake] = append(out[phHandshake], e.handshake.Sub(e.sandbox))
		out[phReply] = append(out[phReply], c.end.Sub(e.handshake))
	}
	return out, nil
}
