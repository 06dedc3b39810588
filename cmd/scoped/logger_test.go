package main

import (
	"errors"
	"log/slog"
	"testing"

	"github.com/scoped-io/scoped/internal/journal"
	"github.com/scoped-io/scoped/supervisor"
)

// TestLogHandler: [log] format picks the handler; "auto" is the journal's
// only where stderr is its stream and its socket is there, "journal"
// refuses to start without the socket.
func TestLogHandler(t *testing.T) {
	up := func() error { return nil }
	down := func() error { return journal.ErrNoJournal }
	for _, tc := range []struct {
		format          string
		stderrIsJournal bool
		available       func() error
		want            string // "text", "json", "journal" or "error"
	}{
		{"auto", false, up, "text"},
		{"auto", true, up, "journal"},
		{"auto", true, down, "text"},
		{"text", true, up, "text"},
		{"json", true, up, "json"},
		{"journal", false, up, "journal"},
		{"journal", true, down, "error"},
	} {
		c := supervisor.DefaultConfig()
		c.Log.Format = tc.format
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		h, err := logHandler(c.Log, tc.stderrIsJournal, tc.available)
		got := "error"
		switch h.(type) {
		case *slog.TextHandler:
			got = "text"
		case *slog.JSONHandler:
			got = "json"
		case *journal.Handler:
			got = "journal"
		}
		if got != tc.want || (got == "error") != (err != nil) {
			t.Errorf("format %q, stderr is journal %v: %s (%v), want %s", tc.format, tc.stderrIsJournal, got, err, tc.want)
		}
		if err != nil && !errors.Is(err, journal.ErrNoJournal) {
			t.Errorf("error %v is not ErrNoJournal", err)
		}
	}
}

// TestDefaultLogFormat: the default is "auto".
func TestDefaultLogFormat(t *testing.T) {
	if f := supervisor.DefaultConfig().Log.Format; f != "auto" {
		t.Errorf("default log.format %q, want auto", f)
	}
}
