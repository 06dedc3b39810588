package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

// phases are one cold start cut by lines of the daemon's debug log (1 ms
// resolution) between the client's call and its reply.
type phases struct {
	scope     time.Duration // call → "scope created": gRPC, API edge, checks, the scope's cgroups
	network   time.Duration // → "scope network": netns.Manager.Egress (0 in mode none)
	sandbox   time.Duration // → go-plugin's "waiting for RPC address": worker cgroup, rootfs, libcontainer create + run
	handshake time.Duration // → go-plugin's "using plugin": the worker's start up to its handshake
	reply     time.Duration // → the reply at the client: gRPC connection, Dispense, the call
}

var (
	hclogLine  = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\S+) \[\w+\] +go-plugin: (waiting for RPC address|using plugin):(.*)$`)
	tenantAttr = regexp.MustCompile(` tenant=(\S+)`)
	pluginPath = regexp.MustCompile(`/extensions/([^/]+)/`)
)

// events are the times of one tenant's cold-start log lines.
type events struct {
	scope, network, sandbox, handshake time.Time
}

// attachPhases reads the daemon's log at path and sets the phases of the
// given cold starts. The cold starts ran one at a time, so go-plugin's
// "using plugin", which names no plugin, belongs to the last worker that
// was waiting for its address.
func attachPhases(path string, calls []coldCall) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	ev := map[string]*events{}
	get := func(tenant string) *events {
		if ev[tenant] == nil {
			ev[tenant] = &events{}
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
		if !ok || !strings.HasPrefix(ts, "time=") {
			continue
		}
		created := strings.Contains(rest, `msg="scope created"`)
		network := strings.Contains(rest, `msg="scope network"`)
		if !created && !network {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(ts, "time="))
		if err != nil {
			continue
		}
		if m := tenantAttr.FindStringSubmatch(rest); m != nil {
			if created {
				get(m[1]).scope = t
			} else {
				get(m[1]).network = t
			}
		}
	}
	if err := s.Err(); err != nil {
		return err
	}
	for i := range calls {
		c := &calls[i]
		e := ev[c.tenant]
		if e == nil || e.scope.IsZero() || e.sandbox.IsZero() || e.handshake.IsZero() {
			return fmt.Errorf("the daemon's log lacks the scope creation, sandbox start or handshake of tenant %s (did its messages change?)", c.tenant)
		}
		p := &phases{scope: e.scope.Sub(c.start)}
		netDone := e.scope
		if !e.network.IsZero() {
			p.network = e.network.Sub(e.scope)
			netDone = e.network
		}
		p.sandbox = e.sandbox.Sub(netDone)
		p.handshake = e.handshake.Sub(e.sandbox)
		p.reply = c.end.Sub(e.handshake)
		c.phases = p
	}
	return nil
}
