package record

import (
	"errors"
	"strings"
	"testing"
)

const testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestUnitDecodeState(t *testing.T) {
	var tn Tenant
	if err := DecodeState([]byte(`{"tier":"pro","egress_allow":["203.0.113.0/24:443"]}`), &tn); err != nil || tn.Tier != "pro" {
		t.Fatalf("tenant: %+v, %v", tn, err)
	}
	var x Extension
	good := `{"version":3,"digest":"` + testDigest + `","runtime":"exec","entrypoint":"bin/run","size":10,"node":"n1"}`
	if err := DecodeState([]byte(good), &x); err != nil || x.Version != 3 || x.Entrypoint != "bin/run" {
		t.Fatalf("extension: %+v, %v", x, err)
	}
	var s Spend
	if err := DecodeState([]byte(`{"day":"2026-12-06T00:00:00Z","month":"2026-12-01T00:00:00Z","daily":{"cpu_seconds":1.5}}`), &s); err != nil {
		t.Fatalf("spend: %v", err)
	}
	for name, c := range map[string]struct {
		b string
		v checker
	}{
		"tier":        {`{"tier":"Pro"}`, &Tenant{}},
		"allow":       {`{"tier":"pro","egress_allow":["a b"]}`, &Tenant{}},
		"version":     {`{"version":0,"digest":"` + testDigest + `","runtime":"go","entrypoint":"w","node":"n1"}`, &Extension{}},
		"digest":      {`{"version":1,"digest":"sha256:zz","runtime":"go","entrypoint":"w","node":"n1"}`, &Extension{}},
		"runtime":     {`{"version":1,"digest":"` + testDigest + `","runtime":"py","entrypoint":"w","node":"n1"}`, &Extension{}},
		"entrypoint":  {`{"version":1,"digest":"` + testDigest + `","runtime":"go","entrypoint":"../w","node":"n1"}`, &Extension{}},
		"abs entry":   {`{"version":1,"digest":"` + testDigest + `","runtime":"go","entrypoint":"/w","node":"n1"}`, &Extension{}},
		"node":        {`{"version":1,"digest":"` + testDigest + `","runtime":"go","entrypoint":"w","node":"a/b"}`, &Extension{}},
		"removed+dig": {`{"version":1,"digest":"` + testDigest + `","node":"n1","removed":true}`, &Extension{}},
		"day":         {`{"day":"2026-12-06T01:00:00Z","month":"2026-12-01T00:00:00Z"}`, &Spend{}},
		"negative":    {`{"day":"2026-12-06T00:00:00Z","month":"2026-12-01T00:00:00Z","daily":{"cpu":-1}}`, &Spend{}},
		"meter":       {`{"day":"2026-12-06T00:00:00Z","month":"2026-12-01T00:00:00Z","daily":{"../x":1}}`, &Spend{}},
		"not json":    {`{`, &Tenant{}},
		"oversized":   {`{"tier":"` + strings.Repeat("a", MaxRecord) + `"}`, &Tenant{}},
	} {
		if err := DecodeState([]byte(c.b), c.v); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if err := DecodeState([]byte(`{"version":2,"node":"n1","removed":true}`), &Extension{}); err != nil {
		t.Errorf("tombstone: %v", err)
	}
}

func TestUnitStateKeys(t *testing.T) {
	k := Keys{}
	if te, e, n, err := k.ExtensionOf(k.Extension("acme", "prod", "hook")); err != nil || te != "acme" || e != "prod" || n != "hook" {
		t.Errorf("ExtensionOf: %q %q %q %v", te, e, n, err)
	}
	if te, n, err := k.SpendOf(k.Spend("acme") + "n1"); err != nil || te != "acme" || n != "n1" {
		t.Errorf("SpendOf: %q %q %v", te, n, err)
	}
	if d, n, err := k.BundleOf(k.Bundle(testDigest, "n1")); err != nil || d != testDigest || n != "n1" {
		t.Errorf("BundleOf: %q %q %v", d, n, err)
	}
	if te, err := k.TenantOf(k.Tenant("acme")); err != nil || te != "acme" {
		t.Errorf("TenantOf: %q %v", te, err)
	}
	for _, bad := range []string{"/scoped/extensions/a/b", "/scoped/extensions/a/b/c/d", "/scoped/extensions/a/../c"} {
		if _, _, _, err := k.ExtensionOf(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ExtensionOf(%q) = %v", bad, err)
		}
	}
	for _, bad := range []string{"/scoped/spend/acme", "/scoped/spend/acme/a/b", "/scoped/spend/../n1"} {
		if _, _, err := k.SpendOf(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("SpendOf(%q) = %v", bad, err)
		}
	}
	for _, bad := range []string{"/scoped/bundles/sha256:00/n1", "/scoped/bundles/" + testDigest, "/scoped/bundles/" + strings.ToUpper(testDigest) + "/n1"} {
		if _, _, err := k.BundleOf(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("BundleOf(%q) = %v", bad, err)
		}
	}
}

func FuzzUnitDecodeState(f *testing.F) {
	f.Add(byte(0), []byte(`{"tier":"pro","egress_allow":["10.0.0.0/8"]}`))
	f.Add(byte(1), []byte(`{"version":1,"digest":"`+testDigest+`","runtime":"go","entrypoint":"w","node":"n1"}`))
	f.Add(byte(2), []byte(`{"day":"2026-12-06T00:00:00Z","month":"2026-12-01T00:00:00Z","daily":{"cpu":1}}`))
	f.Fuzz(func(t *testing.T, kind byte, b []byte) {
		switch kind % 3 {
		case 0:
			var v Tenant
			if DecodeState(b, &v) == nil && v.Check() != nil {
				t.Fatal("accepted a tenant that does not check")
			}
		case 1:
			var v Extension
			if DecodeState(b, &v) == nil && (v.Version < 1 || CheckNodeName(v.Node) != nil || !v.Removed && CheckDigest(v.Digest) != nil) {
				t.Fatalf("accepted %+v", v)
			}
		case 2:
			var v Spend
			if DecodeState(b, &v) == nil && len(v.Daily)+len(v.Monthly) > MaxMeters {
				t.Fatal("accepted too many meters")
			}
		}
	})
}
