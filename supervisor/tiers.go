package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/metering"
	"github.com/scoped-io/scoped/netns"
)

// Tier is an operator-defined plan: what each tenant placed in it may use.
// Tenant-wide settings apply to the tenant's cgroup node (all its scopes
// together), scope settings to each of its scopes.
type Tier struct {
	// CPUWeight is the tenant's CPU weight (1..10000): under contention
	// tenants share the CPU in proportion to it, however many scopes each
	// runs.
	CPUWeight uint64 `toml:"cpu_weight"`
	// CPUMax caps the tenant at this many CPUs (0: no cap).
	CPUMax float64 `toml:"cpu_max"`
	// MemoryMax is the tenant's memory in bytes across its scopes (0: no
	// cap beyond the scopes' own).
	MemoryMax int64 `toml:"memory_max"`
	// MemoryLow is the tenant's protected memory in bytes (0: none): under
	// memory pressure the kernel reclaims from tenants above their
	// protection first, and from a tenant below it only when nothing else
	// is left (cgroup v2 memory.low; on v1 the tenant's soft limit, which
	// orders reclaim under the host's pressure only). See memshare.go.
	MemoryLow int64 `toml:"memory_low"`
	// MemoryHigh is the tenant's memory in bytes above which the kernel
	// throttles it and reclaims from it (cgroup v2 memory.high; 0: none;
	// nothing on v1).
	MemoryHigh int64 `toml:"memory_high"`
	// ScopeMemoryMax and ScopePidsMax bound each scope.
	ScopeMemoryMax int64 `toml:"scope_memory_max"`
	ScopePidsMax   int64 `toml:"scope_pids_max"`
	// MaxConcurrent is the tenant's invocations in flight (0: no limit).
	MaxConcurrent int `toml:"max_concurrent"`
	// Rate and Burst are the tenant's token bucket: invocations per second
	// and the bucket's depth (Rate 0: no limit; Burst 0: Rate, at least 1).
	Rate  float64 `toml:"rate"`
	Burst int     `toml:"burst"`
	// Timeout is the longest wall deadline of one invocation (0: the
	// [limits] max_timeout); it also caps the default.
	Timeout Duration `toml:"timeout"`
	// CPUTime is the CPU time one invocation may use (0: no limit). It is
	// read from the worker's cgroup, so it needs workers that serve one
	// invocation at a time ([pool] max_concurrent = 1).
	CPUTime Duration `toml:"cpu_time"`
	// MaxWorkers is per scope and extension version (0: [pool] max_workers).
	MaxWorkers int `toml:"max_workers"`
	// MaxScopes is the tenant's live scopes (0: no limit): each takes one
	// of the host's [scope] id_slots. A new scope past it is refused
	// (RESOURCE_EXHAUSTED with a retry hint) until one goes idle away.
	MaxScopes int `toml:"max_scopes"`
	// Suspended tenants' invocations are refused (FAILED_PRECONDITION) and
	// their live scopes stopped.
	Suspended bool `toml:"suspended"`
	// DailyCaps and MonthlyCaps are spend guards: meter → the most a tenant
	// may use in a UTC day or month (from the metering ledger); past it,
	// invocations get RESOURCE_EXHAUSTED "quota exceeded" until the period
	// rolls over.
	DailyCaps   map[string]float64 `toml:"daily_caps"`
	MonthlyCaps map[string]float64 `toml:"monthly_caps"`
	// Network is what a scope of the tier gets: "none" (loopback only) or
	// "egress" (a veth into scoped's bridge, NAT to the uplink, and only
	// the destinations of the allow-list).
	Network string `toml:"network"`
	// EgressAllow are destinations every tenant of the tier may reach
	// ("CIDR[:ports]", e.g. "203.0.113.0/24:443"); a tenant's own list
	// (scopectl tenant set --allow) adds to it.
	EgressAllow []string `toml:"egress_allow"`
	// EgressRate and IngressRate cap each egress scope's bandwidth, in
	// bytes per second (0: no cap).
	EgressRate  int64 `toml:"egress_rate"`
	IngressRate int64 `toml:"ingress_rate"`
	// Placement, in a fleet, are the node labels ([fleet] labels) the
	// tier's scopes must run on (empty: any node, the shared pool). It is
	// part of the fleet's policy: every node must have the same.
	Placement []string `toml:"placement"`

	// egressRules is EgressAllow parsed by validate.
	egressRules []netns.Rule
}

// DefaultMaxScopes is a tier's max_scopes unless it sets one: a quarter of
// the default 1024 id slots, so that no four tenants can fill a host.
const DefaultMaxScopes = 256

// Tiers are the configured tiers by name. In a configuration file a
// [tiers.NAME] table changes only the keys it names: an existing tier (one
// of the defaults) keeps the rest, a new one starts from [BaseTier].
type Tiers map[string]Tier

// BaseTier is where a tier that the defaults do not define starts.
func BaseTier() Tier {
	return Tier{CPUWeight: 100, ScopeMemoryMax: 256 << 20, ScopePidsMax: 256, MaxScopes: DefaultMaxScopes,
		Network: NetworkNone, EgressAllow: []string{}}
}

// UnmarshalTOML merges the tables of a configuration file into t.
func (t *Tiers) UnmarshalTOML(v any) error {
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("tiers: want a table of tier tables, got %T", v)
	}
	if *t == nil {
		*t = Tiers{}
	}
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		tbl, ok := m[name].(map[string]any)
		if !ok {
			return fmt.Errorf("tiers.%s: want a table, got %T", name, m[name])
		}
		tier, ok := (*t)[name]
		if !ok {
			tier = BaseTier()
		}
		// Round-trip the table through the encoder, so that the tier's
		// fields decode with their own types and unknown keys show up.
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(tbl); err != nil {
			return fmt.Errorf("tiers.%s: %w", name, err)
		}
		md, err := toml.Decode(buf.String(), &tier)
		if err != nil {
			return fmt.Errorf("tiers.%s: %w", name, err)
		}
		if undec := md.Undecoded(); len(undec) > 0 {
			return fmt.Errorf("tiers.%s: unknown keys %v", name, undec)
		}
		(*t)[name] = tier
	}
	return nil
}

// validate checks one tier; pool is the configuration's [pool].
func (t *Tier) validate(name string, pool PoolConfig, lim APILimits) error {
	if err := ident.Check("tier name", name); err != nil {
		return err
	}
	bad := func(f string, a ...any) error { return fmt.Errorf("tiers.%s: "+f, append([]any{name}, a...)...) }
	switch {
	case t.CPUWeight < 1 || t.CPUWeight > 10000:
		return bad("cpu_weight must be in 1..10000")
	case math.IsNaN(t.CPUMax) || t.CPUMax < 0 || t.CPUMax > 4096:
		return bad("cpu_max must be in 0..4096 CPUs (0: no cap)")
	case t.MemoryMax != 0 && t.MemoryMax < 1<<20:
		return bad("memory_max must be 0 (no cap) or at least 1 MiB")
	case t.MemoryLow != 0 && t.MemoryLow < 1<<20:
		return bad("memory_low must be 0 (no protection) or at least 1 MiB")
	case t.MemoryHigh != 0 && t.MemoryHigh < 1<<20:
		return bad("memory_high must be 0 (none) or at least 1 MiB")
	case t.MemoryLow > 0 && t.MemoryHigh > 0 && t.MemoryLow > t.MemoryHigh:
		return bad("memory_low %d is above memory_high %d", t.MemoryLow, t.MemoryHigh)
	case t.MemoryLow > 0 && t.MemoryMax > 0 && t.MemoryLow > t.MemoryMax:
		return bad("memory_low %d is above memory_max %d", t.MemoryLow, t.MemoryMax)
	case t.MemoryHigh > 0 && t.MemoryMax > 0 && t.MemoryHigh > t.MemoryMax:
		return bad("memory_high %d is above memory_max %d", t.MemoryHigh, t.MemoryMax)
	case t.ScopeMemoryMax < 1<<20:
		return bad("scope_memory_max must be at least 1 MiB")
	case t.ScopePidsMax < 1:
		return bad("scope_pids_max must be positive")
	case t.MaxConcurrent < 0:
		return bad("max_concurrent must not be negative (0: no limit)")
	case math.IsNaN(t.Rate) || math.IsInf(t.Rate, 0) || t.Rate < 0 || t.Rate > 1e6:
		return bad("rate must be in 0..1e6 invocations per second (0: no limit)")
	case t.Burst < 0 || t.Burst > 1e6:
		return bad("burst must be in 0..1e6")
	case t.Timeout.Duration < 0 || t.CPUTime.Duration < 0:
		return bad("timeout and cpu_time must not be negative")
	case t.Timeout.Duration > 0 && t.Timeout.Duration < 10*time.Millisecond:
		return bad("timeout must be 0 (the [limits] max_timeout) or at least 10ms")
	case t.Timeout.Duration > lim.MaxTimeout.Duration:
		return bad("timeout %s is longer than [limits] max_timeout %s", t.Timeout, lim.MaxTimeout)
	case t.CPUTime.Duration > 0 && t.CPUTime.Duration < time.Millisecond:
		return bad("cpu_time must be 0 (no limit) or at least 1ms")
	case t.CPUTime.Duration > 0 && pool.MaxConcurrent != 1:
		return bad("cpu_time needs workers that serve one invocation at a time: set [pool] max_concurrent = 1")
	case t.MaxWorkers < 0:
		return bad("max_workers must not be negative (0: [pool] max_workers)")
	case t.MaxScopes < 0:
		return bad("max_scopes must not be negative (0: no limit)")
	case t.MaxWorkers > 0 && t.MaxWorkers < pool.WarmMin:
		return bad("max_workers %d is below [pool] warm_min %d", t.MaxWorkers, pool.WarmMin)
	case t.Network != "" && t.Network != NetworkNone && t.Network != NetworkEgress:
		return bad("network must be %q or %q", NetworkNone, NetworkEgress)
	case t.EgressRate < 0 || t.IngressRate < 0:
		return bad("egress_rate and ingress_rate must not be negative (0: no cap)")
	case t.EgressRate > 0 && t.EgressRate < 1000 || t.IngressRate > 0 && t.IngressRate < 1000:
		return bad("egress_rate and ingress_rate must be 0 (no cap) or at least 1000 bytes per second")
	}
	rules, err := parseAllow(t.EgressAllow)
	if err != nil {
		return bad("egress_allow: %v", err)
	}
	for _, l := range t.Placement {
		if err := ident.Check("placement label", l); err != nil {
			return bad("placement: %v", err)
		}
	}
	t.egressRules = rules
	for period, caps := range map[string]map[string]float64{"daily_caps": t.DailyCaps, "monthly_caps": t.MonthlyCaps} {
		for meter, v := range caps {
			if !slices.Contains(metering.Meters(), meter) {
				return bad("%s: unknown meter %q (one of %s)", period, meter, strings.Join(metering.Meters(), ", "))
			}
			if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
				return bad("%s.%s must be a positive number", period, meter)
			}
		}
	}
	return nil
}

// tenantLimits are the limits of a tenant's cgroup node.
func (t Tier) tenantLimits() cgroups.Limits {
	l := cgroups.Limits{CPUWeight: t.CPUWeight, CPUMax: t.CPUMax, MemoryMax: t.MemoryMax, MemoryHigh: t.MemoryHigh, MemoryLow: t.MemoryLow}
	if l.CPUMax == 0 {
		l.CPUMax = -1
	}
	for _, v := range []*int64{&l.MemoryMax, &l.MemoryHigh, &l.MemoryLow} {
		if *v == 0 {
			*v = -1
		}
	}
	return l
}

// scopeLimits are the limits of each of the tenant's scopes. Scopes of a
// tenant share its CPU equally (the default weight).
func (t Tier) scopeLimits() cgroups.Limits {
	return cgroups.Limits{CPUWeight: 100, CPUMax: -1, MemoryMax: t.ScopeMemoryMax, PidsMax: t.ScopePidsMax}
}

// maxWorkers is the tier's pool bound per scope and extension version.
func (t Tier) maxWorkers(pool PoolConfig) int {
	if t.MaxWorkers > 0 {
		return t.MaxWorkers
	}
	return pool.MaxWorkers
}

// timeouts are the default and the longest wall deadline of an invocation
// of a tenant of this tier.
func (t Tier) timeouts(lim APILimits) (def, longest time.Duration) {
	def, longest = lim.DefaultTimeout.Duration, lim.MaxTimeout.Duration
	if t.Timeout.Duration > 0 {
		longest = t.Timeout.Duration
		def = min(def, longest)
	}
	return def, longest
}

// tierWeights are the CPU weights of the tier nodes: each tier's is the sum
// of its live tenants' weights, so that every tenant's share of the CPU is
// its own weight over the sum of all live tenants' weights, whichever tier
// holds it. Sums beyond the kernel's 10000 are scaled down together, which
// keeps their ratios up to rounding.
func tierWeights(sums map[string]uint64) map[string]uint64 {
	var top uint64
	for _, s := range sums {
		top = max(top, s)
	}
	out := make(map[string]uint64, len(sums))
	for name, s := range sums {
		w := s
		if top > 10000 {
			w = uint64(math.Round(float64(s) * 10000 / float64(top)))
		}
		out[name] = min(max(w, 1), 10000)
	}
	return out
}

// refusalOf names an admission refusal for the metrics.
func refusalOf(err error) string {
	switch {
	case errors.Is(err, ErrSuspended):
		return "suspended"
	case errors.Is(err, ErrRateLimited):
		return "rate"
	case errors.Is(err, ErrConcurrency):
		return "concurrency"
	case errors.Is(err, ErrQuota):
		return "quota"
	case errors.Is(err, ErrLedger):
		return "ledger"
	case errors.Is(err, ErrScopeLimit):
		return "scopes"
	}
	return "other"
}

// Network modes of a tier and a manifest.
const (
	NetworkNone   = "none"
	NetworkEgress = "egress"
)

// maxAllowRules bounds a tier's or a tenant's allow-list.
const maxAllowRules = 256

// parseAllow parses an allow-list (nil if empty).
func parseAllow(list []string) ([]netns.Rule, error) {
	if len(list) > maxAllowRules {
		return nil, fmt.Errorf("%d rules, at most %d", len(list), maxAllowRules)
	}
	if len(list) == 0 {
		return nil, nil
	}
	rules := make([]netns.Rule, 0, len(list))
	for _, s := range list {
		r, err := netns.ParseRule(s)
		if err != nil {
			return nil, err
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// networkOf is the network a worker of ext gets in a scope of tier.
func networkOf(tier Tier, ext ExtensionInfo) (string, error) {
	tn := tier.Network
	if tn == "" {
		tn = NetworkNone
	}
	switch ext.Network {
	case NetworkNone:
		return NetworkNone, nil
	case NetworkEgress:
		if tn != NetworkEgress {
			return "", fmt.Errorf("%w: extension %s needs network egress; its tenant's tier allows none", ErrNetworkDenied, ext.Name)
		}
	}
	return tn, nil
}
