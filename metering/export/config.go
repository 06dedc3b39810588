package export

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/scoped-io/scoped/internal/confval"
)

// Sentinel errors. Every error of this package wraps one of them, alongside
// the underlying error where there is one.
var (
	// ErrInvalidConfig: Config.Validate (and New) refuse the configuration.
	ErrInvalidConfig = errors.New("invalid export config")
	// ErrDelivery: an attempt failed in a way worth retrying: a transport
	// error, the per-request timeout, 408, 425, 429 or 5xx. Nothing was
	// skipped; the next attempt sends the same records again.
	ErrDelivery = errors.New("export delivery failed")
	// ErrRefused: the endpoint refuses the exporter itself (401, 403, 404,
	// 405, 407, 415, or a redirect it did not follow), which is a credential
	// or URL problem, not the record's. The exporter holds (retries with
	// backoff) rather than dead-letter every record behind a bad token.
	ErrRefused = errors.New("export endpoint refused the exporter")
	// ErrRejected: the endpoint rejected a record for good (another 4xx), or
	// the record cannot be encoded. Such a record is dead-lettered: logged,
	// counted and passed over. It appears in Stats.LastError, never as
	// Once's error.
	ErrRejected = errors.New("export record rejected")
	// ErrSource: the Source failed to list records or to load or save the
	// cursor.
	ErrSource = errors.New("export source failed")
)

// Formats.
const (
	FormatStripe      = "stripe"      // Stripe billing meter events (v1, form-encoded, one per request)
	FormatCloudEvents = "cloudevents" // CloudEvents 1.0 JSON, batched, as OpenMeter ingests them
)

// Defaults, used for the zero value of the corresponding Config field.
const (
	DefaultBatch      = 100
	DefaultTimeout    = 10 * time.Second
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 5 * time.Minute
	DefaultInterval   = time.Minute
)

// Bounds Validate enforces.
const (
	MaxBatch      = 1000
	MaxTimeout    = 5 * time.Minute
	MaxMaxBackoff = time.Hour
	MaxInterval   = 24 * time.Hour
	maxNameLen    = 64
	// Stripe's documented limits for billing meter events (v1).
	stripeMaxEventName  = 100
	stripeMaxIdentifier = 100
)

// Config configures one exporter. The zero value of Batch, Timeout,
// MinBackoff, MaxBackoff, Interval and Source means its default. It is
// one [[metering.export]] table of the daemon's configuration: the toml
// tags are its keys.
type Config struct {
	// Name identifies the exporter; it is the key of its persisted cursor
	// (Source.LoadExportCursor), so renaming an exporter restarts it from
	// the beginning. Letters, digits, '.', '_' and '-', at most 64.
	Name string `toml:"name"`
	// URL is the full endpoint, e.g.
	// "https://api.stripe.com/v1/billing/meter_events" or
	// "https://openmeter.cloud/api/v1/events": absolute http or https,
	// without credentials (they go in Token). Nothing is appended to it.
	URL string `toml:"url"`
	// Format is FormatStripe or FormatCloudEvents.
	Format string `toml:"format"`
	// Token, if set, is sent as "Authorization: Bearer <Token>" (a Stripe
	// secret or restricted key, an OpenMeter API token).
	Token string `toml:"token"`
	// TokenFile holds the token instead of Token (exclusive with it); its
	// content, trimmed, is read by ReadToken and then used as the token.
	TokenFile string `toml:"token_file"`
	// fileToken is what ReadToken read from TokenFile.
	fileToken string
	// Customers maps a tenant to its Stripe customer id (Stripe only, and
	// required non-empty there). A record of a tenant not in the map is
	// skipped: it is not billed through Stripe, the cursor moves past it,
	// Stats.Skipped counts it and the first one per tenant is logged as a
	// warning. Holding instead would stall every other tenant's billing
	// behind one missing entry until Stripe's 35-day timestamp window
	// drops them all; the skipped record stays in the ledger.
	Customers map[string]string `toml:"customers"`
	// EventNames maps a meter to the name sent for it: Stripe's event_name,
	// the CloudEvents type. Default: the meter name itself.
	EventNames map[string]string `toml:"event_names"`
	// Scales maps a meter to a factor its value is multiplied by before
	// Stripe's rounding (Stripe only): Stripe takes whole numbers only, so
	// a fractional meter such as cpu_seconds should be sent in a finer
	// unit, e.g. factor 1000 with EventNames "cpu_milliseconds". Default 1.
	// The value is then rounded to the nearest whole number.
	Scales map[string]float64 `toml:"scales"`
	// Batch is how many records are read from the Source at a time, and
	// the most CloudEvents sent in one request (Stripe: one per request).
	// 1..1000, default 100.
	Batch int `toml:"batch"`
	// Timeout bounds one HTTP request, response body included. Default 10s,
	// at most 5m.
	Timeout confval.Duration `toml:"timeout"`
	// MinBackoff and MaxBackoff bound the wait between failed attempts: it
	// doubles from MinBackoff up to MaxBackoff, with jitter (a uniformly
	// random wait in the upper half of the step, never below MinBackoff).
	// A longer Retry-After from the endpoint wins, up to an hour.
	// Defaults 1s and 5m; MaxBackoff at most 1h. (Not configuration
	// keys: the daemon uses the defaults.)
	MinBackoff time.Duration `toml:"-"`
	MaxBackoff time.Duration `toml:"-"`
	// Interval is how long Run waits after catching up before it looks for
	// new sealed records. Default 1m, at most 24h.
	Interval confval.Duration `toml:"interval"`
	// Source is the CloudEvents source attribute (CloudEvents only), e.g.
	// "scoped://host1". OpenMeter deduplicates on id and source, so it must
	// stay the same across restarts. Default "scoped://" + the hostname.
	Source string `toml:"source"`
}

// withDefaults returns c with its zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Batch == 0 {
		c.Batch = DefaultBatch
	}
	if c.Timeout.Duration == 0 {
		c.Timeout.Duration = DefaultTimeout
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
		if c.MaxBackoff > 0 && c.MaxBackoff < c.MinBackoff {
			c.MinBackoff = c.MaxBackoff // a short MaxBackoff alone stays valid
		}
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.Interval.Duration == 0 {
		c.Interval.Duration = DefaultInterval
	}
	if c.Source == "" && c.Format == FormatCloudEvents {
		if h, err := os.Hostname(); err == nil && h != "" {
			c.Source = "scoped://" + h
		}
	}
	return c
}

// Validate checks the configuration with its defaults applied. Errors wrap
// ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	c = c.withDefaults()
	if err := checkName(c.Name); err != nil {
		return bad("name %q: %v", c.Name, err)
	}
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		return bad("url is empty")
	case err != nil:
		return bad("url %q: %v", c.URL, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return bad("url %q: scheme must be http or https", c.URL)
	case u.Host == "":
		return bad("url %q: no host", c.URL)
	case u.User != nil:
		return bad("url %q: credentials belong in the token, not the url", u.Redacted())
	}
	if hasControl(c.token()) {
		return bad("token has control characters")
	}
	switch c.Format {
	case FormatStripe:
		if len(c.Customers) == 0 {
			return bad("stripe format needs at least one tenant in customers")
		}
		for tenant, cus := range c.Customers {
			if tenant == "" || cus == "" || hasControl(cus) {
				return bad("customer %q for tenant %q", cus, tenant)
			}
		}
		for meter, f := range c.Scales {
			if meter == "" || math.IsNaN(f) || math.IsInf(f, 0) || f <= 0 {
				return bad("scale %g for meter %q must be positive", f, meter)
			}
		}
	case FormatCloudEvents:
		su, err := url.Parse(c.Source)
		if c.Source == "" || err != nil || su == nil {
			return bad("cloudevents source %q must be a non-empty URI reference", c.Source)
		}
	default:
		return bad("format %q is not %q or %q", c.Format, FormatStripe, FormatCloudEvents)
	}
	for meter, name := range c.EventNames {
		if meter == "" || name == "" || hasControl(name) {
			return bad("event name %q for meter %q", name, meter)
		}
		if c.Format == FormatStripe && len(name) > stripeMaxEventName {
			return bad("event name %q longer than Stripe's %d", name, stripeMaxEventName)
		}
	}
	switch {
	case c.Batch < 1 || c.Batch > MaxBatch:
		return bad("batch %d not in 1..%d", c.Batch, MaxBatch)
	case c.Timeout.Duration <= 0 || c.Timeout.Duration > MaxTimeout:
		return bad("timeout %s not in (0, %s]", c.Timeout, MaxTimeout)
	case c.MinBackoff <= 0:
		return bad("min backoff %s must be positive", c.MinBackoff)
	case c.MaxBackoff < c.MinBackoff || c.MaxBackoff > MaxMaxBackoff:
		return bad("max backoff %s not in [min backoff %s, %s]", c.MaxBackoff, c.MinBackoff, MaxMaxBackoff)
	case c.Interval.Duration <= 0 || c.Interval.Duration > MaxInterval:
		return bad("interval %s not in (0, %s]", c.Interval, MaxInterval)
	}
	return nil
}

// ReadToken reads TokenFile, if set, into the token the exporter sends
// (once, when the configuration is loaded or reloaded).
func (c *Config) ReadToken() error {
	c.fileToken = ""
	if c.TokenFile == "" {
		return nil
	}
	if c.Token != "" {
		return fmt.Errorf("export %s: token and token_file are exclusive", c.Name)
	}
	b, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return fmt.Errorf("export %s: %w", c.Name, err)
	}
	c.fileToken = strings.TrimSpace(string(b))
	return nil
}

// token is the bearer token: Token, or what ReadToken read.
func (c Config) token() string {
	if c.TokenFile != "" {
		return c.fileToken
	}
	return c.Token
}

func checkName(s string) error {
	if s == "" || len(s) > maxNameLen {
		return fmt.Errorf("length not in 1..%d", maxNameLen)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("character %q not allowed", r)
		}
	}
	return nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}
