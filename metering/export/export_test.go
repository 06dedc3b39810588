package export

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestStripeWireFormat(t *testing.T) {
	rc := newReceiver(t, FormatStripe)
	cfg := testConfig(rc)
	cfg.EventNames = map[string]string{"cpu_seconds": "cpu_ms"}
	cfg.Scales = map[string]float64{"cpu_seconds": 1000}
	r1 := rec(1, "acme", 1.2345) // 1234.5 ms: rounds to 1235
	r2 := rec(2, "initech", 7)   // no customer: skipped
	r3 := rec(3, "globex", 0.0004)
	r3.Meter = "net_bytes" // no mapping, no scale: 0
	r4 := rec(4, "acme", 2.6)
	r4.Meter = "invocations" // rounds to 3
	src := newSource(r1, r2, r3, r4)
	e := newExporter(t, cfg, src)

	sent, err := e.Once(t.Context())
	if err != nil || sent != 3 {
		t.Fatalf("Once = %d, %v; want 3, nil", sent, err)
	}
	_, _, _, reqs := rc.snapshot()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3 (one per record, the unmapped tenant skipped)", len(reqs))
	}
	want := []url.Values{
		{"event_name": {"cpu_ms"}, "payload[stripe_customer_id]": {"cus_acme"}, "payload[value]": {"1235"},
			"identifier": {"rec-001"}, "timestamp": {"1767322860"}},
		{"event_name": {"net_bytes"}, "payload[stripe_customer_id]": {"cus_globex"}, "payload[value]": {"0"},
			"identifier": {"rec-003"}, "timestamp": {"1767322980"}},
		{"event_name": {"invocations"}, "payload[stripe_customer_id]": {"cus_acme"}, "payload[value]": {"3"},
			"identifier": {"rec-004"}, "timestamp": {"1767323040"}},
	}
	for i, c := range reqs {
		if c.method != http.MethodPost || c.path != "/v1/billing/meter_events" {
			t.Errorf("request %d: %s %s", i, c.method, c.path)
		}
		if got := c.header.Get("Content-Type"); got != "application/x-www-form-urlencoded" {
			t.Errorf("request %d: Content-Type %q", i, got)
		}
		if got := c.header.Get("Authorization"); got != "Bearer sk_test_123" {
			t.Errorf("request %d: Authorization %q", i, got)
		}
		got, err := url.ParseQuery(string(c.body))
		if err != nil {
			t.Fatal(err)
		}
		if got.Encode() != want[i].Encode() {
			t.Errorf("request %d form:\n got %s\nwant %s", i, got.Encode(), want[i].Encode())
		}
	}
	if ts := time.Unix(1767322860, 0).UTC(); !ts.Equal(r1.WindowStart) {
		t.Fatalf("test data: timestamp %s is not the window start %s", ts, r1.WindowStart)
	}
	st := e.Stats()
	if st.Sent != 3 || st.Skipped != 1 || st.Cursor != 4 || st.DeadLettered != 0 || st.Failures != 0 {
		t.Errorf("stats %+v", st)
	}
	if c := src.cursor("test"); c != 4 {
		t.Errorf("persisted cursor %d, want 4", c)
	}
}

func TestCloudEventsWireFormat(t *testing.T) {
	rc := newReceiver(t, FormatCloudEvents)
	rc.respond = func(int, []string, bool) reply { return reply{status: http.StatusNoContent, store: true} }
	cfg := testConfig(rc)
	r1 := rec(1, "acme", 1.5)
	r2 := rec(2, "globex", 42)
	r2.Meter, r2.Window = "net_bytes", 5*time.Minute
	r2.WindowStart = r2.WindowStart.In(time.FixedZone("x", 3600)) // sent in UTC
	src := newSource(r1, r2)
	e := newExporter(t, cfg, src)

	if sent, err := e.Once(t.Context()); err != nil || sent != 2 {
		t.Fatalf("Once = %d, %v; want 2, nil", sent, err)
	}
	_, _, _, reqs := rc.snapshot()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1 batch", len(reqs))
	}
	c := reqs[0]
	if c.path != "/api/v1/events" || c.header.Get("Content-Type") != "application/cloudevents-batch+json" ||
		c.header.Get("Authorization") != "Bearer sk_test_123" {
		t.Errorf("request %s, headers %v", c.path, c.header)
	}
	var got []map[string]any
	if err := json.Unmarshal(c.body, &got); err != nil {
		t.Fatal(err)
	}
	want := []map[string]any{
		{"specversion": "1.0", "id": "rec-001", "source": "scoped://test-host", "type": "cpu_seconds",
			"subject": "acme", "time": "2026-01-02T03:01:00Z",
			"data": map[string]any{"value": 1.5, "scope": "acme.production", "environment": "production",
				"extension": "whoami", "window_seconds": 60.0}},
		{"specversion": "1.0", "id": "rec-002", "source": "scoped://test-host", "type": "net_bytes",
			"subject": "globex", "time": "2026-01-02T03:02:00Z",
			"data": map[string]any{"value": 42.0, "scope": "globex.production", "environment": "production",
				"extension": "whoami", "window_seconds": 300.0}},
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) {
		t.Errorf("batch:\n got %s\nwant %s", gj, wj)
	}

	// One record: a single structured-mode event.
	src.add(rec(3, "acme", 3))
	if sent, err := e.Once(t.Context()); err != nil || sent != 1 {
		t.Fatalf("Once = %d, %v; want 1, nil", sent, err)
	}
	_, _, _, reqs = rc.snapshot()
	c = reqs[len(reqs)-1]
	var one CloudEvent
	if ct := c.header.Get("Content-Type"); ct != "application/cloudevents+json" {
		t.Errorf("single event Content-Type %q", ct)
	}
	if err := json.Unmarshal(c.body, &one); err != nil || one.ID != "rec-003" || one.SpecVersion != "1.0" {
		t.Errorf("single event %s: %v", c.body, err)
	}
}

// A server that fails the first requests with 500: Run retries with
// backoff, the same records, in order, until they are accepted.
func TestRunRetriesServerErrors(t *testing.T) {
	for _, format := range formats() {
		t.Run(format, func(t *testing.T) {
			rc := newReceiver(t, format)
			const failFirst = 3
			rc.respond = func(n int, ids []string, dup bool) reply {
				if n <= failFirst {
					return reply{status: http.StatusInternalServerError, body: "boom"}
				}
				return ok()
			}
			cfg := testConfig(rc)
			cfg.Batch = 2
			all := recs("acme", 1, 2, 3, 4, 5)
			src := newSource(all...)
			e := newExporter(t, cfg, src)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- e.Run(ctx) }()
			waitFor(t, "all records stored", func() bool { return len(rc.storedIDs()) == len(all) && src.cursor("test") == 5 })
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			arrivals, stored, _, _ := rc.snapshot()
			if !slices.Equal(stored, ids(all)) {
				t.Errorf("stored %v, want %v in order", stored, ids(all))
			}
			// The failed requests all carried the first group again.
			first := ids(all)[:1]
			if format == FormatCloudEvents {
				first = ids(all)[:2]
			}
			for i := range failFirst {
				got := arrivals[i*len(first) : (i+1)*len(first)]
				if !slices.Equal(got, first) {
					t.Errorf("failed attempt %d sent %v, want %v", i+1, got, first)
				}
			}
			st := e.Stats()
			if st.Failures != failFirst || st.Retries != failFirst || st.Sent != 5 || st.Cursor != 5 || st.DeadLettered != 0 {
				t.Errorf("stats %+v", st)
			}
			var herr *HTTPError
			if !errors.Is(st.LastError, ErrDelivery) || !errors.As(st.LastError, &herr) || herr.StatusCode != 500 {
				t.Errorf("last error %v", st.LastError)
			}
		})
	}
}

// A server that stores the events but answers after the client's timeout:
// the exporter does not advance, sends the same IDs again, and the receiver
// has each ID at least once and deduplicates the repeats by ID.
func TestTimeoutResendsSameIDs(t *testing.T) {
	for _, format := range formats() {
		t.Run(format, func(t *testing.T) {
			rc := newReceiver(t, format)
			var slow atomic.Bool
			slow.Store(true)
			rc.respond = func(n int, ids []string, dup bool) reply {
				switch {
				case slow.Load():
					return reply{status: http.StatusOK, store: true, delay: 10 * time.Second}
				case dup && format == FormatStripe:
					return stripeDup(ids[0])
				}
				return reply{status: http.StatusAccepted, store: true} // OpenMeter-like: dedups silently
			}
			cfg := testConfig(rc)
			cfg.Timeout.Duration = 100 * time.Millisecond
			all := recs("acme", 1, 2, 3)
			src := newSource(all...)
			e := newExporter(t, cfg, src)

			start := time.Now()
			sent, err := e.Once(t.Context())
			if sent != 0 || !errors.Is(err, ErrDelivery) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Once = %d, %v; want 0, ErrDelivery (deadline exceeded)", sent, err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Once took %s with a 100ms timeout", d)
			}
			if c := src.cursor("test"); c != 0 {
				t.Fatalf("cursor %d advanced without an answer", c)
			}
			slow.Store(false)
			if sent, err := e.Once(t.Context()); err != nil || sent != 3 {
				t.Fatalf("second Once = %d, %v; want 3, nil", sent, err)
			}
			arrivals, stored, count, _ := rc.snapshot()
			if !slices.Equal(stored, ids(all)) {
				t.Errorf("stored (deduplicated by ID) %v, want %v", stored, ids(all))
			}
			timedOut := 1 // Stripe: one record per request
			if format == FormatCloudEvents {
				timedOut = 3
			}
			for i, id := range ids(all) {
				want := 1
				if i < timedOut {
					want = 2 // in the request whose answer was lost, and again
				}
				if got := slices.Index(arrivals, id); got < 0 || count[id] < 1 {
					t.Errorf("%s never stored (arrivals %v)", id, arrivals)
				}
				if got := len(slices.DeleteFunc(slices.Clone(arrivals), func(s string) bool { return s != id })); got != want {
					t.Errorf("%s arrived %d times, want %d (arrivals %v)", id, got, want, arrivals)
				}
			}
			st := e.Stats()
			if st.Sent != 3 || st.Cursor != 3 || st.Retries != 1 || st.Failures != 1 {
				t.Errorf("stats %+v", st)
			}
			if format == FormatStripe && st.Duplicates != 1 {
				t.Errorf("Stripe duplicate answer not counted: %+v", st)
			}
		})
	}
}

// A crash after the endpoint accepted but before the cursor was saved: the
// next exporter on the same Source sends the same identifiers again.
func TestCrashBeforeCursorSaveResendsSameIDs(t *testing.T) {
	for _, format := range formats() {
		t.Run(format, func(t *testing.T) {
			rc := newReceiver(t, format)
			cfg := testConfig(rc)
			all := recs("acme", 1, 2, 3)
			src := newSource(all...)
			crash := errors.New("disk gone")
			src.setSaveErr(crash)

			e1 := newExporter(t, cfg, src)
			sent, err := e1.Once(t.Context())
			if !errors.Is(err, ErrSource) || !errors.Is(err, crash) {
				t.Fatalf("Once = %d, %v; want ErrSource wrapping the save error", sent, err)
			}
			if got := rc.storedIDs(); len(got) == 0 {
				t.Fatal("nothing reached the endpoint before the crash")
			}
			// The process dies here: e1 is dropped, nothing was saved.
			src.setSaveErr(nil)
			if c := src.cursor("test"); c != 0 {
				t.Fatalf("cursor %d saved despite the failure", c)
			}

			e2 := newExporter(t, cfg, src)
			if _, err := e2.Once(t.Context()); err != nil {
				t.Fatalf("Once after restart: %v", err)
			}
			arrivals, stored, count, _ := rc.snapshot()
			if !slices.Equal(stored, ids(all)) {
				t.Errorf("stored %v, want %v", stored, ids(all))
			}
			resent := 0
			for _, id := range ids(all) {
				if count[id] > 1 || (format == FormatStripe && strings.Count(joined(arrivals), id) > 1) {
					resent++
				}
			}
			if resent == 0 {
				t.Errorf("no identifier was sent again after the crash (arrivals %v)", arrivals)
			}
			if arrivals[0] != "rec-001" || !slices.Contains(arrivals[1:], "rec-001") {
				t.Errorf("rec-001 not re-sent with the same identifier: arrivals %v", arrivals)
			}
			if c := src.cursor("test"); c != 3 {
				t.Errorf("cursor %d after the resend, want 3", c)
			}
		})
	}
}

// A cursor that failed to save is saved by the next pass without resending.
func TestUnsavedCursorSavedNextPass(t *testing.T) {
	rc := newReceiver(t, FormatCloudEvents)
	src := newSource(recs("acme", 1, 2)...)
	src.setSaveErr(errors.New("busy"))
	e := newExporter(t, testConfig(rc), src)
	if _, err := e.Once(t.Context()); !errors.Is(err, ErrSource) {
		t.Fatalf("Once: %v, want ErrSource", err)
	}
	src.setSaveErr(nil)
	if sent, err := e.Once(t.Context()); err != nil || sent != 0 {
		t.Fatalf("Once = %d, %v; want 0, nil", sent, err)
	}
	if c := src.cursor("test"); c != 2 {
		t.Errorf("cursor %d, want 2", c)
	}
	if n := rc.numRequests(); n != 1 {
		t.Errorf("%d requests, want 1 (no resend without a crash)", n)
	}
}

func TestStripeDuplicateAnswersAreSuccess(t *testing.T) {
	cases := map[string]reply{
		"409":                {status: http.StatusConflict},
		"400 already exists": stripeDup("rec-001"),
		"400 resource_already_exists": {status: http.StatusBadRequest,
			body: `{"error":{"code":"resource_already_exists","message":"exists","type":"invalid_request_error"}}`},
	}
	for name, dup := range cases {
		t.Run(name, func(t *testing.T) {
			rc := newReceiver(t, FormatStripe)
			rc.respond = func(int, []string, bool) reply { return dup }
			src := newSource(recs("acme", 1)...)
			e := newExporter(t, testConfig(rc), src)
			if sent, err := e.Once(t.Context()); err != nil || sent != 1 {
				t.Fatalf("Once = %d, %v; want 1, nil", sent, err)
			}
			if st := e.Stats(); st.Duplicates != 1 || st.Sent != 1 || st.DeadLettered != 0 || st.Cursor != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// Stripe-Should-Retry: true on a 409 (a lock timeout) is retried, not taken
// for a duplicate.
func TestStripeShouldRetry(t *testing.T) {
	rc := newReceiver(t, FormatStripe)
	rc.respond = func(n int, _ []string, _ bool) reply {
		if n == 1 {
			return reply{status: http.StatusConflict, header: map[string]string{"Stripe-Should-Retry": "true"},
				body: `{"error":{"code":"lock_timeout"}}`}
		}
		return ok()
	}
	src := newSource(recs("acme", 1)...)
	e := newExporter(t, testConfig(rc), src)
	if _, err := e.Once(t.Context()); !errors.Is(err, ErrDelivery) {
		t.Fatalf("Once: %v, want ErrDelivery", err)
	}
	if sent, err := e.Once(t.Context()); err != nil || sent != 1 {
		t.Fatalf("Once = %d, %v", sent, err)
	}
	if st := e.Stats(); st.Duplicates != 0 || st.Retries != 1 || st.Sent != 1 {
		t.Errorf("stats %+v", st)
	}
}

// 429 with Retry-After: Run waits at least that long, though its own
// backoff is milliseconds.
func TestRetryAfterHonoured(t *testing.T) {
	rc := newReceiver(t, FormatCloudEvents)
	rc.respond = func(n int, _ []string, _ bool) reply {
		if n == 1 {
			return reply{status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "1"}}
		}
		return reply{status: http.StatusNoContent, store: true}
	}
	src := newSource(recs("acme", 1, 2)...)
	e := newExporter(t, testConfig(rc), src)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	waitFor(t, "the retry", func() bool { return rc.numRequests() >= 2 })
	cancel()
	<-done
	_, stored, _, reqs := rc.snapshot()
	if gap := reqs[1].at.Sub(reqs[0].at); gap < 950*time.Millisecond {
		t.Errorf("retried after %s, Retry-After said 1s", gap)
	}
	if len(stored) != 2 {
		t.Errorf("stored %v", stored)
	}
	var herr *HTTPError
	if st := e.Stats(); !errors.As(st.LastError, &herr) || herr.StatusCode != 429 || herr.RetryAfter != time.Second {
		t.Errorf("last error %v", st.LastError)
	}
}

func TestCursorSurvivesNewExporter(t *testing.T) {
	for _, format := range formats() {
		t.Run(format, func(t *testing.T) {
			rc := newReceiver(t, format)
			cfg := testConfig(rc)
			src := newSource(recs("acme", 1, 2, 3)...)
			if sent, err := newExporter(t, cfg, src).Once(t.Context()); err != nil || sent != 3 {
				t.Fatalf("first exporter: %d, %v", sent, err)
			}
			src.add(recs("globex", 4, 5)...)
			e2 := newExporter(t, cfg, src)
			if sent, err := e2.Once(t.Context()); err != nil || sent != 2 {
				t.Fatalf("second exporter: %d, %v; want 2 (only the new records)", sent, err)
			}
			arrivals, _, _, _ := rc.snapshot()
			if want := []string{"rec-001", "rec-002", "rec-003", "rec-004", "rec-005"}; !slices.Equal(arrivals, want) {
				t.Errorf("arrivals %v, want %v (no resend)", arrivals, want)
			}
			if st := e2.Stats(); st.Cursor != 5 {
				t.Errorf("cursor %d", st.Cursor)
			}
			// Another name has its own cursor.
			cfg.Name = "other"
			if sent, err := newExporter(t, cfg, src).Once(t.Context()); err != nil || sent != 5 {
				t.Errorf("exporter %q: %d, %v; want all 5", cfg.Name, sent, err)
			}
		})
	}
}

func TestSeqOrderAcrossPages(t *testing.T) {
	for _, format := range formats() {
		t.Run(format, func(t *testing.T) {
			rc := newReceiver(t, format)
			cfg := testConfig(rc)
			cfg.Batch = 2
			seqs := []int64{21, 3, 8, 7, 20, 40, 33}
			src := newSource(recs("acme", seqs...)...) // the source sorts by Seq
			e := newExporter(t, cfg, src)
			if sent, err := e.Once(t.Context()); err != nil || sent != len(seqs) {
				t.Fatalf("Once = %d, %v", sent, err)
			}
			arrivals, _, _, reqs := rc.snapshot()
			sorted := slices.Clone(seqs)
			slices.Sort(sorted)
			if want := ids(recs("", sorted...)); !slices.Equal(arrivals, want) {
				t.Errorf("arrivals %v, want %v", arrivals, want)
			}
			wantReqs := len(seqs)
			if format == FormatCloudEvents {
				wantReqs = 4 // pages of 2
			}
			if len(reqs) != wantReqs {
				t.Errorf("%d requests, want %d", len(reqs), wantReqs)
			}
		})
	}
}

// A record the endpoint rejects for good (400) is dead-lettered: logged,
// counted, passed over; the others go through.
func TestPermanentRejectionDeadLetters(t *testing.T) {
	for _, format := range formats() {
		t.Run(format, func(t *testing.T) {
			rc := newReceiver(t, format)
			rc.respond = func(_ int, ids []string, _ bool) reply {
				if slices.Contains(ids, "rec-002") {
					return reply{status: http.StatusBadRequest, body: `{"error":{"message":"bad value"}}`}
				}
				return ok()
			}
			src := newSource(recs("acme", 1, 2, 3, 4)...)
			e := newExporter(t, testConfig(rc), src)
			if sent, err := e.Once(t.Context()); err != nil || sent != 3 {
				t.Fatalf("Once = %d, %v; want 3, nil", sent, err)
			}
			_, stored, _, reqs := rc.snapshot()
			if want := []string{"rec-001", "rec-003", "rec-004"}; !slices.Equal(stored, want) {
				t.Errorf("stored %v, want %v", stored, want)
			}
			if format == FormatCloudEvents {
				// The batch of 4, then each event alone.
				if len(reqs) != 5 || len(reqs[0].ids) != 4 || reqs[1].header.Get("Content-Type") != contentTypeCloudEvent {
					t.Errorf("%d requests, first with %d events", len(reqs), len(reqs[0].ids))
				}
			}
			st := e.Stats()
			if st.DeadLettered != 1 || st.Sent != 3 || st.Cursor != 4 || !errors.Is(st.LastError, ErrRejected) {
				t.Errorf("stats %+v", st)
			}
			if c := src.cursor("test"); c != 4 {
				t.Errorf("persisted cursor %d", c)
			}
		})
	}
}

// A record that cannot be encoded is dead-lettered without a request.
func TestUnencodableDeadLettered(t *testing.T) {
	for _, format := range formats() {
		t.Run(format, func(t *testing.T) {
			rc := newReceiver(t, format)
			bad := rec(2, "acme", math.NaN())
			src := newSource(rec(1, "acme", 1), bad, rec(3, "acme", 3))
			e := newExporter(t, testConfig(rc), src)
			if sent, err := e.Once(t.Context()); err != nil || sent != 2 {
				t.Fatalf("Once = %d, %v", sent, err)
			}
			if arrivals, _, _, _ := rc.snapshot(); !slices.Equal(arrivals, []string{"rec-001", "rec-003"}) {
				t.Errorf("arrivals %v", arrivals)
			}
			if st := e.Stats(); st.DeadLettered != 1 || st.Cursor != 3 || st.Failures != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// 401 (and 403, 404, …) is the exporter's problem, not the record's: it
// holds, nothing is dead-lettered, the cursor stays.
func TestRefusedHolds(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusFound} {
		rc := newReceiver(t, FormatStripe)
		rc.respond = func(int, []string, bool) reply {
			return reply{status: status, header: map[string]string{"Location": "/elsewhere"}}
		}
		src := newSource(recs("acme", 1, 2)...)
		e := newExporter(t, testConfig(rc), src)
		sent, err := e.Once(t.Context())
		if sent != 0 || !errors.Is(err, ErrRefused) {
			t.Errorf("%d: Once = %d, %v; want 0, ErrRefused", status, sent, err)
		}
		if st := e.Stats(); st.DeadLettered != 0 || st.Cursor != 0 || st.Failures != 1 {
			t.Errorf("%d: stats %+v", status, st)
		}
		if n := rc.numRequests(); n != 1 {
			t.Errorf("%d: %d requests (redirect followed?)", status, n)
		}
	}
}

// Cancelling ctx stops Run promptly, in a request and between passes.
func TestRunStopsOnCancel(t *testing.T) {
	t.Run("in a request", func(t *testing.T) {
		rc := newReceiver(t, FormatCloudEvents)
		rc.respond = func(int, []string, bool) reply { return reply{delay: time.Minute} }
		cfg := testConfig(rc)
		cfg.Timeout.Duration = time.Minute
		e := newExporter(t, cfg, newSource(recs("acme", 1)...))
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		waitFor(t, "the request", func() bool { return rc.numRequests() == 1 })
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(time.Second):
			t.Fatal("Run did not stop within 1s of cancel")
		}
		if st := e.Stats(); st.Failures != 0 || st.Cursor != 0 {
			t.Errorf("cancel counted as a failure or advanced: %+v", st)
		}
	})
	t.Run("waiting", func(t *testing.T) {
		for _, name := range []string{"interval", "backoff"} {
			rc := newReceiver(t, FormatCloudEvents)
			rc.respond = func(int, []string, bool) reply { return reply{status: http.StatusServiceUnavailable} }
			cfg := testConfig(rc)
			cfg.Interval.Duration, cfg.MinBackoff, cfg.MaxBackoff = time.Hour, time.Hour, time.Hour
			src := newSource()
			if name == "backoff" {
				src.add(rec(1, "acme", 1))
			}
			e := newExporter(t, cfg, src)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- e.Run(ctx) }()
			waitFor(t, "a pass", func() bool {
				src.mu.Lock()
				defer src.mu.Unlock()
				return src.reads > 0 && (name == "interval" || rc.numRequests() > 0)
			})
			time.Sleep(20 * time.Millisecond)
			cancel()
			select {
			case <-done:
			case <-time.After(time.Second):
				t.Fatalf("%s: Run did not stop within 1s of cancel", name)
			}
		}
	})
}

func TestOnceCancelled(t *testing.T) {
	rc := newReceiver(t, FormatStripe)
	e := newExporter(t, testConfig(rc), newSource(recs("acme", 1)...))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := e.Once(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Once: %v", err)
	}
	if rc.numRequests() != 0 {
		t.Error("request sent with a cancelled context")
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 10*time.Millisecond, 80*time.Millisecond
	steps := []time.Duration{10, 20, 40, 80, 80, 80}
	for i, step := range steps {
		step *= time.Millisecond
		n := i + 1
		if got := backoff(lo, hi, n, 0.999999); got > step || got < step-time.Microsecond {
			t.Errorf("attempt %d, u→1: %s, want ≈%s", n, got, step)
		}
		if got := backoff(lo, hi, n, 0); got != max(step/2, lo) {
			t.Errorf("attempt %d, u=0: %s, want %s", n, got, max(step/2, lo))
		}
	}
	for n := 1; n < 200; n++ {
		if got := backoff(lo, hi, n, 0.5); got < lo || got > hi {
			t.Errorf("attempt %d: %s outside [%s, %s]", n, got, lo, hi)
		}
	}
	if got := backoff(time.Second, time.Hour, 1000, 1); got != time.Hour {
		t.Errorf("huge attempt: %s", got)
	}
}

func TestRetryAfterParse(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := map[string]time.Duration{
		"":                              0,
		"0":                             0,
		"-3":                            0,
		"7":                             7 * time.Second,
		" 2 ":                           2 * time.Second,
		"99999999":                      maxRetryAfter,
		"Fri, 02 Jan 2026 03:04:35 GMT": 30 * time.Second,
		"Fri, 02 Jan 2026 03:00:00 GMT": 0, // past
		"soon":                          0,
	}
	for v, want := range cases {
		if got := retryAfter(v, now); got != want {
			t.Errorf("retryAfter(%q) = %s, want %s", v, got, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Name: "stripe-prod", URL: "https://api.stripe.com/v1/billing/meter_events", Format: FormatStripe,
		Customers: map[string]string{"acme": "cus_1"}}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	ce := Config{Name: "om", URL: "http://127.0.0.1:8888/api/v1/events", Format: FormatCloudEvents}
	if err := ce.Validate(); err != nil {
		t.Fatalf("cloudevents config: %v", err)
	}
	d := ce.withDefaults()
	if d.Batch != DefaultBatch || d.Timeout.Duration != DefaultTimeout || d.MinBackoff != DefaultMinBackoff ||
		d.MaxBackoff != DefaultMaxBackoff || d.Interval.Duration != DefaultInterval || !strings.HasPrefix(d.Source, "scoped://") {
		t.Errorf("defaults %+v", d)
	}
	short := ce
	short.MaxBackoff = 100 * time.Millisecond
	if err := short.Validate(); err != nil {
		t.Errorf("short max backoff alone: %v", err)
	}

	bad := map[string]func(c *Config){
		"no name":           func(c *Config) { c.Name = "" },
		"name charset":      func(c *Config) { c.Name = "a b" },
		"name long":         func(c *Config) { c.Name = strings.Repeat("x", 65) },
		"no url":            func(c *Config) { c.URL = "" },
		"relative url":      func(c *Config) { c.URL = "/v1/billing/meter_events" },
		"ftp url":           func(c *Config) { c.URL = "ftp://example.com/x" },
		"no host":           func(c *Config) { c.URL = "https:///x" },
		"userinfo":          func(c *Config) { c.URL = "https://sk_live:x@api.stripe.com/v1" },
		"bad url":           func(c *Config) { c.URL = "http://[::1" },
		"format":            func(c *Config) { c.Format = "csv" },
		"token newline":     func(c *Config) { c.Token = "abc\r\nX-Evil: 1" },
		"no customers":      func(c *Config) { c.Customers = nil },
		"empty customer":    func(c *Config) { c.Customers = map[string]string{"acme": ""} },
		"empty event name":  func(c *Config) { c.EventNames = map[string]string{"cpu_seconds": ""} },
		"long event name":   func(c *Config) { c.EventNames = map[string]string{"cpu_seconds": strings.Repeat("e", 101)} },
		"zero scale":        func(c *Config) { c.Scales = map[string]float64{"cpu_seconds": 0} },
		"nan scale":         func(c *Config) { c.Scales = map[string]float64{"cpu_seconds": math.NaN()} },
		"negative batch":    func(c *Config) { c.Batch = -1 },
		"huge batch":        func(c *Config) { c.Batch = MaxBatch + 1 },
		"negative timeout":  func(c *Config) { c.Timeout.Duration = -time.Second },
		"huge timeout":      func(c *Config) { c.Timeout.Duration = time.Hour },
		"negative backoff":  func(c *Config) { c.MinBackoff = -time.Second },
		"max below min":     func(c *Config) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Second },
		"huge max backoff":  func(c *Config) { c.MaxBackoff = 2 * time.Hour },
		"negative interval": func(c *Config) { c.Interval.Duration = -1 },
		"huge interval":     func(c *Config) { c.Interval.Duration = 25 * time.Hour },
	}
	for name, mutate := range bad {
		c := good
		mutate(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Validate = %v, want ErrInvalidConfig", name, err)
		}
		if _, err := New(c, newSource(), nil, nil); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: New = %v, want ErrInvalidConfig", name, err)
		}
	}
	if _, err := New(good, nil, nil, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil source: %v", err)
	}
	// Customers are not needed for CloudEvents.
	if err := ce.Validate(); err != nil {
		t.Errorf("cloudevents without customers: %v", err)
	}
}

// The exporter keeps its own copy of the maps.
func TestConfigMapsCopied(t *testing.T) {
	rc := newReceiver(t, FormatStripe)
	cfg := testConfig(rc)
	e := newExporter(t, cfg, newSource(recs("acme", 1)...))
	cfg.Customers["acme"] = "cus_changed"
	if _, err := e.Once(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, _, _, reqs := rc.snapshot()
	v, _ := url.ParseQuery(string(reqs[0].body))
	if got := v.Get("payload[stripe_customer_id]"); got != "cus_acme" {
		t.Errorf("customer %q", got)
	}
}
