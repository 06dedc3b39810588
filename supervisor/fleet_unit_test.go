package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scoped-io/scoped/fleet"
)

func TestUnitFleetDeployAs(t *testing.T) {
	s, _ := newUnitStore(t)
	files := unitBundle("one")
	var gotDigest string
	info, unchanged, err := s.deployAs("acme", "prod", "ext", files, func(d string, m Manifest, size int64) (string, error) {
		gotDigest = d
		if m.Runtime == "" || size <= 0 {
			t.Errorf("version asked with manifest %+v, size %d", m, size)
		}
		return "v7", nil
	})
	if err != nil || unchanged || info.Version != "v7" || info.Digest != gotDigest {
		t.Fatalf("deployAs: %+v %v %v (digest asked %s)", info, unchanged, err, gotDigest)
	}
	if cur, err := s.Get("acme", "prod", "ext", ""); err != nil || cur.Version != "v7" {
		t.Fatalf("current after deployAs: %+v %v", cur, err)
	}
	// The same bundle again: unchanged.
	if info, unchanged, err := s.deployAs("acme", "prod", "ext", files, func(string, Manifest, int64) (string, error) { return "v7", nil }); err != nil || !unchanged || info.Version != "v7" {
		t.Fatalf("same bundle: %+v %v %v", info, unchanged, err)
	}
	// A failed registration stores nothing.
	boom := errors.New("boom")
	if _, _, err := s.deployAs("acme", "prod", "ext", unitBundle("two"), func(string, Manifest, int64) (string, error) { return "", boom }); !errors.Is(err, boom) {
		t.Fatalf("failed version: %v", err)
	}
	if cur, _ := s.Get("acme", "prod", "ext", ""); cur.Version != "v7" {
		t.Fatalf("current after a failed registration: %+v", cur)
	}
	// A bad version name from the callback is refused.
	if _, _, err := s.deployAs("acme", "prod", "ext", unitBundle("three"), func(string, Manifest, int64) (string, error) { return "../x", nil }); err == nil {
		t.Fatal("version ../x accepted")
	}
}

func TestUnitFleetPolicy(t *testing.T) {
	c := DefaultConfig()
	c.Isolation.By = []string{"environment"}
	tier := c.Tiers["standard"]
	tier.Placement = []string{"dedicated-acme"}
	c.Tiers["silo"] = tier
	p := fleetPolicy(&c)
	if !slices.Equal(p.Isolation, []string{"environment"}) || !slices.Equal(p.Placement["silo"], []string{"dedicated-acme"}) || len(p.Placement) != 1 {
		t.Fatalf("policy %+v", p)
	}
	tier.Placement = []string{"Bad Label"}
	if err := tier.validate("silo", c.Pool, c.Limits); err == nil {
		t.Fatal("a bad placement label passed validation")
	}
}

func TestUnitFleetSplitExtKey(t *testing.T) {
	if a, b, c, ok := splitExtKey("acme/prod/ext"); !ok || a != "acme" || b != "prod" || c != "ext" {
		t.Fatalf("split: %q %q %q %v", a, b, c, ok)
	}
	for _, bad := range []string{"", "a/b", "a/b/c/d", "a/../c", "A/b/c"} {
		if _, _, _, ok := splitExtKey(bad); ok {
			t.Errorf("%q split", bad)
		}
	}
}

func TestUnitFleetFetchOnce(t *testing.T) {
	f := newFleetLink(fleetDeps{log: slog.New(slog.DiscardHandler)})
	var calls atomic.Int32
	release := make(chan struct{})
	f.fetchBundle = func(_ context.Context, tenant, env, name, version, digest string) (ExtensionInfo, error) {
		calls.Add(1)
		<-release
		return ExtensionInfo{Tenant: tenant, Name: name, Version: version, Digest: digest}, nil
	}
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			info, err := f.fetchOnce(context.Background(), "acme", "prod", "ext", "v3", "sha256:d")
			if err == nil && info.Version != "v3" {
				err = fmt.Errorf("got %+v", info)
			}
			errs <- err
		})
	}
	// A caller whose context ends stops waiting, UNAVAILABLE.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.fetchOnce(ctx, "acme", "prod", "ext", "v3", "sha256:d"); !errors.Is(err, fleet.ErrUnavailable) {
		t.Errorf("cancelled waiter: %v, want fleet.ErrUnavailable", err)
	}
	for { // every caller waits for the one fetch
		f.fmu.Lock()
		w := 0
		if c := f.fetching["acme/prod/ext/sha256:d"]; c != nil {
			w = c.waiters
		}
		f.fmu.Unlock()
		if w == n+1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if c := calls.Load(); c != 1 {
		t.Errorf("%d fetches for concurrent callers, want 1", c)
	}
	// Once done, a new call fetches again (a failure is not cached).
	f.fetchBundle = func(context.Context, string, string, string, string, string) (ExtensionInfo, error) {
		return ExtensionInfo{}, fleet.ErrUnavailable
	}
	if _, err := f.fetchOnce(context.Background(), "acme", "prod", "ext", "v3", "sha256:d"); !errors.Is(err, fleet.ErrUnavailable) {
		t.Errorf("failed fetch: %v", err)
	}
}

func TestUnitFleetReload(t *testing.T) {
	old := DefaultConfig()
	old.Fleet.Endpoints = []string{"http://127.0.0.1:2379"}
	same := old
	if err := checkFleetReload(&old, &same); err != nil {
		t.Fatalf("unchanged: %v", err)
	}
	moved := old
	moved.Fleet.Endpoints = []string{"http://127.0.0.1:2380"}
	if err := checkFleetReload(&old, &moved); !errors.Is(err, ErrConfig) {
		t.Errorf("[fleet] changed: %v, want ErrConfig", err)
	}
	iso := old
	iso.Isolation.By = []string{"user"}
	if err := checkFleetReload(&old, &iso); !errors.Is(err, ErrConfig) {
		t.Errorf("isolation changed in a fleet: %v, want ErrConfig", err)
	}
	single, single2 := DefaultConfig(), DefaultConfig()
	single2.Isolation.By = []string{"user"}
	if err := checkFleetReload(&single, &single2); err != nil {
		t.Errorf("isolation changed on a single host: %v", err)
	}
}
