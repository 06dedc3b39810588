package metering

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/scoped-io/scoped/internal/ident"
)

// Meters, with their units. A value is a float64; the counting meters
// (bytes, invocations, cold starts) only take whole numbers.
const (
	// CPUSeconds: time on a CPU, in seconds.
	CPUSeconds = "cpu_seconds"
	// MemoryGiBSeconds: the integral of memory in use over time, in
	// GiB × seconds (1 GiB held for a minute is 60).
	MemoryGiBSeconds = "memory_gib_seconds"
	// NetBytesIn, NetBytesOut: bytes received and sent, whole numbers.
	NetBytesIn  = "net_bytes_in"
	NetBytesOut = "net_bytes_out"
	// Invocations: calls of an extension, a whole number.
	Invocations = "invocations"
	// InvocationSeconds: wall time of invocations, in seconds.
	InvocationSeconds = "invocation_seconds"
	// ColdStarts: invocations that had to start a worker, a whole number.
	ColdStarts = "cold_starts"
)

// meters maps every known meter to whether it counts (whole numbers only).
var meters = map[string]bool{
	CPUSeconds:        false,
	MemoryGiBSeconds:  false,
	NetBytesIn:        true,
	NetBytesOut:       true,
	Invocations:       true,
	InvocationSeconds: false,
	ColdStarts:        true,
}

// Meters returns the known meters, in a fixed order.
func Meters() []string {
	return []string{CPUSeconds, MemoryGiBSeconds, NetBytesIn, NetBytesOut, Invocations, InvocationSeconds, ColdStarts}
}

// Windows.
const (
	// DefaultWindow is the window Open uses when given 0.
	DefaultWindow = 60 * time.Second
	// MaxWindow is the longest window: a day.
	MaxWindow = 24 * time.Hour
)

// Bounds of the inputs.
const (
	// MaxDeltas is the most deltas one Commit takes.
	MaxDeltas = 100_000
	// MaxCursors is the most cursors one Commit takes.
	MaxCursors = 65_536
	// MaxCursorBytes is the longest cursor value.
	MaxCursorBytes = 64 << 10
	// MaxKeyLen is the longest cursor key or export cursor name.
	MaxKeyLen = 255
	// MaxValue bounds one delta: 2^53, beyond which a float64 no longer
	// holds every whole number.
	MaxValue = 1 << 53
	// MaxBatch is the largest limit Sealed takes.
	MaxBatch = 100_000
)

// minUnix and maxUnix bound the times accepted: the Unix epoch to the end of
// year 9999 UTC.
const (
	minUnix = 0
	maxUnix = 253402300799
)

// Dimensions attribute usage below the tenant. "" means not attributed.
// Scope is a scope key ("tenant.name", see internal/ident.CheckDotted) whose
// first element is the tenant; Environment and Extension are identifiers.
type Dimensions struct {
	Scope, Environment, Extension string
}

// Record is the value of one meter for one tenant, dimensions and window.
type Record struct {
	ID          string // RecordID of the fields below
	Tenant      string
	Meter       string
	Dims        Dimensions
	WindowStart time.Time     // UTC, a multiple of Window since the Unix epoch
	Window      time.Duration // whole seconds
	Value       float64
	// Seq is 0 while the window is open; Seal sets it once, and from then
	// on the record never changes. Seqs are strictly increasing in the
	// order of sealing, so an exporter resumes after the last it sent.
	Seq int64
}

// Delta is usage to add to the record of the window that contains At.
type Delta struct {
	Tenant, Meter string
	Dims          Dimensions
	At            time.Time
	Value         float64
}

// idDomain starts the input of every RecordID, so that no other hash of the
// project can ever equal one.
const idDomain = "scoped.metering.record.v1\x00"

// RecordID is the identifier of the record of a tenant, meter, window and
// dimensions: the same inputs give the same id in every process and every
// version, so a record sent twice is recognised downstream.
//
// It is the first 16 bytes, in lowercase hex (32 characters), of
//
//	SHA-256( "scoped.metering.record.v1" 0x00
//	         str(tenant) str(meter)
//	         i64(windowStart.Unix()) i64(window in whole seconds)
//	         str(scope) str(environment) str(extension) )
//
// where str(s) is the length of s as a 4-byte big-endian unsigned integer
// followed by the bytes of s, and i64 is an 8-byte big-endian two's
// complement integer. Every field is length-prefixed or of fixed size, so
// no two different inputs encode alike. Sub-second parts of windowStart and
// window are dropped; the ledger only makes whole-second, aligned windows.
func RecordID(tenant, meter string, windowStart time.Time, window time.Duration, d Dimensions) string {
	return NodeRecordID("", tenant, meter, windowStart, window, d)
}

// NodeRecordID is RecordID of a record kept by the fleet node named node:
// the node is one more field, str(node), after the extension, so that
// the records of one tenant, meter, window and dimensions on two nodes
// have different ids and exporters (Stripe, OpenMeter) keep both. With
// node empty (a single host) it is RecordID exactly: the field is left
// out.
func NodeRecordID(node, tenant, meter string, windowStart time.Time, window time.Duration, d Dimensions) string {
	sum := sha256.Sum256(idInput(node, tenant, meter, windowStart.Unix(), int64(window/time.Second), d))
	return hex.EncodeToString(sum[:16])
}

// idInput is the encoding RecordID and NodeRecordID hash.
func idInput(node, tenant, meter string, start, window int64, d Dimensions) []byte {
	b := make([]byte, 0, len(idDomain)+6*4+2*8+len(node)+len(tenant)+len(meter)+len(d.Scope)+len(d.Environment)+len(d.Extension))
	b = append(b, idDomain...)
	str := func(s string) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	str(tenant)
	str(meter)
	b = binary.BigEndian.AppendUint64(b, uint64(start))
	b = binary.BigEndian.AppendUint64(b, uint64(window))
	str(d.Scope)
	str(d.Environment)
	str(d.Extension)
	if node != "" {
		str(node)
	}
	return b
}

// alignUnix returns the start, in Unix seconds, of the window of w seconds
// that contains the second t.
func alignUnix(t, w int64) int64 {
	s := t - t%w
	if t%w < 0 {
		s -= w
	}
	return s
}

// checkWindow reports whether w is a window the ledger can use.
func checkWindow(w time.Duration) error {
	switch {
	case w < time.Second || w > MaxWindow:
		return fmt.Errorf("%w: window %v: want 1s to %v", ErrInvalid, w, MaxWindow)
	case w%time.Second != 0:
		return fmt.Errorf("%w: window %v is not a whole number of seconds", ErrInvalid, w)
	case MaxWindow%w != 0:
		return fmt.Errorf("%w: window %v does not divide a day, so windows would not align to days", ErrInvalid, w)
	}
	return nil
}

// checkTime reports whether t is a time the ledger can store; what names it.
func checkTime(what string, t time.Time) error {
	if t.IsZero() {
		return fmt.Errorf("%w: %s is the zero time", ErrInvalid, what)
	}
	if u := t.Unix(); u < minUnix || u > maxUnix {
		return fmt.Errorf("%w: %s %v is outside 1970 to 9999", ErrInvalid, what, t)
	}
	return nil
}

// checkTenant checks the tenant id of a delta: a record the ledger keeps
// and exports must hold a valid id whoever made it. (A query's tenant is an
// ident.Tenant, checked where the request came in.)
func checkTenant(tenant string) error {
	if err := ident.Check("tenant", tenant); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// checkMeter checks a meter name.
func checkMeter(meter string) error {
	if _, ok := meters[meter]; !ok {
		return fmt.Errorf("%w: %w %q (want one of %s)", ErrInvalid, ErrUnknownMeter, meter, strings.Join(Meters(), ", "))
	}
	return nil
}

// checkDims checks the dimensions of usage of tenant.
func checkDims(tenant string, d Dimensions) error {
	if d.Scope != "" {
		if err := ident.CheckDotted("scope", d.Scope); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if t, _, _ := strings.Cut(d.Scope, "."); t != tenant {
			return fmt.Errorf("%w: scope %q is not a scope of tenant %q", ErrInvalid, d.Scope, tenant)
		}
	}
	if d.Environment != "" {
		if err := ident.Check("environment", d.Environment); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if d.Extension != "" {
		if err := ident.Check("extension", d.Extension); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	return nil
}

// Validate reports whether the delta can be committed: a valid tenant,
// a known meter, dimensions of that tenant, a time from 1970 to 9999 and a
// finite value from 0 to MaxValue, whole for the counting meters.
func (d Delta) Validate() error {
	if err := checkTenant(d.Tenant); err != nil {
		return err
	}
	if err := checkMeter(d.Meter); err != nil {
		return err
	}
	if err := checkDims(d.Tenant, d.Dims); err != nil {
		return err
	}
	if err := checkTime("time", d.At); err != nil {
		return err
	}
	v := d.Value
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return fmt.Errorf("%w: %s value %v is not finite", ErrInvalid, d.Meter, v)
	case v < 0:
		return fmt.Errorf("%w: %s value %v is negative", ErrInvalid, d.Meter, v)
	case v > MaxValue:
		return fmt.Errorf("%w: %s value %v is above %d", ErrInvalid, d.Meter, v, int64(MaxValue))
	case meters[d.Meter] && v != math.Trunc(v):
		return fmt.Errorf("%w: %s value %v is not a whole number", ErrInvalid, d.Meter, v)
	}
	return nil
}

// checkKey checks a cursor key or an export cursor name: 1 to MaxKeyLen
// printable ASCII characters, no space. They are chosen by the daemon, not
// by tenants, so they may carry ':' '/' '.' and capitals.
func checkKey(kind, k string) error {
	if k == "" || len(k) > MaxKeyLen {
		return fmt.Errorf("%w: %s is %d bytes long, want 1 to %d", ErrInvalid, kind, len(k), MaxKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%w: %s %q: byte %#x at %d is not printable ASCII", ErrInvalid, kind, k, c, i)
		}
	}
	return nil
}
