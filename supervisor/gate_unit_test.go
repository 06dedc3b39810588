package supervisor

import (
	"errors"
	"testing"
	"time"
)

// TestUnitGateCaps: the spend caps are asked first, with the tenant and
// its tier; a refusal there takes no slot and no token.
func TestUnitGateCaps(t *testing.T) {
	errCap := &RetryAfterError{Err: ErrQuota, After: time.Hour}
	var asked []string
	refuse := true
	g := newGate(func(tenant, tierName string, _ Tier, _ time.Time) error {
		asked = append(asked, tenant+"/"+tierName)
		if refuse {
			return errCap
		}
		return nil
	})
	tier := Tier{Rate: 1, Burst: 1, MaxConcurrent: 1}
	now := time.Unix(1000, 0)
	if _, err := g.Admit("acme", "capped", tier, now); !errors.Is(err, ErrQuota) {
		t.Fatalf("past a cap: %v, want ErrQuota", err)
	}
	if len(asked) != 1 || asked[0] != "acme/capped" {
		t.Errorf("caps asked %v", asked)
	}
	if g.inFlight("acme") != 0 {
		t.Error("a refusal by the caps holds a slot")
	}
	refuse = false
	done, err := g.Admit("acme", "capped", tier, now)
	if err != nil {
		t.Fatalf("within the caps, rate and concurrency: %v (the refused call took the token?)", err)
	}
	if g.inFlight("acme") != 1 {
		t.Errorf("inFlight = %d, want 1", g.inFlight("acme"))
	}
	if _, err := g.Admit("acme", "capped", tier, now); !errors.Is(err, ErrConcurrency) {
		t.Errorf("second in flight: %v, want ErrConcurrency", err)
	}
	done()
	done()
	if g.inFlight("acme") != 0 {
		t.Errorf("after done: inFlight = %d, want 0", g.inFlight("acme"))
	}
	if _, err := g.Admit("acme", "capped", tier, now); !errors.Is(err, ErrRateLimited) {
		t.Errorf("slot back but no token: %v, want ErrRateLimited", err)
	}
	if _, err := g.Admit("acme", "capped", tier, now.Add(time.Second)); err != nil {
		t.Errorf("a second later: %v", err)
	}
}

// TestUnitGateSuspendedAndUnlimited: a suspended tier refuses; a tier
// without rate or concurrency limits keeps no state; the zero gate works.
func TestUnitGateSuspendedAndUnlimited(t *testing.T) {
	var g gate
	now := time.Now()
	if _, err := g.Admit("acme", "off", Tier{Suspended: true}, now); !errors.Is(err, ErrSuspended) {
		t.Errorf("suspended: %v, want ErrSuspended", err)
	}
	for range 100 {
		done, err := g.Admit("acme", "free", Tier{}, now)
		if err != nil {
			t.Fatal(err)
		}
		done()
	}
	if len(g.adm) != 0 {
		t.Errorf("unlimited tier tracked %d tenants", len(g.adm))
	}
	done, err := g.Admit("acme", "limited", Tier{MaxConcurrent: 1}, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Admit("globex", "limited", Tier{MaxConcurrent: 1}, now); err != nil {
		t.Errorf("another tenant's slot taken: %v", err)
	}
	done()
	g.prune(func(string) Tier { return Tier{MaxConcurrent: 1} }, now)
	if g.inFlight("acme") != 0 || len(g.adm) != 1 {
		t.Errorf("prune: acme %d in flight, %d tracked (globex still in flight)", g.inFlight("acme"), len(g.adm))
	}
}
