package supervisor

import (
	"errors"
	"strings"
	"testing"

	"github.com/scoped-io/scoped/cgroups"
)

func TestUnitTierMemorySharesValidated(t *testing.T) {
	const mib = int64(1 << 20)
	for name, c := range map[string]struct {
		mutate func(*Tier)
		want   string // "" accepted, else part of the error
	}{
		"none":                 {func(*Tier) {}, ""},
		"low only":             {func(t *Tier) { t.MemoryLow = 64 * mib }, ""},
		"high only":            {func(t *Tier) { t.MemoryHigh = 64 * mib }, ""},
		"low = high = max":     {func(t *Tier) { t.MemoryLow, t.MemoryHigh, t.MemoryMax = mib, mib, mib }, ""},
		"low below max":        {func(t *Tier) { t.MemoryLow, t.MemoryMax = 64*mib, 128*mib }, ""},
		"low below 1 MiB":      {func(t *Tier) { t.MemoryLow = 4096 }, "memory_low must be 0"},
		"low negative":         {func(t *Tier) { t.MemoryLow = -1 }, "memory_low must be 0"},
		"high below 1 MiB":     {func(t *Tier) { t.MemoryHigh = 1 }, "memory_high must be 0"},
		"high negative":        {func(t *Tier) { t.MemoryHigh = -mib }, "memory_high must be 0"},
		"low above high":       {func(t *Tier) { t.MemoryLow, t.MemoryHigh = 128*mib, 64*mib }, "memory_low 134217728 is above memory_high"},
		"low above max":        {func(t *Tier) { t.MemoryLow, t.MemoryMax = 128*mib, 64*mib }, "memory_low 134217728 is above memory_max"},
		"high above max":       {func(t *Tier) { t.MemoryHigh, t.MemoryMax = 128*mib, 64*mib }, "memory_high 134217728 is above memory_max"},
		"low above high, max0": {func(t *Tier) { t.MemoryLow, t.MemoryHigh = 2*mib, mib }, "is above memory_high"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			tierMut(c.mutate)(&cfg)
			err := cfg.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case c.want != "" && (!errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("Validate = %v, want ErrConfig with %q", err, c.want)
			}
		})
	}
}

func TestUnitTierMemoryFromTOML(t *testing.T) {
	p := writeConfig(t, `
[tiers.gold]
memory_low = 1073741824
memory_high = 2147483648
memory_max = 4294967296
`)
	cfg, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	g := cfg.Tiers["gold"]
	if g.MemoryLow != 1<<30 || g.MemoryHigh != 2<<30 || g.MemoryMax != 4<<30 {
		t.Errorf("gold = low %d high %d max %d", g.MemoryLow, g.MemoryHigh, g.MemoryMax)
	}
	if s := cfg.Tiers["standard"]; s.MemoryLow != 0 || s.MemoryHigh != 0 {
		t.Errorf("standard = low %d high %d, want none by default", s.MemoryLow, s.MemoryHigh)
	}
}

func TestUnitTierMemoryLimits(t *testing.T) {
	tl := Tier{CPUWeight: 100, MemoryLow: 1 << 30, MemoryHigh: 2 << 30, MemoryMax: 4 << 30}.tenantLimits()
	if tl.MemoryLow != 1<<30 || tl.MemoryHigh != 2<<30 || tl.MemoryMax != 4<<30 {
		t.Errorf("tenant limits %+v", tl)
	}
	// A tier without them removes them (a tier change or a reload takes
	// them away from a tenant node that had them).
	if l := BaseTier().tenantLimits(); l.MemoryLow >= 0 || l.MemoryHigh >= 0 || l.MemoryMax >= 0 {
		t.Errorf("no memory shares should remove them: %+v", l)
	}
	// Scopes keep their own limits only.
	if sl := (Tier{MemoryLow: 1 << 30, ScopeMemoryMax: 64 << 20, ScopePidsMax: 1}).scopeLimits(); sl.MemoryLow != 0 || sl.MemoryHigh != 0 {
		t.Errorf("scope limits %+v", sl)
	}
}

func TestUnitMemoryLows(t *testing.T) {
	sc := func(tier, tenant, name string) *scope {
		return &scope{id: ScopeID{Tenant: tenant, Name: name}, tier: tier}
	}
	lows := map[string]int64{"gold": 300, "silver": 100, "free": 0}
	got := memoryLows([]*scope{
		sc("gold", "acme", "a"), sc("gold", "acme", "b"), // one tenant, two scopes: counted once
		sc("gold", "globex", "a"),
		sc("silver", "initech", "a"),
		sc("free", "hooli", "a"),
		sc("gone", "umbrella", "a"), // a tier no longer configured protects nothing
	}, func(tier string) int64 { return lows[tier] })
	want := map[string]int64{"": 700, "gold": 600, "silver": 100, "free": 0, "gone": 0}
	if len(got) != len(want) {
		t.Fatalf("memoryLows = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("memoryLows[%q] = %d, want %d (all %v)", k, got[k], v, got)
		}
	}
	if got := memoryLows(nil, func(string) int64 { return 1 }); len(got) != 1 || got[""] != 0 {
		t.Errorf("no scopes: %v, want only the root at 0", got)
	}
}

func TestUnitMemoryNote(t *testing.T) {
	none := DefaultConfig()
	some := DefaultConfig()
	tierMut(func(t *Tier) { t.MemoryLow = 1 << 30 })(&some)
	for _, c := range []struct {
		cfg       *Config
		mode      cgroups.Mode
		recursive bool
		want      string
	}{
		{&none, cgroups.Hybrid, false, ""},
		{&none, cgroups.V2, false, ""},
		{&some, cgroups.V2, true, ""},
		{&some, cgroups.V2, false, "memory_recursiveprot"},
		{&some, cgroups.Hybrid, false, "soft limit"},
		{&some, cgroups.V1, false, "soft limit"},
	} {
		got := memoryNote(c.cfg, c.mode, c.recursive)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("memoryNote(%s, recursive %v) = %q, want %q", c.mode, c.recursive, got, c.want)
		}
	}
}

func TestUnitTenantsMemoryMaxValidated(t *testing.T) {
	for v, ok := range map[int64]bool{0: true, 1 << 20: true, 64 << 30: true, 4096: false, -1: false} {
		cfg := DefaultConfig()
		cfg.Tenants.MemoryMax = v
		err := cfg.Validate()
		if ok != (err == nil) || (!ok && !strings.Contains(err.Error(), "tenants.memory_max")) {
			t.Errorf("tenants.memory_max %d: Validate = %v", v, err)
		}
	}
}
