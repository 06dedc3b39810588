package metering

import (
	"fmt"
	"strings"
	"time"

	"github.com/scoped-io/scoped/internal/ident"
)

// Dimensions Query.By groups by.
const (
	ByNone        = ""
	ByScope       = "scope"
	ByEnvironment = "environment"
	ByExtension   = "extension"
)

// byColumn maps Query.By to its column; only these strings reach SQL.
var byColumn = map[string]string{
	ByNone:        "''",
	ByScope:       "scope",
	ByEnvironment: "environment",
	ByExtension:   "extension",
}

// Bounds of Usage.
const (
	DefaultUsageLimit = 10_000
	MaxUsageRows      = 1_000_000
)

// Query selects usage, as `scopectl usage --tenant T --from F --to T --by D`
// asks for it.
type Query struct {
	// Tenant is the tenant, or "" for every tenant.
	Tenant ident.Tenant
	// Meter is one meter, or "" for every meter.
	Meter string
	// From and To select the windows that start in [From, To); a zero
	// time leaves that end open. With From and To on window boundaries
	// (whole days, say) the selection is exact.
	From, To time.Time
	// By groups by one dimension: ByNone, ByScope, ByEnvironment or
	// ByExtension. Usage not attributed to it has the group "".
	By string
	// PerWindow gives a row per window instead of one summed over the
	// range.
	PerWindow bool
	// Limit is the most rows Usage returns (0 means DefaultUsageLimit, at
	// most MaxUsageRows); when more would match it fails with ErrTooLarge.
	Limit int
}

// Row is the usage of one tenant, meter and group, summed over the range or
// over one window.
type Row struct {
	Tenant, Meter string
	Group         string        // the value of Query.By's dimension; "" when not attributed or not grouped
	WindowStart   time.Time     // UTC; zero unless Query.PerWindow
	Window        time.Duration // zero unless Query.PerWindow
	Value         float64
}

// checkRange checks an optional [from, to) range.
// ceilUnix is t in whole seconds, rounded up: window starts are whole
// seconds, so "starts in [from, to)" is window_start >= ceil(from) and
// window_start < ceil(to). Truncating instead would drop the current
// window for a To of now in its first second.
func ceilUnix(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

func checkRange(from, to time.Time) error {
	if !from.IsZero() {
		if err := checkTime("from", from); err != nil {
			return err
		}
	}
	if !to.IsZero() {
		if err := checkTime("to", to); err != nil {
			return err
		}
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		return fmt.Errorf("%w: from %v is not before to %v", ErrInvalid, from, to)
	}
	return nil
}

// Usage returns the usage q selects, open windows included, ordered by
// tenant, meter, group and window start.
func (l *Ledger) Usage(q Query) ([]Row, error) {
	if q.Meter != "" {
		if err := checkMeter(q.Meter); err != nil {
			return nil, err
		}
	}
	if err := checkRange(q.From, q.To); err != nil {
		return nil, err
	}
	col, ok := byColumn[q.By]
	if !ok {
		return nil, fmt.Errorf("%w: group by %q: want one of \"\", %s, %s, %s", ErrInvalid, q.By, ByScope, ByEnvironment, ByExtension)
	}
	limit := q.Limit
	if limit == 0 {
		limit = DefaultUsageLimit
	}
	if limit < 0 || limit > MaxUsageRows {
		return nil, fmt.Errorf("%w: limit %d: want 0 to %d", ErrInvalid, q.Limit, MaxUsageRows)
	}

	var where []string
	var args []any
	if q.Tenant != "" {
		where, args = append(where, "tenant = ?"), append(args, q.Tenant)
	}
	if q.Meter != "" {
		where, args = append(where, "meter = ?"), append(args, q.Meter)
	}
	if !q.From.IsZero() {
		where, args = append(where, "window_start >= ?"), append(args, ceilUnix(q.From))
	}
	if !q.To.IsZero() {
		where, args = append(where, "window_start < ?"), append(args, ceilUnix(q.To))
	}
	cond := ""
	if len(where) > 0 {
		cond = "WHERE " + strings.Join(where, " AND ")
	}
	cols, group := "0, 0", "tenant, meter, grp"
	if q.PerWindow {
		cols, group = "window_start, window_s", "tenant, meter, grp, window_start, window_s"
	}
	stmt := fmt.Sprintf(`SELECT tenant, meter, %s AS grp, %s, sum(value) FROM records %s GROUP BY %s ORDER BY %s LIMIT ?`,
		col, cols, cond, group, group)
	args = append(args, limit+1)

	if err := l.begin(false); err != nil {
		return nil, err
	}
	defer l.end(false)
	rows, err := l.r.Query(stmt, args...)
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		if len(out) == limit {
			return nil, fmt.Errorf("%w: %w: more than %d rows of usage; narrow the query or raise its limit", ErrInvalid, ErrTooLarge, limit)
		}
		var r Row
		var start, w int64
		if err := rows.Scan(&r.Tenant, &r.Meter, &r.Group, &start, &w, &r.Value); err != nil {
			return nil, fmt.Errorf("usage: %w", err)
		}
		if q.PerWindow {
			r.WindowStart, r.Window = time.Unix(start, 0).UTC(), time.Duration(w)*time.Second
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	return out, nil
}

// Sum returns the usage of one meter of a tenant over the windows that
// start in [from, to), open windows included, across all dimensions: what a
// daily or monthly spend guard compares with its cap. Both times are
// required; windows divide a day, so day boundaries select whole windows.
func (l *Ledger) Sum(tenant ident.Tenant, meter string, from, to time.Time) (float64, error) {
	if tenant == "" {
		return 0, fmt.Errorf("%w: sum needs a tenant", ErrInvalid)
	}
	if err := checkMeter(meter); err != nil {
		return 0, err
	}
	if from.IsZero() || to.IsZero() {
		return 0, fmt.Errorf("%w: sum needs both from and to", ErrInvalid)
	}
	if err := checkRange(from, to); err != nil {
		return 0, err
	}
	if err := l.begin(false); err != nil {
		return 0, err
	}
	defer l.end(false)
	var v float64
	err := l.r.QueryRow(`SELECT coalesce(sum(value), 0.0) FROM records
		WHERE tenant = ? AND meter = ? AND window_start >= ? AND window_start < ?`,
		tenant, meter, ceilUnix(from), ceilUnix(to)).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("sum: %w", err)
	}
	return v, nil
}
