package bench

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

var (
	hclogLine  = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\S+) \[\w+\] +go-plugin: (waiting for RPC address|using plugin):(.*)$`)
	tenantAttr = regexp.MustCompile(` tenant=(\S+)`)
	pluginPath = regexp.MustCompile(`/extensions/([^/]+)/`)
)

// ColdEvents are the times of one tenant's cold-start lines in the
// daemon's debug log (1 ms resolution), zero where a line is missing.
type ColdEvents struct {
	Scope     time.Time // "scope created"
	Network   time.Time // "scope network" (only where the scope got a network)
	Sandbox   time.Time // go-plugin's "waiting for RPC address": the sandbox is up
	Handshake time.Time // go-plugin's "using plugin": the worker's handshake was read
}

// ColdLog is the cold-start lines of a daemon's debug log, by tenant.
type ColdLog map[string]*ColdEvents

// ReadColdLog reads the daemon's debug log at path. The cold starts must
// have run one at a time: go-plugin's "using plugin", which names no
// plugin, is taken to belong to the last worker that was waiting for its
// address.
func ReadColdLog(path string) (ColdLog, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ev := ColdLog{}
	get := func(tenant string) *ColdEvents {
		if ev[tenant] == nil {
			ev[tenant] = &ColdEvents{}
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
					get(waiting).Sandbox = t
				}
			case "using plugin":
				if waiting != "" {
					get(waiting).Handshake = t
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
				get(m[1]).Scope = t
			} else {
				get(m[1]).Network = t
			}
		}
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	return ev, nil
}

// Tenant is the cold-start lines of tenant, or an error if its scope
// creation, sandbox start or handshake is missing.
func (l ColdLog) Tenant(tenant string) (*ColdEvents, error) {
	e := l[tenant]
	if e == nil || e.Scope.IsZero() || e.Sandbox.IsZero() || e.Handshake.IsZero() {
		return nil, fmt.Errorf("the daemon's log lacks the scope creation, sandbox start or handshake of tenant %s (did its messages change?)", tenant)
	}
	return e, nil
}
