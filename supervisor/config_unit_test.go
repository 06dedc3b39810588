package supervisor

import (
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func TestUnitConfigDefaultValidates(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	if !slices.Equal(c.Isolation.By, []string{"environment"}) {
		t.Errorf("default isolation.by = %q, want [environment]", c.Isolation.By)
	}
	if c.Socket != "/run/scoped/scoped.sock" || c.SocketMode != 0o660 {
		t.Errorf("default socket %q mode %#o", c.Socket, c.SocketMode)
	}
	if c.Limits.DefaultTimeout.Duration != 10*time.Second || c.Limits.MaxTimeout.Duration != 5*time.Minute {
		t.Errorf("default timeouts %s / %s", c.Limits.DefaultTimeout, c.Limits.MaxTimeout)
	}
	if len(c.Clients) != 0 {
		t.Errorf("default config has clients: %+v", c.Clients)
	}
	if c.CgroupRoot != "/scoped" || c.CgroupDelegate != "auto" || c.SupervisorCPUWeight != 1000 {
		t.Errorf("default cgroup_root %q, cgroup_delegate %q, supervisor_cpu_weight %d", c.CgroupRoot, c.CgroupDelegate, c.SupervisorCPUWeight)
	}
}

// tomlKeys returns every TOML key path a struct type declares ("pool.warm_min").
func tomlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		k := prefix + tag
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(Duration{}) {
			keys = append(keys, tomlKeys(f.Type, k+".")...)
			continue
		}
		keys = append(keys, k)
	}
	return keys
}

func TestUnitConfigDefaultTOMLDecodesCompletely(t *testing.T) {
	var c Config
	md, err := toml.Decode(DefaultConfigTOML, &c)
	if err != nil {
		t.Fatalf("decode embedded default.toml: %v", err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		t.Fatalf("default.toml has keys Config does not know: %v", u)
	}
	// The file promises every key with its default: every key Config has
	// (but the example-only [[client]] and [[metering.export]] tables) must
	// be in it.
	for _, k := range tomlKeys(reflect.TypeOf(Config{}), "") {
		if k == "client" || k == "metering.export" {
			continue
		}
		if !md.IsDefined(strings.Split(k, ".")...) {
			t.Errorf("default.toml does not show key %q", k)
		}
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "scoped.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUnitConfigLoadOverridesDefaults(t *testing.T) {
	p := writeConfig(t, `
state_dir = "/srv/scoped"
[isolation]
by = ["user", "environment"]
[pool]
warm_min = 2
[[client]]
name = "app"
uids = [1001]
tenants = ["acme"]
`)
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	d := DefaultConfig()
	if c.StateDir != "/srv/scoped" || c.Pool.WarmMin != 2 || !slices.Equal(c.Isolation.By, []string{"user", "environment"}) {
		t.Errorf("overrides not applied: %+v", c)
	}
	if c.Socket != d.Socket || c.Pool.MaxWorkers != d.Pool.MaxWorkers || c.Limits != d.Limits {
		t.Errorf("keys not in the file lost their defaults: %+v", c)
	}
	if len(c.Clients) != 1 || c.Clients[0].Name != "app" || !slices.Equal(c.Clients[0].UIDs, []uint32{1001}) {
		t.Errorf("clients = %+v", c.Clients)
	}
}

func TestUnitConfigLoadRejects(t *testing.T) {
	for name, body := range map[string]string{
		"unknown top-level key": "sockett = \"/run/x.sock\"\n",
		"unknown key in table":  "[pool]\nmax_wrokers = 3\n",
		"unknown table":         "[bogus]\nx = 1\n",
		"unknown client key":    "[[client]]\nname = \"a\"\nuids = [1]\ntenant = [\"acme\"]\n",
		"syntax error":          "socket = \n",
		"wrong type":            "[pool]\nmax_workers = \"four\"\n",
		"bad duration":          "[limits]\ndefault_timeout = \"ten seconds\"\n",
		"invalid value":         "socket = \"relative.sock\"\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadConfig(writeConfig(t, body))
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("LoadConfig = %v, want ErrConfig", err)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		if _, err := LoadConfig(filepath.Join(t.TempDir(), "nope.toml")); !errors.Is(err, ErrConfig) {
			t.Fatalf("LoadConfig = %v, want ErrConfig", err)
		}
	})
}

func TestUnitConfigValidateRejects(t *testing.T) {
	for name, mutate := range map[string]func(c *Config){
		"relative socket":          func(c *Config) { c.Socket = "run/scoped.sock" },
		"empty socket":             func(c *Config) { c.Socket = "" },
		"relative state_dir":       func(c *Config) { c.StateDir = "var/lib/scoped" },
		"relative runtime_dir":     func(c *Config) { c.RuntimeDir = "./run" },
		"relative cgroup_root":     func(c *Config) { c.CgroupRoot = "scoped" },
		"cgroup_delegate yes":      func(c *Config) { c.CgroupDelegate = "yes" },
		"cgroup_delegate empty":    func(c *Config) { c.CgroupDelegate = "" },
		"supervisor weight 0":      func(c *Config) { c.SupervisorCPUWeight = 0 },
		"supervisor weight 10001":  func(c *Config) { c.SupervisorCPUWeight = 10001 },
		"runtime_dir too long":     func(c *Config) { c.RuntimeDir = "/" + strings.Repeat("r", 70) },
		"socket too long":          func(c *Config) { c.Socket = "/" + strings.Repeat("s", 110) },
		"isolation bogus":          func(c *Config) { c.Isolation.By = []string{"bogus"} },
		"isolation tenant":         func(c *Config) { c.Isolation.By = []string{"environment", "tenant"} },
		"default_timeout > max":    func(c *Config) { c.Limits.DefaultTimeout.Duration = c.Limits.MaxTimeout.Duration + time.Second },
		"default_timeout 0":        func(c *Config) { c.Limits.DefaultTimeout.Duration = 0 },
		"default_timeout negative": func(c *Config) { c.Limits.DefaultTimeout.Duration = -time.Second },
		"max_payload 0":            func(c *Config) { c.Limits.MaxPayload = 0 },
		"max_payload above 64 MiB": func(c *Config) { c.Limits.MaxPayload = 64<<20 + 1 },
		"max_result 0":             func(c *Config) { c.Limits.MaxResult = 0 },
		"max_bundle negative":      func(c *Config) { c.Limits.MaxBundle = -1 },
		"max_bundle_files 0":       func(c *Config) { c.Limits.MaxBundleFiles = 0 },
		"max_workers 0":            func(c *Config) { c.Pool.MaxWorkers = 0 },
		"max_concurrent 0":         func(c *Config) { c.Pool.MaxConcurrent = 0 },
		"warm_min > max_workers":   func(c *Config) { c.Pool.WarmMin = c.Pool.MaxWorkers + 1 },
		"warm_min negative":        func(c *Config) { c.Pool.WarmMin = -1 },
		"start_timeout 0":          func(c *Config) { c.Pool.StartTimeout.Duration = 0 },
		"tier ../x":                func(c *Config) { c.Tiers["../x"] = BaseTier() },
		"tier empty name":          func(c *Config) { c.Tiers[""] = BaseTier() },
		"tier uppercase":           func(c *Config) { c.Tiers["Pro"] = BaseTier() },
		"no tiers":                 func(c *Config) { c.Tiers = nil },
		"default_tier missing":     func(c *Config) { c.Tenants.DefaultTier = "gold" },
		"default_tier empty":       func(c *Config) { c.Tenants.DefaultTier = "" },
		"id_base below 65536":      func(c *Config) { c.Scope.IDBase = 1000 },
		"id_slots 0":               func(c *Config) { c.Scope.IDSlots = 0 },
		"log_lines 0":              func(c *Config) { c.Scope.LogLines = 0 },
		"client without uids/gids/token": func(c *Config) {
			c.Clients = []Client{{Name: "app", Tenants: []string{"acme"}}}
		},
		"client short token": func(c *Config) {
			c.Clients = []Client{{Name: "ci", Token: "short-token", Tenants: []string{"*"}}}
		},
		"client bad tenant": func(c *Config) {
			c.Clients = []Client{{Name: "app", UIDs: []uint32{1001}, Tenants: []string{"acme", "../x"}}}
		},
		"client 70-char tenant": func(c *Config) {
			c.Clients = []Client{{Name: "app", GIDs: []uint32{1001}, Tenants: []string{strings.Repeat("a", 70)}}}
		},
		"second client bad": func(c *Config) {
			c.Clients = []Client{{Name: "ok", UIDs: []uint32{1}, Tenants: []string{"*"}}, {Name: "bad"}}
		},
		"log.format xml":   func(c *Config) { c.Log.Format = "xml" },
		"log.format empty": func(c *Config) { c.Log.Format = "" },
	} {
		t.Run(name, func(t *testing.T) {
			c := DefaultConfig()
			mutate(&c)
			if err := c.Validate(); !errors.Is(err, ErrConfig) {
				t.Fatalf("Validate = %v, want ErrConfig", err)
			}
		})
	}
}

func TestUnitConfigValidateAccepts(t *testing.T) {
	for name, mutate := range map[string]func(c *Config){
		"isolation empty":       func(c *Config) { c.Isolation.By = nil },
		"isolation all":         func(c *Config) { c.Isolation.By = []string{"extension", "user", "environment"} },
		"default == max":        func(c *Config) { c.Limits.DefaultTimeout = c.Limits.MaxTimeout },
		"warm_min == max":       func(c *Config) { c.Pool.WarmMin = c.Pool.MaxWorkers },
		"client by uid":         func(c *Config) { c.Clients = []Client{{Name: "a", UIDs: []uint32{1001}, Tenants: []string{"acme"}}} },
		"client by gid":         func(c *Config) { c.Clients = []Client{{Name: "a", GIDs: []uint32{1001}, Tenants: []string{"acme"}}} },
		"client by 16-char tok": func(c *Config) { c.Clients = []Client{{Name: "a", Token: "0123456789abcdef", Tenants: []string{"*"}}} },
		"log.format json":       func(c *Config) { c.Log.Format = "json" },
		"log.format text":       func(c *Config) { c.Log.Format = "text" },
		"log.format journal":    func(c *Config) { c.Log.Format = "journal" },
	} {
		t.Run(name, func(t *testing.T) {
			c := DefaultConfig()
			mutate(&c)
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate = %v, want nil", err)
			}
		})
	}
}

// Values that Validate accepts today but that make every scope creation (or,
// after a SIGHUP, every live scope's limit update) fail in the cgroups
// package, or that are silently ignored by cmd/scoped. A configuration
// error must surface when the file is loaded, not at the first invocation.
func TestUnitConfigValidateRejectsUnusableScopeLimits(t *testing.T) {
	for name, mutate := range map[string]func(c *Config){
		"cpu_weight 10001":       tierMut(func(t *Tier) { t.CPUWeight = 10001 }),
		"cpu_weight 0":           tierMut(func(t *Tier) { t.CPUWeight = 0 }),
		"cpu_max 5000":           tierMut(func(t *Tier) { t.CPUMax = 5000 }),
		"cpu_max nan":            tierMut(func(t *Tier) { t.CPUMax = math.NaN() }),
		"memory_max below 1 MiB": tierMut(func(t *Tier) { t.MemoryMax = 4096 }),
		"scope_memory_max 4096":  tierMut(func(t *Tier) { t.ScopeMemoryMax = 4096 }),
		"scope_pids_max 0":       tierMut(func(t *Tier) { t.ScopePidsMax = 0 }),
		"max_concurrent -1":      tierMut(func(t *Tier) { t.MaxConcurrent = -1 }),
		"rate negative":          tierMut(func(t *Tier) { t.Rate = -1 }),
		"rate inf":               tierMut(func(t *Tier) { t.Rate = math.Inf(1) }),
		"burst negative":         tierMut(func(t *Tier) { t.Burst = -1 }),
		"timeout 1ms":            tierMut(func(t *Tier) { t.Timeout.Duration = time.Millisecond }),
		"timeout above max":      tierMut(func(t *Tier) { t.Timeout.Duration = time.Hour }),
		"cpu_time negative":      tierMut(func(t *Tier) { t.CPUTime.Duration = -time.Second }),
		"max_workers negative":   tierMut(func(t *Tier) { t.MaxWorkers = -1 }),
		"cpu_time with max_concurrent 2": func(c *Config) {
			c.Pool.MaxConcurrent = 2
			tierMut(func(t *Tier) { t.CPUTime.Duration = time.Second })(c)
		},
		"tmp_size negative":    func(c *Config) { c.Scope.TmpSize = -1 },
		"log.level verbose":    func(c *Config) { c.Log.Level = "verbose" },
		"id range beyond 2^32": func(c *Config) { c.Scope.IDSlots = 65536 },
	} {
		t.Run(name, func(t *testing.T) {
			c := DefaultConfig()
			mutate(&c)
			if err := c.Validate(); !errors.Is(err, ErrConfig) {
				t.Fatalf("Validate = %v, want ErrConfig", err)
			}
		})
	}
}

// tierMut changes the default tier.
func tierMut(f func(*Tier)) func(*Config) {
	return func(c *Config) {
		t := c.Tiers[c.Tenants.DefaultTier]
		f(&t)
		c.Tiers[c.Tenants.DefaultTier] = t
	}
}

func TestUnitConfigDurationText(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte("1m30s")); err != nil || d.Duration != 90*time.Second {
		t.Fatalf("UnmarshalText(1m30s) = %v, %v", d, err)
	}
	b, _ := d.MarshalText()
	if string(b) != "1m30s" {
		t.Fatalf("MarshalText = %q", b)
	}
	if err := d.UnmarshalText([]byte("soon")); err == nil {
		t.Fatal("UnmarshalText(soon) accepted")
	}
}

// Parsed values are kept by Validate: the log level, the tiers' allow-lists
// and the network subnet are not parsed again where they are used.
func TestUnitConfigValidateKeepsParsed(t *testing.T) {
	c := DefaultConfig()
	c.Log.Level = "warn"
	c.Network.Subnet = "10.77.0.0/16"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Log.SlogLevel() != slog.LevelWarn {
		t.Errorf("SlogLevel = %v, want WARN", c.Log.SlogLevel())
	}
	if got := c.Network.Config(3, "/x").Subnet.String(); got != "10.77.0.0/16" {
		t.Errorf("network subnet = %s", got)
	}
}
