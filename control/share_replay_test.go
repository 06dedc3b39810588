package control

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestReplayShareTrace replays the starving runs TestRecordShareTrace
// recorded on a real kernel: DecideShares must make the decisions the live
// controller made; it must cap tenant many, for tenant one, at most one
// tick after one has starved for a whole window (one's CPU short of its
// share by more than the tolerance while it waited, in ShareWindow ticks
// in a row), and let many go once one has stopped.
func TestReplayShareTrace(t *testing.T) {
	files, err := filepath.Glob("testdata/share-trace-*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recorded share trace: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var rec shareRecorded
			if err := json.Unmarshal(b, &rec); err != nil {
				t.Fatal(err)
			}
			t.Log(rec.Note)
			got := shareLog(t, rec.Config, rec.Snapshots)
			if !slices.Equal(got, rec.Decisions) {
				t.Errorf("decisions:\n  %s\nrecorded:\n  %s", strings.Join(got, "\n  "), strings.Join(rec.Decisions, "\n  "))
			}
			// The ticks in which one got less than its share by more
			// than the tolerance, as the rule sees them.
			short := map[int]bool{}
			var st ShareState
			for i, snap := range rec.Snapshots {
				st, _, _ = DecideShares(rec.Config, st, snap)
				if w := st.tenants["one"].window; len(w) > 0 && !st.tenants["one"].capped {
					k := w[len(w)-1]
					short[i+1] = k.want && k.share-k.used > rec.Config.ShareTolerance*k.avail && k.idle < rec.Config.ShareTolerance*k.avail/2
				}
			}
			starved := 0 // the tick that ends the first window of starvation
			for i := 1; i <= len(rec.Snapshots) && starved == 0; i++ {
				run := 0
				for j := i; j > 0 && short[j]; j-- {
					run++
				}
				if run >= rec.Config.ShareWindow {
					starved = i
				}
			}
			capped := 0
			for _, l := range got {
				var tick int
				var kind, tenant string
				if _, err := fmt.Sscanf(l, "%d %s %s", &tick, &kind, &tenant); err == nil && kind == EventShareCapped && tenant == "many" {
					capped = tick
					break
				}
			}
			t.Logf("one starved for a window by tick %d; many capped at tick %d", starved, capped)
			if starved == 0 || capped == 0 || capped > starved+1 {
				t.Errorf("one starved by tick %d, many capped at tick %d:\n  %s", starved, capped, strings.Join(got, "\n  "))
			}
			if last := got[len(got)-1]; !strings.HasSuffix(last, "cap many 0.000") {
				t.Errorf("many not let go at the end: %s", last)
			}
		})
	}
}

// TestReplayStarvedUnderCap replays a run recorded with 20 ms cap periods
// in which the 6.18 kernel gave the capped tenant no CPU at all for 15 s:
// the rule must lift that cap at the first tick the capped tenant starves
// under it (the recorded decisions are the older rule's, which held it).
func TestReplayStarvedUnderCap(t *testing.T) {
	b, err := os.ReadFile("testdata/share-starved-under-cap-6.18.44-2026-12-07.json")
	if err != nil {
		t.Fatal(err)
	}
	var rec shareRecorded
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	t.Log(rec.Note)
	var st ShareState
	for i, snap := range rec.Snapshots {
		var evs []Event
		st, _, evs = DecideShares(rec.Config, st, snap)
		for _, e := range evs {
			t.Logf("tick %d: %s %s: %s", i+1, e.Kind, e.Tenant, e.Reason)
			if e.Kind == EventShareLifted {
				if i+1 > 5 || !strings.Contains(e.Reason, "starves under its cap") {
					t.Errorf("lifted at tick %d: %s", i+1, e.Reason)
				}
				return
			}
		}
	}
	t.Error("the cap was never lifted")
}
