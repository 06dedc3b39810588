package main

import (
	"fmt"
	"os"
	"path/filepath"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/internal/gobuild"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// bombScript fork-bombs into its scope's pids limit in the background and
// returns at once; the exec runtime must kill what it left.
const bombScript = `#!/bin/sh
bomb() { bomb | bomb & }
( setsid sh -c 'bomb() { bomb | bomb & }; bomb' & ) 2>/dev/null
bomb 2>/dev/null
sleep 0.2
echo done
`

// buildBundles builds the soak's bundles into dir: the whoami and spin
// examples, the e2e tests' misbehave extension and an exec fork bomb.
func buildBundles(root, dir string) (map[string]*scopedv1.Bundle, error) {
	out := map[string]*scopedv1.Bundle{}
	for _, name := range []string{"whoami", "spin"} {
		b, err := benchmd.BuildBundle(root, filepath.Join(dir, name), name)
		if err != nil {
			return nil, err
		}
		out[name] = b
	}
	mis := filepath.Join(dir, "misbehave")
	if err := os.MkdirAll(mis, 0o755); err != nil {
		return nil, err
	}
	if err := gobuild.Build(root, filepath.Join(mis, "misbehave"), "./e2e/testdata/misbehave", false); err != nil {
		return nil, err
	}
	manifest, err := os.ReadFile(filepath.Join(root, "e2e", "testdata", "misbehave", "manifest.toml"))
	if err != nil {
		return nil, err
	}
	worker, err := os.ReadFile(filepath.Join(mis, "misbehave"))
	if err != nil {
		return nil, err
	}
	out["misbehave"] = &scopedv1.Bundle{Files: []*scopedv1.File{
		{Path: "manifest.toml", Mode: 0o644, Content: manifest},
		{Path: "misbehave", Mode: 0o755, Content: worker},
	}}
	out["bomb"] = &scopedv1.Bundle{Files: []*scopedv1.File{
		{Path: "manifest.toml", Mode: 0o644, Content: []byte(fmt.Sprintf("runtime = %q\nentrypoint = %q\n", "exec", "bomb.sh"))},
		{Path: "bomb.sh", Mode: 0o755, Content: []byte(bombScript)},
	}}
	return out, nil
}
