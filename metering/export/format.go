package export

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Content types. OpenMeter's ingest handler compares the Content-Type
// header with these exactly, so no parameters (charset) are added.
const (
	contentTypeForm       = "application/x-www-form-urlencoded"
	contentTypeCloudEvent = "application/cloudevents+json"
	contentTypeCEBatch    = "application/cloudevents-batch+json"
)

// event is one record prepared for the wire: its encoded body, or why it
// is not sent (skip: not for this endpoint; bad: cannot be encoded).
type event struct {
	rec  Record
	body []byte
	skip string // reason it is passed over without a request
	bad  error  // wraps ErrRejected: dead-letter without a request
}

// encode prepares a record in the configured format.
func (e *Exporter) encode(r Record) event {
	ev := event{rec: r}
	if r.ID == "" {
		ev.bad = fmt.Errorf("%w: record seq %d has no id", ErrRejected, r.Seq)
		return ev
	}
	if math.IsNaN(r.Value) || math.IsInf(r.Value, 0) {
		ev.bad = fmt.Errorf("%w: record %s value %g is not finite", ErrRejected, r.ID, r.Value)
		return ev
	}
	switch e.cfg.Format {
	case FormatStripe:
		cus, ok := e.cfg.Customers[r.Tenant]
		if !ok {
			ev.skip = "tenant has no Stripe customer"
			return ev
		}
		form, err := e.stripeForm(r, cus)
		if err != nil {
			ev.bad = err
			return ev
		}
		ev.body = []byte(form.Encode())
	case FormatCloudEvents:
		b, err := json.Marshal(e.cloudEvent(r))
		if err != nil {
			ev.bad = fmt.Errorf("%w: record %s: %w", ErrRejected, r.ID, err)
			return ev
		}
		ev.body = b
	}
	return ev
}

func (e *Exporter) eventName(meter string) string {
	if n, ok := e.cfg.EventNames[meter]; ok {
		return n
	}
	return meter
}

// stripeForm is the body of POST /v1/billing/meter_events: event_name,
// payload[stripe_customer_id], payload[value] (a whole number, as Stripe
// requires), identifier (the record ID, which Stripe keeps unique for at
// least 24 hours) and timestamp (the window start, Unix seconds).
func (e *Exporter) stripeForm(r Record, customer string) (url.Values, error) {
	name := e.eventName(r.Meter)
	if len(name) > stripeMaxEventName {
		return nil, fmt.Errorf("%w: record %s: event name %q longer than Stripe's %d", ErrRejected, r.ID, name, stripeMaxEventName)
	}
	if len(r.ID) > stripeMaxIdentifier {
		return nil, fmt.Errorf("%w: record %s: identifier longer than Stripe's %d", ErrRejected, r.ID, stripeMaxIdentifier)
	}
	v := r.Value
	if f, ok := e.cfg.Scales[r.Meter]; ok {
		v *= f
	}
	v = math.Round(v)
	if math.IsInf(v, 0) || math.Abs(v) > 1<<53 {
		return nil, fmt.Errorf("%w: record %s: value %g out of range", ErrRejected, r.ID, v)
	}
	if v == 0 {
		v = 0 // no "-0"
	}
	return url.Values{
		"event_name":                  {name},
		"payload[stripe_customer_id]": {customer},
		"payload[value]":              {strconv.FormatFloat(v, 'f', 0, 64)},
		"identifier":                  {r.ID},
		"timestamp":                   {strconv.FormatInt(r.WindowStart.Unix(), 10)},
	}, nil
}

// CloudEvent is one record as a CloudEvents 1.0 JSON event, the shape
// OpenMeter ingests: type selects the meter, subject is the tenant, and
// the meter's value and group-by properties are in data.
type CloudEvent struct {
	SpecVersion string         `json:"specversion"` // "1.0"
	ID          string         `json:"id"`          // Record.ID
	Source      string         `json:"source"`      // Config.Source
	Type        string         `json:"type"`        // the meter, or its EventNames entry
	Subject     string         `json:"subject"`     // the tenant
	Time        string         `json:"time"`        // the window start, RFC 3339, UTC
	Data        CloudEventData `json:"data"`
}

// CloudEventData is a CloudEvent's data.
type CloudEventData struct {
	Value         float64 `json:"value"`
	Scope         string  `json:"scope"`
	Environment   string  `json:"environment"`
	Extension     string  `json:"extension"`
	WindowSeconds float64 `json:"window_seconds"`
}

func (e *Exporter) cloudEvent(r Record) CloudEvent {
	return CloudEvent{
		SpecVersion: "1.0",
		ID:          r.ID,
		Source:      e.cfg.Source,
		Type:        e.eventName(r.Meter),
		Subject:     r.Tenant,
		Time:        r.WindowStart.UTC().Format(time.RFC3339Nano),
		Data: CloudEventData{
			Value:         r.Value,
			Scope:         r.Scope,
			Environment:   r.Environment,
			Extension:     r.Extension,
			WindowSeconds: r.Window.Seconds(),
		},
	}
}

// body is the request for a group of events: Stripe one form, CloudEvents
// one event (structured mode) or a JSON array (batch mode).
func (e *Exporter) body(group []event) (contentType string, body []byte) {
	if e.cfg.Format == FormatStripe {
		return contentTypeForm, group[0].body
	}
	if len(group) == 1 {
		return contentTypeCloudEvent, group[0].body
	}
	var b bytes.Buffer
	b.WriteByte('[')
	for i, ev := range group {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(ev.body)
	}
	b.WriteByte(']')
	return contentTypeCEBatch, b.Bytes()
}

// stripeDuplicate reports whether a Stripe error body says the identifier
// was already used: Stripe answers a repeated identifier with 400
// invalid_request_error "An event already exists with identifier …" (or,
// in general, the code resource_already_exists), and for this exporter
// the identifier is the record's ID, so the record is already there.
func stripeDuplicate(body []byte) bool {
	var r struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &r) != nil {
		return false
	}
	if r.Error.Code == "resource_already_exists" {
		return true
	}
	m := strings.ToLower(r.Error.Message)
	return strings.Contains(m, "already exists") && strings.Contains(m, "identifier")
}
