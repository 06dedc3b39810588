package main

import (
	"fmt"
	"path"

	benchmd "github.com/scoped-io/scoped/bench"
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

// buildBundles builds the soak's bundles: the whoami and spin examples,
// the e2e tests' misbehave extension and an exec fork bomb.
func buildBundles(kit *benchmd.Kit) (map[string]*scopedv1.Bundle, error) {
	out := map[string]*scopedv1.Bundle{}
	for _, pkg := range []string{"./examples/whoami", "./examples/spin", "./e2e/testdata/misbehave"} {
		b, err := kit.Bundle(pkg)
		if err != nil {
			return nil, err
		}
		out[path.Base(pkg)] = b
	}
	out["bomb"] = &scopedv1.Bundle{Files: []*scopedv1.File{
		{Path: "manifest.toml", Mode: 0o644, Content: []byte(fmt.Sprintf("runtime = %q\nentrypoint = %q\n", "exec", "bomb.sh"))},
		{Path: "bomb.sh", Mode: 0o755, Content: []byte(bombScript)},
	}}
	return out, nil
}
