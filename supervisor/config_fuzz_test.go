package supervisor

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// FuzzUnitConfig: LoadConfig never panics; what it refuses wraps
// ErrConfig; what it accepts validates, and written back as TOML (the
// encoder the defaults are checked with) loads as the same configuration.
func FuzzUnitConfig(f *testing.F) {
	for _, s := range []string{
		DefaultConfigTOML,
		"",
		"state_dir = \"/srv/scoped\"\n[isolation]\nby = [\"user\", \"environment\"]\n[pool]\nwarm_min = 2\n" +
			"[[client]]\nname = \"app\"\nuids = [1001]\ntenants = [\"acme\"]\n",
		"sockett = \"/run/x.sock\"\n",
		"[pool]\nmax_wrokers = 3\n",
		"[bogus]\nx = 1\n",
		"[[client]]\nname = \"a\"\nuids = [1]\ntenant = [\"acme\"]\n",
		"socket = \n",
		"[pool]\nmax_workers = \"four\"\n",
		"[limits]\ndefault_timeout = \"ten seconds\"\n",
		"socket = \"relative.sock\"\n",
		"[tiers.gold]\ncpu_weight = 400\nmemory_max = 1073741824\nrate = 50.5\nburst = 100\ntimeout = \"1m\"\n" +
			"egress_allow = [\"203.0.113.0/24:443\"]\nnetwork = \"egress\"\n[tiers.gold.daily_caps]\ncpu_seconds = 3600.0\n",
		"[tiers.standard]\ncpu_weight = 0\n",
		"[tiers.standard]\ncpu_max = nan\n",
		"[tiers.standard]\ncpu_max = inf\n",
		"[tiers.standard]\nbogus = 1\n",
		"[tiers]\nstandard = 1\n",
		"tiers = 1\n",
		"[tenants]\ndefault_tier = \"gold\"\n",
		"[tiers.\"../x\"]\ncpu_weight = 1\n",
		"[limits]\nmax_payload = -1\n",
		"[limits]\nmax_payload = 9223372036854775807\n",
		"[scope]\nid_base = 4294967295\nid_slots = 4294967295\n",
		"runtime_dir = \"/" + strings.Repeat("r", 100) + "\"\n",
		"[control]\nenabled = true\ninterval = \"-1s\"\n",
		"[metering]\nwindow = \"7s\"\n",
		"[[metering.export]]\nkind = \"cloudevents\"\n",
		"[network]\nsubnet = \"10.0.0.0/33\"\n",
		"[log]\nlevel = \"loud\"\n",
		"[metrics]\ninterval = \"1ns\"\n",
		"[[client]]\nname = \"t\"\ntoken = \"short\"\ntenants = [\"*\"]\n",
		"[[client]]\nname = \"t\"\ntoken = \"0123456789abcdef\"\ntenants = [\"*\", \"acme\"]\nadmin = true\n",
		"\xff\xfe",
		"a = 1\na = 2\n",
		"[[x]]\n[[x]]\n",
	} {
		f.Add([]byte(s))
	}
	for _, s := range configKeySeeds(DefaultConfigTOML) {
		f.Add([]byte(s))
	}
	p := filepath.Join(f.TempDir(), "scoped.toml")
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(p)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("LoadConfig: %v, not ErrConfig", err)
			}
			return
		}
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(c); err != nil {
			t.Fatalf("encode an accepted configuration: %v", err)
		}
		if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := LoadConfig(p)
		if err != nil {
			t.Fatalf("an accepted configuration, written back, fails: %v\n%s", err, buf.Bytes())
		}
		// Compared as written (NaN, which a disabled [control] may hold,
		// equals nothing).
		var buf2 bytes.Buffer
		if err := toml.NewEncoder(&buf2).Encode(again); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), buf2.Bytes()) {
			t.Fatalf("an accepted configuration, written back, loads as another:\n%s\nwas\n%s", buf2.Bytes(), buf.Bytes())
		}
	})
}

// configKeySeeds makes a seed of every key of a TOML file, examples in
// comments too: its table header and the key's line.
func configKeySeeds(doc string) []string {
	var out []string
	table := ""
	for _, l := range strings.Split(doc, "\n") {
		l = strings.TrimSpace(l)
		if c, ok := strings.CutPrefix(l, "#"); ok {
			l = strings.TrimSpace(c)
		}
		switch {
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]") && !strings.Contains(l, "\""):
			table = l
		case strings.Contains(l, " = ") && !strings.HasPrefix(l, "["):
			out = append(out, table+"\n"+l+"\n")
		}
	}
	return out
}
