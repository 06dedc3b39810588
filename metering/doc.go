// Package metering turns measured usage into billing records: per tenant (and
// per scope, environment and extension where usage can be attributed) and per
// aligned window, a value for each meter, kept in an embedded crash-safe
// ledger (SQLite in WAL mode, dir/ledger.db) from which exporters read sealed
// windows in a strict order. It never reads the kernel: callers hand it
// deltas together with the cursors those deltas were computed from.
//
// The gotcha: the deltas and the cursor they advance are committed in one
// transaction (Commit), so after a kill -9 the cursors say exactly which
// usage is in the ledger — recompute from them and nothing is lost or counted
// twice. A sealed record never changes: usage that arrives for a window that
// is already sealed is charged to the first window that is still open.
package metering
