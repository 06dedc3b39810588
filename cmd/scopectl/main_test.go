package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/scoped-io/scoped/client/clienttest"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

type result struct {
	code           int
	stdout, stderr string
}

// cli runs scopectl against the fake daemon on sock.
func cli(t *testing.T, sock string, stdin io.Reader, args ...string) result {
	t.Helper()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var out, errb bytes.Buffer
	code := run(append([]string{"--socket", sock, "--token", "tok"}, args...), stdin, &out, &errb)
	return result{code, out.String(), errb.String()}
}

func (r result) ok(t *testing.T) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	return r
}

func writeExt(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "manifest.toml"), []byte("runtime = \"exec\"\nentry = \"bin/shout.sh\"\n"), 0o644))
	must(t, os.MkdirAll(filepath.Join(dir, "bin"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "bin", "shout.sh"), []byte("#!/bin/sh\ntr a-z A-Z\n"), 0o700))
	must(t, os.WriteFile(filepath.Join(dir, "bin", "README"), []byte("odd mode\n"), 0o600))
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestDeploy(t *testing.T) {
	srv := &clienttest.Server{}
	sock := clienttest.Start(t, srv)
	dir := writeExt(t)

	r := cli(t, sock, nil, "deploy", "--tenant", "acme", "--env", "production", "--name", "shout", dir).ok(t)
	call, _ := srv.Last("Deploy")
	req := call.Request.(*scopedv1.DeployRequest)
	if req.GetTenant() != "acme" || req.GetEnvironment() != "production" || req.GetName() != "shout" {
		t.Errorf("request %v", req)
	}
	got := map[string]uint32{}
	for _, f := range req.GetBundle().GetFiles() {
		got[f.GetPath()] = f.GetMode()
	}
	want := map[string]uint32{"manifest.toml": 0o644, "bin/shout.sh": 0o755, "bin/README": 0o644}
	if len(got) != len(want) {
		t.Errorf("files %v, want %v", got, want)
	}
	for p, m := range want {
		if got[p] != m {
			t.Errorf("%s: mode %o, want %o (all: %v)", p, got[p], m, got)
		}
	}
	if md := call.Metadata.Get("authorization"); len(md) != 1 || md[0] != "Bearer tok" {
		t.Errorf("authorization %q", md)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[1], "shout") ||
		!strings.Contains(lines[1], "v1") || !strings.Contains(lines[1], "sha256:") || !strings.Contains(lines[1], "deployed") {
		t.Errorf("stdout:\n%s", r.stdout)
	}

	// The same content again: unchanged.
	r = cli(t, sock, nil, "deploy", "--tenant", "acme", "--env", "production", "--name", "shout", dir).ok(t)
	if !strings.Contains(r.stdout, "unchanged") {
		t.Errorf("second deploy:\n%s", r.stdout)
	}
	// -o json: the DeployResponse.
	r = cli(t, sock, nil, "-o", "json", "deploy", "--tenant", "acme", "--env", "production", "--name", "shout", dir).ok(t)
	var resp struct {
		Extension struct{ Name, Version, Digest string }
		Unchanged bool
	}
	if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	if resp.Extension.Name != "shout" || !resp.Unchanged || !strings.HasPrefix(resp.Extension.Digest, "sha256:") {
		t.Errorf("json %+v", resp)
	}
}

func TestDeployRefusesSymlink(t *testing.T) {
	srv := &clienttest.Server{}
	sock := clienttest.Start(t, srv)
	dir := writeExt(t)
	must(t, os.Symlink("/etc/passwd", filepath.Join(dir, "bin", "passwd")))

	r := cli(t, sock, nil, "deploy", "--tenant", "acme", "--env", "production", "--name", "shout", dir)
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	want := "refusing symlink " + filepath.Join(dir, "bin", "passwd") + " -> /etc/passwd"
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr %q, want it to contain %q", r.stderr, want)
	}
	if _, ok := srv.Last("Deploy"); ok {
		t.Error("Deploy was called despite the symlink")
	}
}

func TestDeployUsage(t *testing.T) {
	sock := clienttest.Start(t, &clienttest.Server{})
	r := cli(t, sock, nil, "deploy", "--tenant", "acme", writeExt(t))
	if r.code != 2 || !strings.Contains(r.stderr, "missing --env, --name") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	r = cli(t, sock, nil, "deploy", "--tenant", "acme", "--env", "p", "--name", "n")
	if r.code != 2 || !strings.Contains(r.stderr, "missing argument") {
		t.Errorf("no DIR: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestInvoke(t *testing.T) {
	srv := &clienttest.Server{}
	sock := clienttest.Start(t, srv)

	// --data after NAME, result bytes exactly (no newline added), nothing on stderr.
	r := cli(t, sock, nil, "invoke", "--tenant", "acme", "--env", "production", "--user", "u1",
		"--meta", "a=1", "--meta", "b=x=y", "--timeout", "3s", "shout", "--data", "hello").ok(t)
	if r.stdout != "HELLO" {
		t.Errorf("stdout %q, want %q", r.stdout, "HELLO")
	}
	if r.stderr != "" {
		t.Errorf("stderr without -v: %q", r.stderr)
	}
	call, _ := srv.Last("Invoke")
	req := call.Request.(*scopedv1.InvokeRequest)
	if req.GetExtension() != "shout" || req.GetUser() != "u1" || req.GetMetadata()["a"] != "1" ||
		req.GetMetadata()["b"] != "x=y" || req.GetTimeout().AsDuration() != 3*time.Second {
		t.Errorf("request %v", req)
	}

	// Payload from stdin, binary-safe; -v puts the figures on stderr.
	in := "line one\nline two\n\x00\xff"
	r = cli(t, sock, strings.NewReader(in), "-v", "invoke", "--tenant", "acme", "--env", "production", "shout").ok(t)
	if r.stdout != strings.ToUpper(in) {
		t.Errorf("stdout %q, want %q", r.stdout, strings.ToUpper(in))
	}
	if !strings.Contains(r.stderr, "scope acme.production") || !strings.Contains(r.stderr, "cold") {
		t.Errorf("-v stderr %q", r.stderr)
	}

	// An empty --data is a payload, stdin is not read.
	r = cli(t, sock, strings.NewReader("not me"), "invoke", "--tenant", "acme", "--env", "production", "--data", "", "shout").ok(t)
	if r.stdout != "" {
		t.Errorf("stdout %q with --data ''", r.stdout)
	}
}

func TestInvokeError(t *testing.T) {
	sock := clienttest.Start(t, &clienttest.Server{})
	r := cli(t, sock, nil, "invoke", "--tenant", "acme", "--env", "production", clienttest.FailExtension, "--data", "x")
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q", r.stdout)
	}
	if want := "scopectl invoke: FailedPrecondition: " + clienttest.FailMessage + "\n"; r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
}

func TestDaemonNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "scoped.sock")
	r := cli(t, sock, nil, "ls")
	if r.code != 1 || r.stderr != "scopectl ls: scoped is not running? no socket at "+sock+"\n" {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestLs(t *testing.T) {
	srv := &clienttest.Server{}
	sock := clienttest.Start(t, srv)
	dir := writeExt(t)
	cli(t, sock, nil, "deploy", "--tenant", "acme", "--env", "production", "--name", "shout", dir).ok(t)
	cli(t, sock, nil, "deploy", "--tenant", "globex", "--env", "staging", "--name", "whoami", dir).ok(t)

	r := cli(t, sock, nil, "ls").ok(t)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("ls:\n%s", r.stdout)
	}
	if f := strings.Fields(lines[0]); strings.Join(f, " ") != "TENANT ENV NAME VERSION RUNTIME SIZE CREATED DIGEST" {
		t.Errorf("header %q", lines[0])
	}
	if f := strings.Fields(lines[1]); f[0] != "acme" || f[1] != "production" || f[2] != "shout" || f[3] != "v1" || f[4] != "exec" {
		t.Errorf("row %q", lines[1])
	}
	// Columns are aligned: every row starts its NAME where the header does.
	col := strings.Index(lines[0], "NAME")
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l[col:], "shout") && !strings.HasPrefix(l[col:], "whoami") {
			t.Errorf("misaligned row %q", l)
		}
	}

	r = cli(t, sock, nil, "ls", "--tenant", "globex", "-o", "json").ok(t)
	var resp struct {
		Extensions []struct{ Tenant, Name string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	if len(resp.Extensions) != 1 || resp.Extensions[0].Tenant != "globex" || resp.Extensions[0].Name != "whoami" {
		t.Errorf("json %+v", resp)
	}
	call, _ := srv.Last("ListExtensions")
	if call.Request.(*scopedv1.ListExtensionsRequest).GetTenant() != "globex" {
		t.Errorf("request %v", call.Request)
	}
}

func TestScopesInspectRm(t *testing.T) {
	srv := &clienttest.Server{}
	sock := clienttest.Start(t, srv)

	r := cli(t, sock, nil, "scopes", "--tenant", "acme").ok(t)
	if !strings.Contains(r.stdout, "acme.production") || !strings.HasPrefix(r.stdout, "SCOPE") {
		t.Errorf("scopes:\n%s", r.stdout)
	}
	r = cli(t, sock, nil, "inspect", "acme.production").ok(t)
	for _, want := range []string{"Scope:", "acme.production", "w-1", "4242", "128.0 MiB"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, r.stdout)
		}
	}
	r = cli(t, sock, nil, "-o", "json", "inspect", "acme.production").ok(t)
	var s struct {
		Key     string
		HostUid int `json:"hostUid"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || s.Key != "acme.production" || s.HostUid != 100000 {
		t.Errorf("inspect json %+v %v:\n%s", s, err, r.stdout)
	}
	r = cli(t, sock, nil, "inspect", "nope")
	if r.code != 1 || !strings.Contains(r.stderr, "NotFound: scope \"nope\" not found") {
		t.Errorf("inspect nope: exit %d, stderr %q", r.code, r.stderr)
	}

	cli(t, sock, nil, "deploy", "--tenant", "acme", "--env", "production", "--name", "shout", writeExt(t)).ok(t)
	r = cli(t, sock, nil, "rm", "--tenant", "acme", "--env", "production", "shout").ok(t)
	if r.stdout != "removed acme/production/shout\n" {
		t.Errorf("rm: %q", r.stdout)
	}
	r = cli(t, sock, nil, "rm", "--tenant", "acme", "--env", "production", "shout")
	if r.code != 1 || !strings.Contains(r.stderr, "NotFound") {
		t.Errorf("rm again: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestLogs(t *testing.T) {
	srv := &clienttest.Server{}
	ts := timestamppb.New(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	srv.AddLog(&scopedv1.LogEntry{Time: ts, Scope: "acme.production", Worker: "w-1", Extension: "shout", InvocationId: "inv-1", Stream: "stderr", Line: "first"})
	srv.AddLog(&scopedv1.LogEntry{Time: ts, Scope: "acme.production", Worker: "w-1", Extension: "whoami", Stream: "stdout", Line: "second"})
	sock := clienttest.Start(t, srv)

	r := cli(t, sock, nil, "logs", "--tenant", "acme").ok(t)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], "inv-1 stderr: first") || !strings.HasSuffix(lines[1], "- stdout: second") {
		t.Errorf("logs:\n%s", r.stdout)
	}
	r = cli(t, sock, nil, "logs", "--extension", "whoami", "-o", "json").ok(t)
	lines = strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	var e struct{ Line, Extension string }
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &e) != nil || e.Line != "second" {
		t.Errorf("logs -o json:\n%s", r.stdout)
	}
	r = cli(t, sock, nil, "logs", "--tail", "1").ok(t)
	if strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("--tail 1:\n%s", r.stdout)
	}
}

func TestUsage(t *testing.T) {
	sock := clienttest.Start(t, &clienttest.Server{})
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		var out, errb bytes.Buffer
		if code := run(args, nil, &out, &errb); code != 0 || !strings.Contains(out.String(), "Usage:\n  scopectl [global flags] COMMAND") {
			t.Errorf("%v: exit %d, stdout %q", args, code, out.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"help", "invoke"}, nil, &out, &errb); code != 0 || !strings.Contains(out.String(), "-meta key=value") {
		t.Errorf("help invoke: exit %d, stdout %q", code, out.String())
	}
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"--bogus", "ls"},
		{"ls", "--bogus"},
		{"ls", "extra"},
		{"-o", "yaml", "ls"},
		{"invoke", "--tenant", "acme", "--env", "production"},
		{"invoke", "--env", "production", "shout"},
		{"invoke", "--tenant", "a", "--env", "e", "--meta", "novalue", "x"},
		{"inspect"},
		{"rm", "--tenant", "acme", "shout"},
		{"logs", "--tail", "-1"},
	} {
		r := cli(t, sock, nil, args...)
		if r.code != 2 {
			t.Errorf("%q: exit %d, want 2; stderr %q", args, r.code, r.stderr)
		}
	}
}

func TestSocketFromEnv(t *testing.T) {
	sock := clienttest.Start(t, &clienttest.Server{})
	t.Setenv("SCOPED_SOCKET", sock)
	var out, errb bytes.Buffer
	if code := run([]string{"ls"}, nil, &out, &errb); code != 0 {
		t.Errorf("exit %d: %s", code, errb.String())
	}
}
