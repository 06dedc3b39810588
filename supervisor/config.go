package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/scoped-io/scoped/control"
	"github.com/scoped-io/scoped/fleet"
	"github.com/scoped-io/scoped/internal/confval"
	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/metering"
	"github.com/scoped-io/scoped/netns"
	"github.com/scoped-io/scoped/sandbox"
)

// Config is the daemon's configuration, read from a TOML file (see
// DefaultConfigTOML for every key with its default). The tables of a
// subsystem are that package's own config type, with its keys and its
// Validate ([control]: control.Config, [metering]: metering.Config and
// export.Config, [network]: netns.Settings); Validate checks them all and
// keeps what it parses (allow-lists, the subnet, the log level, exporter
// tokens) parsed, so that nothing is parsed again where it is used.
type Config struct {
	// Socket is the API's unix socket; SocketGroup (a name or gid) owns it
	// with SocketMode, so members of that group may connect.
	Socket      string `toml:"socket"`
	SocketGroup string `toml:"socket_group"`
	SocketMode  uint32 `toml:"socket_mode"`
	// ReattachFile is where the daemon publishes go-plugin reattach info.
	ReattachFile string `toml:"reattach_file"`
	// StateDir keeps the extension store (survives restarts); RuntimeDir
	// keeps sockets and sandboxes (removed at stop).
	StateDir   string `toml:"state_dir"`
	RuntimeDir string `toml:"runtime_dir"`
	// CgroupRoot is the absolute cgroup path scoped owns outside the
	// delegated layout.
	CgroupRoot string `toml:"cgroup_root"`
	// CgroupDelegate chooses the delegated layout (cgroups.OpenDelegated:
	// the daemon in <its cgroup>/supervisor, the tree under <its
	// cgroup>/scopes): "auto" where systemd started it in a service's
	// cgroup on a pure cgroup v2 host, "on" always (the daemon refuses to
	// start where it cannot), "off" never (CgroupRoot).
	CgroupDelegate string `toml:"cgroup_delegate"`
	// SupervisorCPUWeight is the cpu.weight (1..10000) of the daemon's
	// leaf in the delegated layout, beside the scopes' node (100).
	SupervisorCPUWeight uint64 `toml:"supervisor_cpu_weight"`
	// CgroupFavorDynMods turns the host's cgroup2 favordynmods on while
	// the daemon runs (cgroups.FavorDynMods): a sandbox's start no longer
	// waits for an RCU grace period. Host-wide, so off by default.
	CgroupFavorDynMods bool `toml:"cgroup_favordynmods"`
	// ExecWorker is the exec runtime's worker binary (scoped-exec); empty:
	// next to the daemon's binary.
	ExecWorker string `toml:"exec_worker"`

	Isolation  Isolation        `toml:"isolation"`
	Limits     APILimits        `toml:"limits"`
	Pool       PoolConfig       `toml:"pool"`
	Scope      ScopeConfig      `toml:"scope"`
	Tenants    TenantsConfig    `toml:"tenants"`
	Tiers      Tiers            `toml:"tiers"`
	Clients    []Client         `toml:"client"`
	Metrics    MetricsConfig    `toml:"metrics"`
	Accounting AccountingConfig `toml:"accounting"`
	Control    control.Config   `toml:"control"`
	Metering   metering.Config  `toml:"metering"`
	Network    netns.Settings   `toml:"network"`
	Fleet      fleet.Config     `toml:"fleet"`
	Log        LogConfig        `toml:"log"`
}

// Isolation is the isolation policy: a scope is the tenant plus the listed
// request fields ("environment", "user", "extension").
type Isolation struct {
	By []string `toml:"by"`
}

// APILimits bound what one request may ask.
type APILimits struct {
	DefaultTimeout Duration `toml:"default_timeout"`
	MaxTimeout     Duration `toml:"max_timeout"`
	MaxPayload     int64    `toml:"max_payload"`
	MaxResult      int64    `toml:"max_result"`
	MaxBundle      int64    `toml:"max_bundle"`
	MaxBundleFiles int      `toml:"max_bundle_files"`
	KeepVersions   int      `toml:"keep_versions"` // versions kept per extension (0: all)
}

// PoolConfig shapes the worker pool of every scope.
type PoolConfig struct {
	WarmMin       int      `toml:"warm_min"`       // workers kept started per extension of a live scope
	MaxWorkers    int      `toml:"max_workers"`    // per scope and extension version
	MaxConcurrent int      `toml:"max_concurrent"` // invocations at once per worker (exec-runtime workers: 1)
	IdleTimeout   Duration `toml:"idle_timeout"`   // stop a worker unused this long (beyond warm_min)
	RecycleAfter  int64    `toml:"recycle_after"`  // replace a worker after this many invocations (0: never)
	MaxAge        Duration `toml:"max_age"`        // replace a worker older than this (0: never)
	StartTimeout  Duration `toml:"start_timeout"`  // a worker must answer go-plugin's handshake within this
}

// ScopeConfig are the sandbox settings of every scope (its resource limits
// come from its tenant's tier).
type ScopeConfig struct {
	TmpSize  int64  `toml:"tmp_size"`  // bytes of /tmp per sandbox
	IDBase   uint32 `toml:"id_base"`   // first host uid of the scopes' ranges
	IDSlots  uint32 `toml:"id_slots"`  // number of 65536-id ranges
	LogLines int    `toml:"log_lines"` // lines kept per scope log ring
	// Launcher starts the sandboxes: "native", "libcontainer" or "" (the
	// default: sandbox.DefaultLauncher).
	Launcher string `toml:"launcher"`
	// ReclaimFree: while fewer than this fraction of id_slots are free, a
	// new scope reclaims an idle scope of the tenant holding the most
	// (0: only when none is free).
	ReclaimFree float64 `toml:"reclaim_free"`
}

// TenantsConfig places tenants in tiers.
type TenantsConfig struct {
	// DefaultTier is the tier of a tenant that was never assigned one.
	DefaultTier string `toml:"default_tier"`
	// MemoryMax is the memory of all tenants together, in bytes: the
	// memory.max of the cgroup root (0: no cap). Under it the tiers'
	// memory_low decide who is reclaimed first, without the host's own
	// pressure (on v2; v1's soft limits act on the host's pressure only).
	MemoryMax int64 `toml:"memory_max"`
}

// Client maps a caller to the tenants it may act for. A caller matches by
// peer uid, peer gid (SO_PEERCRED on the unix socket) or bearer token.
type Client struct {
	Name    string   `toml:"name"`
	UIDs    []uint32 `toml:"uids"`
	GIDs    []uint32 `toml:"gids"`
	Token   string   `toml:"token"`
	Tenants []string `toml:"tenants"` // tenant ids, or "*" for all
	Admin   bool     `toml:"admin"`   // may assign tenants to tiers
}

// MetricsConfig sets up the per-scope metrics and their HTTP endpoint.
type MetricsConfig struct {
	Listen   string   `toml:"listen"`   // host:port of /metrics; "off" disables the endpoint
	Interval Duration `toml:"interval"` // how often scopes are sampled
}

// AccountingConfig chooses where per-scope usage comes from.
type AccountingConfig struct {
	// Mode: "auto" (eBPF where it loads, else the cgroup files), "ebpf"
	// (refuse to start without it) or "cgroupfs".
	Mode string `toml:"mode"`
	// BPFStats turns the kernel's BPF run-time statistics on while the
	// daemon runs (kernel.bpf_stats_enabled, host-wide: every BPF program
	// on the host then pays for its timing), for the metrics of the
	// accounting programs' own cost.
	BPFStats bool `toml:"bpf_stats"`
}

// LogConfig selects the daemon's log format.
type LogConfig struct {
	// Format: "auto" (journal when stderr is the journal's stream, else
	// text), "text", "json" or "journal" (journald's native protocol).
	Format string `toml:"format"`
	Level  string `toml:"level"` // debug, info, warn, error

	level slog.Level // Level parsed by Validate
}

// SlogLevel is the level, as Validate parsed it.
func (l LogConfig) SlogLevel() slog.Level { return l.level }

// Duration is a time.Duration written as "5s" in TOML.
type Duration = confval.Duration

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("invalid configuration")

// DefaultConfig returns the embedded defaults.
func DefaultConfig() Config {
	var c Config
	if _, err := toml.Decode(DefaultConfigTOML, &c); err != nil {
		panic("embedded default config: " + err.Error())
	}
	return c
}

// LoadConfig reads a TOML file over the defaults; unknown keys are errors.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %s: %w", ErrConfig, path, err)
	}
	if undec := md.Undecoded(); len(undec) > 0 {
		return Config{}, fmt.Errorf("%w: %s: unknown keys %v", ErrConfig, path, undec)
	}
	return c, c.Validate()
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: "+f, append([]any{ErrConfig}, a...)...) }
	for _, p := range []struct{ name, v string }{{"socket", c.Socket}, {"state_dir", c.StateDir}, {"runtime_dir", c.RuntimeDir}, {"cgroup_root", c.CgroupRoot}} {
		if !filepath.IsAbs(p.v) {
			return bad("%s %q must be an absolute path", p.name, p.v)
		}
	}
	switch c.CgroupDelegate {
	case "auto", "on", "off":
	default:
		return bad("cgroup_delegate must be auto, on or off")
	}
	if c.SupervisorCPUWeight < 1 || c.SupervisorCPUWeight > 10000 {
		return bad("supervisor_cpu_weight must be in 1..10000")
	}
	// go-plugin puts each worker's socket at <runtime_dir>/sockets/
	// plugin-dir<10 digits>/plugin<10 digits>; a unix socket path has at
	// most 107 bytes, and a longer one fails only when a worker starts.
	if n := len(filepath.Clean(c.RuntimeDir)) + len("/sockets/plugin-dir0123456789/plugin0123456789"); n > 107 {
		return bad("runtime_dir %q is too long: worker sockets under it would need %d bytes, a unix socket path has at most 107", c.RuntimeDir, n)
	}
	if len(c.Socket) > 107 {
		return bad("socket %q is longer than the 107 bytes of a unix socket path", c.Socket)
	}
	for _, f := range c.Isolation.By {
		if !slices.Contains([]string{"environment", "user", "extension"}, f) {
			return bad("isolation.by: %q is not one of environment, user, extension", f)
		}
	}
	l := c.Limits
	switch {
	case l.DefaultTimeout.Duration <= 0 || l.MaxTimeout.Duration < l.DefaultTimeout.Duration:
		return bad("limits: need 0 < default_timeout <= max_timeout")
	case l.MaxPayload <= 0 || l.MaxResult <= 0 || l.MaxBundle <= 0 || l.MaxBundleFiles <= 0:
		return bad("limits: max_payload, max_result, max_bundle and max_bundle_files must be positive")
	case l.MaxPayload > 64<<20 || l.MaxResult > 64<<20:
		return bad("limits: max_payload and max_result are capped at 64 MiB")
	case l.KeepVersions < 0:
		return bad("limits: keep_versions must not be negative (0: keep every version)")
	}
	p := c.Pool
	switch {
	case p.MaxWorkers < 1 || p.MaxConcurrent < 1:
		return bad("pool: max_workers and max_concurrent must be at least 1")
	case p.WarmMin < 0 || p.WarmMin > p.MaxWorkers:
		return bad("pool: warm_min must be in 0..max_workers")
	case p.StartTimeout.Duration <= 0:
		return bad("pool: start_timeout must be positive")
	}
	if c.Scope.IDBase < 65536 || c.Scope.IDSlots == 0 {
		return bad("scope: id_base must be at least 65536 and id_slots positive")
	}
	if uint64(c.Scope.IDBase)+uint64(c.Scope.IDSlots)<<16 > 1<<32-2 {
		return bad("scope: %d id slots from %d overflow 32-bit ids", c.Scope.IDSlots, c.Scope.IDBase)
	}
	if !(c.Scope.ReclaimFree >= 0 && c.Scope.ReclaimFree < 1) {
		return bad("scope: reclaim_free must be in [0, 1)")
	}
	switch sandbox.Launcher(c.Scope.Launcher) {
	case "", sandbox.LauncherNative, sandbox.LauncherLibcontainer:
	default:
		return bad("scope: launcher %q: want %q, %q or empty", c.Scope.Launcher, sandbox.LauncherNative, sandbox.LauncherLibcontainer)
	}
	if c.Scope.TmpSize < 0 {
		return bad("scope: tmp_size must not be negative (0: the sandbox default)")
	}
	if len(c.Tiers) == 0 {
		return bad("no tiers defined")
	}
	if m := c.Tenants.MemoryMax; m != 0 && m < 1<<20 {
		return bad("tenants.memory_max must be 0 (no cap) or at least 1 MiB")
	}
	if _, ok := c.Tiers[c.Tenants.DefaultTier]; !ok {
		return bad("tenants.default_tier %q is not a configured tier", c.Tenants.DefaultTier)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Tiers)) {
		t := c.Tiers[name]
		if err := t.validate(name, c.Pool, c.Limits); err != nil {
			return bad("%v", err)
		}
		c.Tiers[name] = t // with its parsed allow-list
	}
	if c.Scope.LogLines < 1 {
		return bad("scope: log_lines must be positive")
	}
	for i, cl := range c.Clients {
		if len(cl.UIDs)+len(cl.GIDs) == 0 && cl.Token == "" {
			return bad("client %d (%s): needs uids, gids or a token", i, cl.Name)
		}
		if cl.Token != "" && len(cl.Token) < 16 {
			return bad("client %d (%s): token shorter than 16 characters", i, cl.Name)
		}
		for _, t := range cl.Tenants {
			if t != "*" {
				if err := ident.Check("tenant", t); err != nil {
					return bad("client %d (%s): %v", i, cl.Name, err)
				}
			}
		}
	}
	switch c.Accounting.Mode {
	case "auto", "ebpf", "cgroupfs":
	default:
		return bad("accounting.mode must be auto, ebpf or cgroupfs")
	}
	if err := c.Metering.Validate(); err != nil {
		return bad("%v", err)
	}
	if err := c.Network.Validate(); err != nil {
		return bad("%v", err)
	}
	if err := c.Control.Validate(); err != nil {
		return bad("control: %v", err)
	}
	if err := c.Fleet.Validate(); err != nil {
		return bad("%v", err)
	}
	if c.Metrics.Interval.Duration < 100*time.Millisecond {
		return bad("metrics.interval must be at least 100ms")
	}
	switch c.Log.Format {
	case "auto", "text", "json", "journal":
	default:
		return bad("log.format must be auto, text, json or journal")
	}
	if err := c.Log.level.UnmarshalText([]byte(c.Log.Level)); err != nil {
		return bad("log.level %q is not debug, info, warn or error", c.Log.Level)
	}
	return nil
}

// execWorker resolves the exec runtime's worker binary.
func (c *Config) execWorker() string {
	if c.ExecWorker != "" {
		return c.ExecWorker
	}
	self, err := os.Executable()
	if err != nil {
		return "scoped-exec"
	}
	return filepath.Join(filepath.Dir(self), "scoped-exec")
}
