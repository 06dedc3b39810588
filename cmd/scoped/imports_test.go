package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDaemonLinksNoClient: the daemon's side of go-plugin reattach is
// package plugins/reattach; package client is the applications' and the
// daemon links none of it.
func TestDaemonLinksNoClient(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	out, err := exec.Command(gobin, "list", "-tags", "seccomp", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "github.com/scoped-io/scoped/client" || strings.HasPrefix(p, "github.com/scoped-io/scoped/client/") {
			t.Errorf("cmd/scoped links %s", p)
		}
	}
}
