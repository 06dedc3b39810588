package export

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scoped-io/scoped/internal/confval"
)

// fakeSource is an in-memory ledger.
type fakeSource struct {
	mu      sync.Mutex
	recs    []Record
	cursors map[string]int64
	saveErr error // SaveExportCursor fails with it (and saves nothing)
	saves   int
	reads   int
}

func newSource(recs ...Record) *fakeSource {
	s := &fakeSource{cursors: map[string]int64{}}
	s.add(recs...)
	return s
}

func (s *fakeSource) add(recs ...Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, recs...)
	sort.Slice(s.recs, func(i, j int) bool { return s.recs[i].Seq < s.recs[j].Seq })
}

func (s *fakeSource) Sealed(after int64, limit int) ([]Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	var out []Record
	for _, r := range s.recs {
		if r.Seq > after && len(out) < limit {
			out = append(out, r)
		}
	}
	return out, nil
}

func (s *fakeSource) LoadExportCursor(name string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursors[name], nil
}

func (s *fakeSource) SaveExportCursor(name string, seq int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saveErr != nil {
		return s.saveErr
	}
	s.saves++
	s.cursors[name] = seq
	return nil
}

func (s *fakeSource) cursor(name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursors[name]
}

func (s *fakeSource) setSaveErr(err error) {
	s.mu.Lock()
	s.saveErr = err
	s.mu.Unlock()
}

var base = time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)

// rec is record seq of tenant for cpu_seconds, its window the seq-th minute.
func rec(seq int64, tenant string, value float64) Record {
	return Record{
		ID:          fmt.Sprintf("rec-%03d", seq),
		Tenant:      tenant,
		Meter:       "cpu_seconds",
		Scope:       tenant + ".production",
		Environment: "production",
		Extension:   "whoami",
		WindowStart: base.Add(time.Duration(seq) * time.Minute),
		Window:      time.Minute,
		Value:       value,
		Seq:         seq,
	}
}

func recs(tenant string, seqs ...int64) []Record {
	out := make([]Record, len(seqs))
	for i, s := range seqs {
		out[i] = rec(s, tenant, float64(s))
	}
	return out
}

func ids(rs []Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

// reply is what the receiver answers one request.
type reply struct {
	status int
	header map[string]string
	body   string
	delay  time.Duration // before answering (beyond the client's timeout: the answer is lost)
	store  bool          // the receiver keeps the events (before the delay)
}

// receiver is an ingest endpoint for either format. It records every
// event ID that arrives and, for the requests it stores, deduplicates by
// ID as Stripe and OpenMeter do.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	format string

	mu       sync.Mutex
	requests []*capture
	arrivals []string       // every ID received, in order, repeats included
	stored   []string       // IDs stored, first time only, in order
	count    map[string]int // times each stored ID arrived in a storing request

	// respond decides the answer to the n-th request (from 1); dup: every
	// ID in it is already stored. Default: ok(), or stripeDup() for a
	// Stripe duplicate.
	respond func(n int, ids []string, dup bool) reply
}

type capture struct {
	at     time.Time
	method string
	path   string
	header http.Header
	body   []byte
	ids    []string
}

func newReceiver(t *testing.T, format string) *receiver {
	rc := &receiver{t: t, format: format, count: map[string]int{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) url() string {
	if rc.format == FormatStripe {
		return rc.srv.URL + "/v1/billing/meter_events"
	}
	return rc.srv.URL + "/api/v1/events"
}

func ok() reply { return reply{status: http.StatusOK, store: true} }

// stripeDup is Stripe's answer to a repeated identifier.
func stripeDup(id string) reply {
	return reply{
		status: http.StatusBadRequest,
		header: map[string]string{"Stripe-Should-Retry": "false", "Content-Type": "application/json"},
		body:   fmt.Sprintf(`{"error":{"message":"An event already exists with identifier %s.","type":"invalid_request_error"}}`, id),
	}
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c := &capture{at: time.Now(), method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: body}
	c.ids = rc.parse(r.Header.Get("Content-Type"), body)

	rc.mu.Lock()
	rc.requests = append(rc.requests, c)
	n := len(rc.requests)
	rc.arrivals = append(rc.arrivals, c.ids...)
	dup := len(c.ids) > 0
	for _, id := range c.ids {
		if rc.count[id] == 0 {
			dup = false
		}
	}
	respond := rc.respond
	rc.mu.Unlock()

	var rep reply
	switch {
	case respond != nil:
		rep = respond(n, c.ids, dup)
	case dup && rc.format == FormatStripe:
		rep = stripeDup(c.ids[0])
	default:
		rep = ok()
	}
	if rep.store {
		rc.mu.Lock()
		for _, id := range c.ids {
			if rc.count[id] == 0 {
				rc.stored = append(rc.stored, id)
			}
			rc.count[id]++
		}
		rc.mu.Unlock()
	}
	if rep.delay > 0 {
		select {
		case <-time.After(rep.delay):
		case <-r.Context().Done():
			return // the client gave up: its answer is lost
		}
	}
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	if rep.status == 0 {
		rep.status = http.StatusOK
	}
	w.WriteHeader(rep.status)
	_, _ = io.WriteString(w, rep.body)
}

// parse extracts the event IDs of a request body.
func (rc *receiver) parse(ctype string, body []byte) []string {
	switch ctype {
	case contentTypeForm:
		v, err := url.ParseQuery(string(body))
		if err != nil {
			rc.t.Errorf("receiver: bad form %q: %v", body, err)
			return nil
		}
		return []string{v.Get("identifier")}
	case contentTypeCloudEvent:
		var ev CloudEvent
		if err := json.Unmarshal(body, &ev); err != nil {
			rc.t.Errorf("receiver: bad cloudevent %s: %v", body, err)
			return nil
		}
		return []string{ev.ID}
	case contentTypeCEBatch:
		var evs []CloudEvent
		if err := json.Unmarshal(body, &evs); err != nil {
			rc.t.Errorf("receiver: bad cloudevents batch %s: %v", body, err)
			return nil
		}
		out := make([]string, len(evs))
		for i, ev := range evs {
			out[i] = ev.ID
		}
		return out
	}
	rc.t.Errorf("receiver: unexpected content type %q", ctype)
	return nil
}

func (rc *receiver) snapshot() (arrivals, stored []string, count map[string]int, reqs []*capture) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.arrivals), slices.Clone(rc.stored), maps.Clone(rc.count), slices.Clone(rc.requests)
}

func (rc *receiver) storedIDs() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.stored)
}

func (rc *receiver) numRequests() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.requests)
}

// testConfig is a fast configuration for rc.
func testConfig(rc *receiver) Config {
	cfg := Config{
		Name:       "test",
		URL:        rc.url(),
		Format:     rc.format,
		Token:      "sk_test_123",
		Batch:      10,
		Timeout:    confval.Duration{Duration: 300 * time.Millisecond},
		MinBackoff: 5 * time.Millisecond,
		MaxBackoff: 20 * time.Millisecond,
		Interval:   confval.Duration{Duration: 10 * time.Millisecond},
		Source:     "scoped://test-host",
	}
	if rc.format == FormatStripe {
		cfg.Customers = map[string]string{"acme": "cus_acme", "globex": "cus_globex"}
	}
	return cfg
}

func newExporter(t *testing.T, cfg Config, src Source) *Exporter {
	t.Helper()
	e, err := New(cfg, src, nil, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func formats() []string { return []string{FormatStripe, FormatCloudEvents} }

func joined(s []string) string { return strings.Join(s, ",") }
