package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Record is one sealed usage record. It mirrors metering.Record; the daemon
// converts (this package does not import metering).
type Record struct {
	ID                            string // globally unique; the receiver deduplicates on it
	Tenant, Meter                 string
	Scope, Environment, Extension string
	WindowStart                   time.Time
	Window                        time.Duration
	Value                         float64
	Seq                           int64 // ledger order, strictly increasing
}

// Source is the ledger as the exporter sees it.
type Source interface {
	// Sealed returns up to limit records of closed windows with Seq >
	// afterSeq, in Seq order.
	Sealed(afterSeq int64, limit int) ([]Record, error)
	// LoadExportCursor returns the Seq saved for the exporter name, 0 if
	// none.
	LoadExportCursor(name string) (int64, error)
	// SaveExportCursor persists seq for the exporter name.
	SaveExportCursor(name string, seq int64) error
}

// Stats are an exporter's counters since New, for metrics.
type Stats struct {
	Sent         int64     // records the endpoint accepted, Duplicates included
	Duplicates   int64     // records the endpoint said it already had (409, Stripe's repeated identifier)
	Retries      int64     // delivery attempts that repeated a failed one
	Failures     int64     // failed delivery attempts, whatever the cause
	DeadLettered int64     // records rejected for good or unencodable, logged and passed over
	Skipped      int64     // Stripe: records of tenants without a customer, passed over
	LastError    error     // the last failure (delivery, rejection or Source), or nil
	LastErrorAt  time.Time // when LastError happened
	Cursor       int64     // Seq of the last record handled (sent, dead-lettered or skipped); 0 until the first pass loads it
}

// Limits not in Config.
const (
	maxRetryAfter = time.Hour // the longest Retry-After honoured
	maxErrorBody  = 4 << 10   // bytes of an error response kept for logs
	maxDrain      = 64 << 10  // bytes of a response read to reuse the connection
	userAgent     = "scoped-export/1"
)

// Exporter delivers a Source's sealed records to one endpoint. Its methods
// are safe for concurrent use; Once and Run serialise.
type Exporter struct {
	cfg    Config
	src    Source
	client *http.Client
	log    *slog.Logger

	runMu   sync.Mutex // one pass at a time
	loaded  bool       // cursor loaded from the Source
	dirty   bool       // cursor advanced but not saved
	failing bool       // the last delivery attempt failed (the next one is a retry)
	warned  map[string]bool

	mu    sync.Mutex // guards stats
	stats Stats
}

// New returns an exporter for cfg (zero fields take their defaults; it must
// pass Validate). client nil: a plain http.Client; either way each request
// is bounded by cfg.Timeout and redirects are not followed (the exporter
// uses a copy of client). log nil: discard. New does no I/O: the cursor is
// loaded by the first pass.
func New(cfg Config, src Source, client *http.Client, log *slog.Logger) (*Exporter, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if src == nil {
		return nil, fmt.Errorf("%w: no source", ErrInvalidConfig)
	}
	cfg.Customers = maps.Clone(cfg.Customers)
	cfg.EventNames = maps.Clone(cfg.EventNames)
	cfg.Scales = maps.Clone(cfg.Scales)
	// POST must not turn into a GET on 301/302/303 and count as delivered:
	// redirects are not followed, a 3xx answer refuses (ErrRefused).
	c := &http.Client{}
	if client != nil {
		c2 := *client
		c = &c2
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Exporter{
		cfg:    cfg,
		src:    src,
		client: c,
		log:    log.With("exporter", cfg.Name, "format", cfg.Format),
		warned: map[string]bool{},
	}, nil
}

// Stats returns a copy of the counters.
func (e *Exporter) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats
}

// Run exports until ctx is done, then returns nil: a pass (Once) right
// away, then one every Interval once caught up. After a failed pass it
// waits a jittered exponential backoff between MinBackoff and MaxBackoff
// (or the endpoint's longer Retry-After) and tries again from the same
// record: nothing is skipped but dead-lettered or unmapped records.
func (e *Exporter) Run(ctx context.Context) error {
	failures := 0
	for {
		_, err := e.Once(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := e.cfg.Interval.Duration
		if err != nil {
			failures++
			wait = e.retryWait(failures, err)
			level := slog.LevelWarn
			if errors.Is(err, ErrRefused) {
				level = slog.LevelError
			}
			e.log.Log(ctx, level, "export failed, will retry", "err", err, "attempt", failures, "in", wait)
		} else {
			failures = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Once makes one pass: from the persisted cursor, it sends every sealed
// record in Seq order and saves the cursor after each accepted request, until
// it catches up or an attempt fails. It does not retry: it returns the
// records accepted so far with the failure (ErrDelivery, ErrRefused,
// ErrSource, or ctx's error), and the next pass starts again with the record
// that failed.
func (e *Exporter) Once(ctx context.Context) (sent int, err error) {
	e.runMu.Lock()
	defer e.runMu.Unlock()
	if err := e.prepare(); err != nil {
		return 0, err
	}
	for {
		if err := ctx.Err(); err != nil {
			return sent, err
		}
		after := e.cursor()
		page, err := e.src.Sealed(after, e.cfg.Batch)
		if err != nil {
			return sent, e.lastErr(fmt.Errorf("%w: read records after seq %d: %w", ErrSource, after, err))
		}
		recs, err := fresh(page, after)
		if err != nil {
			return sent, e.lastErr(err)
		}
		n, err := e.exportPage(ctx, recs)
		sent += n
		if err != nil {
			return sent, err
		}
		if len(page) < e.cfg.Batch || e.cursor() == after {
			return sent, nil
		}
	}
}

// prepare loads the cursor on the first pass and saves one left unsaved.
func (e *Exporter) prepare() error {
	if !e.loaded {
		seq, err := e.src.LoadExportCursor(e.cfg.Name)
		if err != nil {
			return e.lastErr(fmt.Errorf("%w: load cursor %q: %w", ErrSource, e.cfg.Name, err))
		}
		e.mu.Lock()
		e.stats.Cursor = seq
		e.mu.Unlock()
		e.loaded = true
	}
	if e.dirty {
		return e.save()
	}
	return nil
}

// fresh drops records at or before the cursor and checks the order.
func fresh(page []Record, after int64) ([]Record, error) {
	out := page[:0:0]
	last := after
	for _, r := range page {
		if r.Seq <= after {
			continue
		}
		if r.Seq <= last {
			return nil, fmt.Errorf("%w: records out of order: seq %d after %d", ErrSource, r.Seq, last)
		}
		last = r.Seq
		out = append(out, r)
	}
	return out, nil
}

// exportPage sends a page's records in order: consecutive sendable ones in
// groups (one per request for Stripe, up to Batch for CloudEvents), and
// passes over skipped and unencodable ones between groups.
func (e *Exporter) exportPage(ctx context.Context, recs []Record) (int, error) {
	sent := 0
	group := make([]event, 0, e.cfg.Batch)
	flush := func() error {
		if len(group) == 0 {
			return nil
		}
		n, err := e.sendGroup(ctx, group)
		sent += n
		group = group[:0]
		return err
	}
	perRequest := e.cfg.Batch
	if e.cfg.Format == FormatStripe {
		perRequest = 1
	}
	for _, r := range recs {
		ev := e.encode(r)
		if ev.skip == "" && ev.bad == nil {
			group = append(group, ev)
			if len(group) == perRequest {
				if err := flush(); err != nil {
					return sent, err
				}
			}
			continue
		}
		if err := flush(); err != nil {
			return sent, err
		}
		var err error
		if ev.bad != nil {
			err = e.deadLetter(ev.rec, ev.bad)
		} else {
			err = e.skip(ev)
		}
		if err != nil {
			return sent, err
		}
	}
	return sent, flush()
}

// verdicts of a response.
type verdict int

const (
	accepted  verdict = iota // 2xx
	duplicate                // the endpoint already has it: as accepted
	retry                    // ErrDelivery
	refused                  // ErrRefused
	rejected                 // ErrRejected
)

// sendGroup makes one request for group and acts on the answer. A batch the
// endpoint rejects for good is sent again one event at a time, so only the
// events it rejects alone are dead-lettered.
func (e *Exporter) sendGroup(ctx context.Context, group []event) (int, error) {
	if e.failing {
		e.count(func(s *Stats) { s.Retries++ })
	}
	v, err := e.post(ctx, group)
	if v != accepted && v != duplicate && ctx.Err() != nil {
		return 0, ctx.Err() // cancelled, not a failure
	}
	e.failing = v == retry || v == refused
	last := group[len(group)-1].rec.Seq
	switch v {
	case accepted, duplicate:
		e.count(func(s *Stats) {
			s.Sent += int64(len(group))
			if v == duplicate {
				s.Duplicates += int64(len(group))
			}
		})
		if v == duplicate {
			e.log.Info("endpoint already had the records", "first", group[0].rec.ID, "count", len(group))
		}
		return len(group), e.advance(last)
	case rejected:
		e.fail(err)
		if len(group) == 1 {
			return 0, e.deadLetter(group[0].rec, err)
		}
		e.log.Warn("batch rejected, sending its events one at a time", "err", err, "count", len(group))
		sent := 0
		for i := range group {
			n, err := e.sendGroup(ctx, group[i:i+1])
			sent += n
			if err != nil {
				return sent, err
			}
		}
		return sent, nil
	default:
		e.fail(err)
		return 0, err
	}
}

// post sends group and classifies the answer; err says why unless accepted.
func (e *Exporter) post(ctx context.Context, group []event) (verdict, error) {
	ctype, body := e.body(group)
	rctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout.Duration)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, e.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return refused, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("User-Agent", userAgent)
	if tok := e.cfg.token(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return retry, fmt.Errorf("%w: %s: %w", ErrDelivery, describe(group), err)
	}
	defer resp.Body.Close()
	msg, rerr := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	v := e.classify(resp, msg)
	if v == accepted && rerr != nil {
		// The endpoint said 2xx; a body cut short does not undo that.
		e.log.Debug("reading accepted response", "err", rerr)
	}
	if v == accepted || v == duplicate {
		return v, nil
	}
	herr := &HTTPError{
		StatusCode: resp.StatusCode,
		RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now()),
		Body:       strings.TrimSpace(string(msg)),
	}
	sentinel := map[verdict]error{retry: ErrDelivery, refused: ErrRefused, rejected: ErrRejected}[v]
	return v, fmt.Errorf("%w: %s: %w", sentinel, describe(group), herr)
}

// classify maps a response to a verdict.
func (e *Exporter) classify(resp *http.Response, body []byte) verdict {
	code := resp.StatusCode
	stripe := e.cfg.Format == FormatStripe
	switch {
	case code >= 200 && code < 300:
		return accepted
	case stripe && code >= 400 && strings.EqualFold(resp.Header.Get("Stripe-Should-Retry"), "true"):
		return retry // e.g. a 409 lock timeout, not a duplicate
	case code == http.StatusConflict:
		return duplicate
	case stripe && code == http.StatusBadRequest && stripeDuplicate(body):
		return duplicate
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests, code >= 500:
		return retry
	case code == http.StatusUnauthorized, code == http.StatusForbidden, code == http.StatusNotFound,
		code == http.StatusMethodNotAllowed, code == http.StatusProxyAuthRequired,
		code == http.StatusUnsupportedMediaType, code < 400:
		return refused
	default:
		return rejected
	}
}

// advance moves the cursor to seq and saves it.
func (e *Exporter) advance(seq int64) error {
	e.mu.Lock()
	e.stats.Cursor = seq
	e.mu.Unlock()
	e.dirty = true
	return e.save()
}

// save persists the cursor. On failure the cursor stays advanced in memory
// (those records are delivered) and the next pass saves it again; a crash
// before that re-sends them, which the receiver deduplicates.
func (e *Exporter) save() error {
	seq := e.cursor()
	if err := e.src.SaveExportCursor(e.cfg.Name, seq); err != nil {
		return e.lastErr(fmt.Errorf("%w: save cursor %q at seq %d: %w", ErrSource, e.cfg.Name, seq, err))
	}
	e.dirty = false
	return nil
}

// deadLetter logs and counts a record rejected for good and moves past it.
// The record stays in the ledger; the log line has what a manual resend
// needs.
func (e *Exporter) deadLetter(r Record, err error) error {
	e.count(func(s *Stats) { s.DeadLettered++ })
	e.lastErr(err)
	e.log.Error("record rejected, dead-lettered", "err", err, "id", r.ID, "seq", r.Seq,
		"tenant", r.Tenant, "meter", r.Meter, "value", r.Value, "window_start", r.WindowStart)
	return e.advance(r.Seq)
}

// skip counts a record not meant for this endpoint and moves past it,
// warning once per tenant.
func (e *Exporter) skip(ev event) error {
	e.count(func(s *Stats) { s.Skipped++ })
	if !e.warned[ev.rec.Tenant] {
		e.warned[ev.rec.Tenant] = true
		e.log.Warn("skipping the tenant's records", "reason", ev.skip, "tenant", ev.rec.Tenant,
			"first_id", ev.rec.ID, "seq", ev.rec.Seq)
	}
	return e.advance(ev.rec.Seq)
}

func (e *Exporter) cursor() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats.Cursor
}

func (e *Exporter) count(f func(*Stats)) {
	e.mu.Lock()
	f(&e.stats)
	e.mu.Unlock()
}

// fail records a failed delivery attempt.
func (e *Exporter) fail(err error) {
	e.mu.Lock()
	e.stats.Failures++
	e.stats.LastError, e.stats.LastErrorAt = err, time.Now()
	e.mu.Unlock()
}

// lastErr records err as the last error and returns it.
func (e *Exporter) lastErr(err error) error {
	e.mu.Lock()
	e.stats.LastError, e.stats.LastErrorAt = err, time.Now()
	e.mu.Unlock()
	return err
}

// retryWait is how long Run waits after its n-th consecutive failure.
func (e *Exporter) retryWait(n int, err error) time.Duration {
	wait := backoff(e.cfg.MinBackoff, e.cfg.MaxBackoff, n, rand.Float64())
	var herr *HTTPError
	if errors.As(err, &herr) && herr.RetryAfter > 0 {
		wait = max(wait, min(herr.RetryAfter, maxRetryAfter))
	}
	return wait
}

// backoff is the n-th (from 1) wait: step = lo·2^(n-1) capped at hi, then
// a uniformly random point of [step/2, step] (u in [0, 1)), at least lo.
func backoff(lo, hi time.Duration, n int, u float64) time.Duration {
	step := lo
	for i := 1; i < n && step < hi; i++ {
		step *= 2
	}
	step = min(step, hi)
	d := step/2 + time.Duration(u*float64(step-step/2))
	return max(d, lo)
}

// retryAfter parses a Retry-After value: delay seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, int64(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// describe names a group in errors.
func describe(group []event) string {
	if len(group) == 1 {
		return fmt.Sprintf("record %s (seq %d)", group[0].rec.ID, group[0].rec.Seq)
	}
	return fmt.Sprintf("%d records (seq %d..%d)", len(group), group[0].rec.Seq, group[len(group)-1].rec.Seq)
}

// HTTPError is an endpoint's answer other than success.
type HTTPError struct {
	StatusCode int
	RetryAfter time.Duration // from Retry-After, 0 if none
	Body       string        // the start of the response body
}

func (e *HTTPError) Error() string {
	s := fmt.Sprintf("HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	if e.Body != "" {
		s += ": " + e.Body
	}
	return s
}
