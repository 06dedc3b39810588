package metering

// The ledger's schema. PRAGMA user_version holds the version and the meta
// table repeats it (key schema_version), so that a reader with the sqlite3
// shell sees it too; PRAGMA application_id marks the file as a ledger.
//
// records holds one row per (tenant, meter, window, dimensions): id is the
// RecordID, window_start the window's start in Unix seconds (UTC), window_s
// its length in seconds, seq NULL while the window is open and the export
// order once sealed. cursors holds the opaque cursors Commit stores with
// the records, export_cursors the last seq each exporter has delivered.
//
// meta keys: schema_version, created (Unix seconds), window_s (the window
// of the last Open), sealed_before (Unix seconds: every window that ends
// at or before it is sealed, and later usage stamped before it is charged
// to the window that contains it), last_seq (the last seq given; seqs are
// never reused, even after Prune).

// appID is PRAGMA application_id of a ledger: "SCPM" in ASCII.
const appID = 0x5343504d

// schemaVersion is the version this build writes and reads.
const schemaVersion = 1

// migrations[v] takes a ledger from version v to v+1; migrations[0] creates
// it. They run in the transaction that also sets user_version.
var migrations = []string{
	0: `
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value NOT NULL
);
INSERT INTO meta (key, value) VALUES
	('schema_version', 1),
	('created', CAST(strftime('%s', 'now') AS INTEGER)),
	('window_s', 0),
	('sealed_before', 0),
	('last_seq', 0);

CREATE TABLE records (
	id           TEXT PRIMARY KEY,
	tenant       TEXT NOT NULL,
	meter        TEXT NOT NULL,
	scope        TEXT NOT NULL DEFAULT '',
	environment  TEXT NOT NULL DEFAULT '',
	extension    TEXT NOT NULL DEFAULT '',
	window_start INTEGER NOT NULL,
	window_s     INTEGER NOT NULL CHECK (window_s > 0),
	value        REAL NOT NULL CHECK (value >= 0),
	seq          INTEGER
);
CREATE UNIQUE INDEX records_by_seq ON records (seq) WHERE seq IS NOT NULL;
CREATE INDEX records_open ON records (window_start) WHERE seq IS NULL;
CREATE INDEX records_by_tenant ON records (tenant, meter, window_start);
CREATE INDEX records_by_window ON records (window_start);

CREATE TABLE cursors (
	key     TEXT PRIMARY KEY,
	value   BLOB NOT NULL,
	updated INTEGER NOT NULL
);

CREATE TABLE export_cursors (
	name    TEXT PRIMARY KEY,
	seq     INTEGER NOT NULL CHECK (seq >= 0),
	updated INTEGER NOT NULL
);
`,
}
