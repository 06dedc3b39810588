package supervisor

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/scoped-io/scoped/internal/ident"
)

// TestUnitGateCaps: the spend caps are asked first, with the tenant and
// its tier; a refusal there takes no slot and no token.
func TestUnitGateCaps(t *testing.T) {
	errCap := &RetryAfterError{Err: ErrQuota, After: time.Hour}
	var asked []string
	refuse := true
	g := newGate(func(tenant ident.Tenant, tierName string, _ Tier, _ time.Time) error {
		asked = append(asked, string(tenant)+"/"+tierName)
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

// TestUnitSpendCaps: a tenant at a cap is refused until the period ends;
// the ledger is asked once per flush period (and again at the day's end);
// a failing ledger refuses or lets through by on_error.
func TestUnitSpendCaps(t *testing.T) {
	used := map[string]float64{} // by meter, whatever the period
	var sums int
	var sumErr error
	counted := map[string]int{}
	conf := MeteringConfig{Flush: Duration{Duration: time.Minute}, OnError: CapsRefuse}
	c := &spendCaps{
		sum: func(_ ident.Tenant, meter string, from, to time.Time) (float64, error) {
			sums++
			if !from.Before(to) {
				t.Errorf("sum over [%s, %s)", from, to)
			}
			return used[meter], sumErr
		},
		conf:    func() MeteringConfig { return conf },
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		countFn: func(kind string) { counted[kind]++ },
		spent:   map[ident.Tenant]spent{},
	}
	tier := Tier{DailyCaps: map[string]float64{"cpu_seconds": 10}, MonthlyCaps: map[string]float64{"invocations": 100}}
	now := time.Date(2026, 12, 6, 18, 0, 0, 0, time.UTC)
	if err := c.check("acme", "capped", Tier{}, now); err != nil || sums != 0 {
		t.Fatalf("no caps: %v, %d sums", err, sums)
	}
	used["cpu_seconds"] = 9
	if err := c.check("acme", "capped", tier, now); err != nil {
		t.Fatalf("under the caps: %v", err)
	}
	used["cpu_seconds"] = 10
	if err := c.check("acme", "capped", tier, now.Add(30*time.Second)); err != nil || sums != 2 {
		t.Fatalf("within the flush period: %v after %d sums, want the kept figures (2 sums)", err, sums)
	}
	err := c.check("acme", "capped", tier, now.Add(time.Minute))
	var ra *RetryAfterError
	if !errors.Is(err, ErrQuota) || !errors.As(err, &ra) || ra.After != 6*time.Hour-time.Minute {
		t.Fatalf("at the daily cap: %v, want ErrQuota until midnight UTC", err)
	}
	used["cpu_seconds"], used["invocations"] = 0, 100
	err = c.check("acme", "capped", tier, now.Add(6*time.Hour)) // the next day
	if !errors.Is(err, ErrQuota) || !errors.As(err, &ra) || ra.After != 25*24*time.Hour {
		t.Fatalf("at the monthly cap: %v, want ErrQuota until the 1st", err)
	}

	sumErr = errors.New("ledger closed")
	err = c.check("globex", "capped", tier, now)
	if !errors.Is(err, ErrLedger) || !errors.As(err, &ra) || ra.After != time.Minute {
		t.Fatalf("failing ledger, refuse: %v, want ErrLedger retrying after a flush", err)
	}
	conf.OnError = CapsAllow
	if err := c.check("globex", "capped", tier, now); err != nil {
		t.Fatalf("failing ledger, allow: %v", err)
	}
	if counted["metering_caps"] != 2 || counted["caps_unchecked"] != 1 {
		t.Errorf("counted %v", counted)
	}
}
