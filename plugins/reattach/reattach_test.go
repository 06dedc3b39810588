package reattach

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "reattach.json")
	if err := os.WriteFile(file, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(file, Info{Addr: "/run/scoped/scoped.sock"}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	var got Info
	data, _ := os.ReadFile(file)
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	want := Info{Protocol: "grpc", ProtocolVersion: 1, Network: "unix", Addr: "/run/scoped/scoped.sock"}
	if got != want {
		t.Errorf("wrote %+v, want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate of what Write wrote: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}

	for _, bad := range []Info{
		{Protocol: "netrpc", Addr: "/s"},
		{ProtocolVersion: 9, Addr: "/s"},
		{Network: "tcp", Addr: "/s"},
		{Addr: "relative.sock"},
		{},
	} {
		if err := Write(file, bad); err == nil {
			t.Errorf("Write(%+v) succeeded", bad)
		}
	}
	if b, _ := os.ReadFile(file); string(b) != string(data) {
		t.Errorf("a refused Write changed the file: %q", b)
	}
}
