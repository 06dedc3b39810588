package supervisor

// The bundle encoding of the store's fuzz target, shared with the API
// edge's (internal/fuzzbundle).

import (
	"testing"

	"github.com/scoped-io/scoped/internal/fuzzbundle"
)

// fuzzBundle decodes a file list from fuzz bytes (fuzzbundle.Decode).
func fuzzBundle(b []byte) []BundleFile {
	var files []BundleFile
	for _, f := range fuzzbundle.Decode(b) {
		files = append(files, BundleFile(f))
	}
	return files
}

// fuzzBundleSeeds are file lists from the store's tests and their edges.
func fuzzBundleSeeds() [][]byte { return fuzzbundle.Seeds(ManifestFile, unitManifest) }

func dirNames(tb testing.TB, dir string) []string { return fuzzbundle.DirNames(tb, dir) }

func changed(a, b map[string]string) []string { return fuzzbundle.Changed(a, b) }

// checkStored checks a version the store says it stored (see
// fuzzbundle.CheckStored).
func checkStored(t *testing.T, store *Store, info ExtensionInfo, files []BundleFile) {
	t.Helper()
	fs := make([]fuzzbundle.File, 0, len(files))
	for _, f := range files {
		fs = append(fs, fuzzbundle.File(f))
	}
	fuzzbundle.CheckStored(t, store.extDir(info.Tenant, info.Environment, info.Name), info.Version, fs)
}
