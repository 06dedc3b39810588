package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// listing is every path below dir, to show that a refused request wrote
// nothing.
func listing(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			out = append(out, p)
		}
		return nil
	})
	slices.Sort(out)
	return out
}

// TestBadInput: invalid ids, unknown extensions, oversized payloads and
// hostile bundles get InvalidArgument or NotFound and change nothing.
func TestBadInput(t *testing.T) {
	d := startDaemon(t, options{})
	c := d.client()
	deploy(t, c, "acme", "production", "whoami", bins.whoami)
	before := listing(t, d.state)
	ctx := context.Background()

	long := strings.Repeat("a", 70)
	for _, tc := range []struct {
		name                   string
		tenant, env, ext, user string
		want                   codes.Code
	}{
		{"tenant ../", "../etc", "production", "whoami", "", codes.InvalidArgument},
		{"env ../", "acme", "../../root", "whoami", "", codes.InvalidArgument},
		{"extension ../", "acme", "production", "../whoami", "", codes.InvalidArgument},
		{"user with slash", "acme", "production", "whoami", "a/b", codes.InvalidArgument},
		{"70-char tenant", long, "production", "whoami", "", codes.InvalidArgument},
		{"70-char extension", "acme", "production", long, "", codes.InvalidArgument},
		{"empty tenant", "", "production", "whoami", "", codes.InvalidArgument},
		{"empty extension", "acme", "production", "", "", codes.InvalidArgument},
		{"upper case", "ACME", "production", "whoami", "", codes.InvalidArgument},
		{"unknown extension", "acme", "production", "nope", "", codes.NotFound},
		{"unknown environment", "acme", "staging", "whoami", "", codes.NotFound},
	} {
		_, err := c.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: tc.tenant, Environment: tc.env, Extension: tc.ext, User: tc.user})
		if status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.want)
		}
	}
	// Past max_payload (1 MiB) but within the request cap: the handler
	// names the payload.
	_, err := c.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: "acme", Environment: "production", Extension: "whoami",
		Payload: make([]byte, 1<<20+1)})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "payload") {
		t.Errorf("oversized payload: %v", err)
	}
	// Past the request cap (max_payload + 512 KiB): refused by its length
	// before it is read, although the server takes bundles of 64 MiB.
	_, err = c.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: "acme", Environment: "production", Extension: "whoami",
		Payload: make([]byte, 3<<20)})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max_payload") {
		t.Errorf("oversized request: %v, want ResourceExhausted naming the cap", err)
	}

	good := bundle(t, bins.whoami)
	withFile := func(f *scopedv1.File) *scopedv1.Bundle {
		b := &scopedv1.Bundle{Files: slices.Clone(good.Files)}
		b.Files = append(b.Files, f)
		return b
	}
	for _, tc := range []struct {
		name   string
		tenant string
		bundle *scopedv1.Bundle
	}{
		{"../ entry", "acme", withFile(&scopedv1.File{Path: "../../etc/cron.d/x", Mode: 0o644, Content: []byte("x")})},
		{"absolute entry", "acme", withFile(&scopedv1.File{Path: "/etc/passwd", Mode: 0o644})},
		{"hidden ../ entry", "acme", withFile(&scopedv1.File{Path: "a/../../b", Mode: 0o644})},
		{"symlink pointing outside", "acme", withFile(&scopedv1.File{Path: "link", Mode: 0o120777, Content: []byte("/etc/shadow")})},
		{"no manifest", "acme", &scopedv1.Bundle{Files: []*scopedv1.File{{Path: "whoami", Mode: 0o755, Content: []byte("x")}}}},
		{"bad tenant", "../x", good},
	} {
		_, err := c.Deploy(ctx, &scopedv1.DeployRequest{Tenant: tc.tenant, Environment: "production", Name: "evil", Bundle: tc.bundle})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("deploy with %s: %v, want InvalidArgument", tc.name, err)
		}
	}
	if after := listing(t, d.state); !slices.Equal(before, after) {
		t.Errorf("refused requests changed the state directory:\nbefore %v\nafter  %v", before, after)
	}
	exts, err := c.ListExtensions(ctx, &scopedv1.ListExtensionsRequest{})
	if err != nil || len(exts.GetExtensions()) != 1 {
		t.Errorf("extensions after bad input: %v %v", exts, err)
	}
}

// TestClientCannotActForOthers: a caller configured for one tenant is
// refused for another; an unknown caller is refused for all.
func TestClientCannotActForOthers(t *testing.T) {
	const appUID, strangerUID = 41001, 41002
	d := startDaemon(t, options{extra: `
[[client]]
name = "acme-app"
uids = [41001]
tenants = ["acme"]
`})
	// Let the test uids reach the socket (the runtime dir is 0711).
	if err := os.Chmod(d.socket, 0o666); err != nil {
		t.Fatal(err)
	}
	root := d.client()
	deploy(t, root, "acme", "production", "whoami", bins.whoami)
	deploy(t, root, "globex", "production", "whoami", bins.whoami)

	if bins.scopectlErr != nil {
		t.Fatal(bins.scopectlErr)
	}
	scopectl := func(uid uint32, args ...string) (string, error) {
		cmd := exec.Command(bins.scopectl, append([]string{"--socket", d.socket}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := scopectl(appUID, "invoke", "--tenant", "acme", "--env", "production", "whoami", "--data", "hi"); err != nil {
		t.Errorf("acme-app invoking for acme: %v: %s", err, out)
	}
	for _, tc := range []struct {
		uid    uint32
		tenant string
	}{{appUID, "globex"}, {strangerUID, "acme"}, {strangerUID, "globex"}} {
		out, err := scopectl(tc.uid, "invoke", "--tenant", tc.tenant, "--env", "production", "whoami", "--data", "hi")
		if err == nil || !strings.Contains(out, "PermissionDenied") {
			t.Errorf("uid %d invoking for %s: %v: %s, want PermissionDenied", tc.uid, tc.tenant, err, out)
		}
	}
	// Listings show only the caller's tenants.
	out, err := scopectl(appUID, "ls", "-o", "json")
	if err != nil || !strings.Contains(out, "acme") || strings.Contains(out, "globex") {
		t.Errorf("acme-app's listing: %v: %s", err, out)
	}
	// A tenant's own application may not move it to another tier.
	if out, err := scopectl(appUID, "tenant", "set", "acme", "--tier", "suspended"); err == nil || !strings.Contains(out, "PermissionDenied") {
		t.Errorf("acme-app setting its own tier: %v: %s, want PermissionDenied", err, out)
	}
}

// cgroupDirs lists the directories of a cgroup root in every hierarchy.
func cgroupDirs(root string) []string {
	var out []string
	matches, _ := filepath.Glob("/sys/fs/cgroup/*" + root)
	out = append(out, matches...)
	if _, err := os.Stat("/sys/fs/cgroup" + root); err == nil {
		out = append(out, "/sys/fs/cgroup"+root)
	}
	return out
}

// processesIn lists live (not zombie) pids whose cgroup lies under root.
// A zombie has left its cgroup already; its reaper is this machine's init.
func processesIn(root string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), ":"+root+"/") {
			continue
		}
		st, _ := os.ReadFile(strings.TrimSuffix(p, "cgroup") + "stat")
		if i := strings.LastIndexByte(string(st), ')'); i > 0 && strings.HasPrefix(string(st[i+1:]), " Z") {
			continue
		}
		out = append(out, p)
	}
	return out
}

// TestCleanStopLeavesNothing: after SIGTERM no cgroup, process, sandbox,
// socket or reattach file of the daemon remains.
func TestCleanStopLeavesNothing(t *testing.T) {
	d := startDaemon(t, options{})
	c := d.client()
	deploy(t, c, "acme", "production", "whoami", bins.whoami)
	deploy(t, c, "acme", "production", "shout", bins.shout)
	for _, ext := range []string{"whoami", "shout"} {
		if _, err := invoke(c, "acme", "production", ext, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if len(processesIn(d.root)) == 0 {
		t.Fatal("no worker process found before the stop: the check would prove nothing")
	}
	d.stop()
	if left := cgroupDirs(d.root); len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}
	if left := processesIn(d.root); len(left) > 0 {
		t.Errorf("processes left: %v", left)
	}
	if _, err := os.Stat(d.runtime); err == nil {
		t.Errorf("runtime dir left: %v", listing(t, d.runtime))
	}
	// The extension store survives the stop.
	if _, err := os.Stat(filepath.Join(d.state, "extensions", "acme", "production", "whoami", "current")); err != nil {
		t.Errorf("the store lost whoami: %v", err)
	}
}

// TestKill9Recovery: after kill -9 the workers live on; a restart removes
// them, their cgroups and sandboxes, and serves the stored extensions.
func TestKill9Recovery(t *testing.T) {
	d := startDaemon(t, options{})
	c := d.client()
	deploy(t, c, "acme", "production", "whoami", bins.whoami)
	if _, err := invoke(c, "acme", "production", "whoami", "x"); err != nil {
		t.Fatal(err)
	}
	orphans := processesIn(d.root)
	if len(orphans) == 0 {
		t.Fatal("no worker before the crash")
	}
	d.kill9()
	c.Close()
	time.Sleep(100 * time.Millisecond)
	if len(processesIn(d.root)) == 0 {
		t.Log("the workers died with the daemon")
	}
	d.start()
	if left := processesIn(d.root); len(left) > 0 {
		t.Errorf("the restart left the crashed run's processes: %v", left)
	}
	c2 := d.client()
	r, err := invoke(c2, "acme", "production", "whoami", "again")
	if err != nil {
		t.Fatalf("invoke after the restart: %v", err)
	}
	if !r.GetFigures().GetCold() {
		t.Error("the first call after a restart should start a worker")
	}
}
