package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listen opens a datagram socket in a temp dir, as journald's.
func listen(t *testing.T) (string, *net.UnixConn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "socket")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return path, c
}

// entry is one received journal entry: each field's values.
type entry map[string][]string

func (e entry) get(t *testing.T, name string) string {
	t.Helper()
	if len(e[name]) != 1 {
		t.Fatalf("field %s: %q, want one value (entry %q)", name, e[name], e)
	}
	return e[name][0]
}

// receive reads one datagram (or the memfd it passes) and parses it as
// journald does.
func receive(t *testing.T, c *net.UnixConn) entry {
	t.Helper()
	e, _ := receiveMemfd(t, c)
	return e
}

// receiveMemfd is receive, also reporting whether the entry came in a memfd.
func receiveMemfd(t *testing.T, c *net.UnixConn) (entry, bool) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	b := buf[:n]
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			t.Fatalf("control messages: %v %v", msgs, err)
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			t.Fatalf("rights: %v %v", fds, err)
		}
		f := os.NewFile(uintptr(fds[0]), "memfd")
		defer f.Close()
		seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
		if err != nil || seals&(unix.F_SEAL_WRITE|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW) == 0 {
			t.Fatalf("memfd not sealed: %#x %v", seals, err)
		}
		if n != 0 {
			t.Fatalf("memfd with %d bytes of payload", n)
		}
		var mb bytes.Buffer // journald maps it: the offset is the writer's
		if _, err := mb.ReadFrom(io.NewSectionReader(f, 0, 1<<40)); err != nil {
			t.Fatal(err)
		}
		b = mb.Bytes()
	}
	return parse(t, b), oobn > 0
}

func parse(t *testing.T, b []byte) entry {
	t.Helper()
	e := entry{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			t.Fatalf("unterminated field %q", b)
		}
		line := b[:nl]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			e[string(k)] = append(e[string(k)], string(v))
			b = b[nl+1:]
			continue
		}
		b = b[nl+1:]
		if len(b) < 8 {
			t.Fatalf("binary field %q: no length", line)
		}
		n := binary.LittleEndian.Uint64(b)
		b = b[8:]
		if uint64(len(b)) < n+1 || b[n] != '\n' {
			t.Fatalf("binary field %q: bad length %d", line, n)
		}
		e[string(line)] = append(e[string(line)], string(b[:n]))
		b = b[n+1:]
	}
	return e
}

func TestFields(t *testing.T) {
	path, c := listen(t)
	var fb bytes.Buffer
	log := slog.New(newHandler(path, Options{Level: slog.LevelDebug, Fallback: &fb}))
	ts := time.Date(2026, 12, 7, 4, 30, 0, 123456789, time.UTC)
	log.Info("scope created", "tenant", "acme", "scope", "s1", "took", 1500*time.Millisecond,
		"err", errors.New("boom"), "at", ts, "n", 3, "ok", true, "Weird-key.x", "v w")
	e := receive(t, c)
	for k, want := range map[string]string{
		"PRIORITY":          "6",
		"SYSLOG_IDENTIFIER": "scoped",
		"TENANT":            "acme",
		"SCOPE":             "s1",
		"TOOK":              "1.5s",
		"ERR":               "boom",
		"AT":                "2026-12-07T04:30:00.123456789Z",
		"N":                 "3",
		"OK":                "true",
		"WEIRD_KEY_X":       "v w",
		"MESSAGE":           `scope created tenant=acme scope=s1 took=1.5s err=boom at=2026-12-07T04:30:00.123Z n=3 ok=true Weird-key.x="v w"`,
	} {
		if got := e.get(t, k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if f := e.get(t, "CODE_FUNC"); !strings.HasSuffix(f, "TestFields") {
		t.Errorf("CODE_FUNC = %q", f)
	}
	if f := e.get(t, "CODE_FILE"); !strings.HasSuffix(f, "journal_test.go") {
		t.Errorf("CODE_FILE = %q", f)
	}
	e.get(t, "CODE_LINE")
	if fb.Len() != 0 {
		t.Errorf("fallback written: %q", fb.String())
	}
}

func TestPriority(t *testing.T) {
	path, c := listen(t)
	log := slog.New(newHandler(path, Options{Level: slog.LevelDebug - 4}))
	for _, tc := range []struct {
		level slog.Level
		want  string
	}{
		{slog.LevelDebug - 4, "7"}, {slog.LevelDebug, "7"}, {slog.LevelInfo, "6"},
		{slog.LevelInfo + 2, "6"}, {slog.LevelWarn, "4"}, {slog.LevelError, "3"}, {slog.LevelError + 4, "3"},
	} {
		log.Log(context.Background(), tc.level, "m")
		if got := receive(t, c).get(t, "PRIORITY"); got != tc.want {
			t.Errorf("level %v: PRIORITY=%s, want %s", tc.level, got, tc.want)
		}
	}
}

func TestLevel(t *testing.T) {
	path, c := listen(t)
	log := slog.New(newHandler(path, Options{Level: slog.LevelWarn}))
	log.Info("dropped")
	log.Warn("kept")
	if got := receive(t, c).get(t, "MESSAGE"); got != "kept" {
		t.Errorf("MESSAGE = %q", got)
	}
}

func TestGroupsAndWith(t *testing.T) {
	path, c := listen(t)
	log := slog.New(newHandler(path, Options{}))
	l := log.With("component", "keeper").WithGroup("req").With("id", 7).WithGroup("sub")
	l.Info("m", "a", 1, slog.Group("g", "b", 2, slog.Group("", "c", 3)), slog.Group("empty"))
	e := receive(t, c)
	for k, want := range map[string]string{
		"COMPONENT":         "keeper",
		"REQ_ID":            "7",
		"REQ_SUB_A":         "1",
		"REQ_SUB_G_B":       "2",
		"REQ_SUB_G_C":       "3",
		"MESSAGE":           "m component=keeper req.id=7 req.sub.a=1 req.sub.g.b=2 req.sub.g.c=3",
		"PRIORITY":          "6",
		"SYSLOG_IDENTIFIER": "scoped",
	} {
		if got := e.get(t, k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	// The parent is unchanged.
	log.Info("n", "a", 1)
	e = receive(t, c)
	if e.get(t, "A") != "1" || e["COMPONENT"] != nil || e.get(t, "MESSAGE") != "n a=1" {
		t.Errorf("parent handler changed: %q", e)
	}
}

// A value (a worker's output line, say) with a newline is one binary
// field: it cannot end its field and set PRIORITY, MESSAGE or another.
func TestNewlineCannotInject(t *testing.T) {
	path, c := listen(t)
	log := slog.New(newHandler(path, Options{Level: slog.LevelDebug}))
	evil := "x\nPRIORITY=0\nMESSAGE=owned\nSYSLOG_IDENTIFIER=kernel\n"
	log.Debug("worker output", "line", evil, "tenant", "acme")
	e := receive(t, c)
	if got := e.get(t, "LINE"); got != evil {
		t.Errorf("LINE = %q, want %q", got, evil)
	}
	if got := e.get(t, "PRIORITY"); got != "7" {
		t.Errorf("PRIORITY = %q", got)
	}
	if got := e.get(t, "SYSLOG_IDENTIFIER"); got != "scoped" {
		t.Errorf("SYSLOG_IDENTIFIER = %q", got)
	}
	if got := e.get(t, "MESSAGE"); got != `worker output line="x\nPRIORITY=0\nMESSAGE=owned\nSYSLOG_IDENTIFIER=kernel\n" tenant=acme` {
		t.Errorf("MESSAGE = %q", got)
	}
	// A multi-line message is binary too.
	log.Info("two\nlines")
	if got := receive(t, c).get(t, "MESSAGE"); got != "two\nlines" {
		t.Errorf("MESSAGE = %q", got)
	}
	// An attribute cannot take a field the handler sets.
	log.Info("m", "priority", 0, "message", "x", "code_line", 1)
	e = receive(t, c)
	if e.get(t, "PRIORITY") != "6" || e.get(t, "X_PRIORITY") != "0" || e.get(t, "X_MESSAGE") != "x" || e.get(t, "X_CODE_LINE") != "1" {
		t.Errorf("reserved names: %q", e)
	}
}

// An entry too big for a datagram goes in a sealed memfd.
func TestMemfd(t *testing.T) {
	path, c := listen(t)
	var fb bytes.Buffer
	log := slog.New(newHandler(path, Options{Fallback: &fb}))
	big := strings.Repeat("y", 8<<20) // above any socket's send buffer
	log.Info("big", "v", big)
	e, memfd := receiveMemfd(t, c)
	if !memfd {
		t.Error("a big entry was not sent in a memfd")
	}
	if got := e.get(t, "V"); got != big {
		t.Errorf("V: %d bytes, want %d", len(got), len(big))
	}
	if fb.Len() != 0 {
		t.Errorf("fallback written: %.100q", fb.String())
	}
}

// With no socket, the line goes to the fallback as the text handler's.
func TestFallback(t *testing.T) {
	path, c := listen(t)
	var fb bytes.Buffer
	log := slog.New(newHandler(path, Options{Fallback: &fb})).With("tenant", "acme")
	log.Info("first")
	receive(t, c)
	c.Close()
	os.Remove(path)
	log.Error("second", "err", errors.New("x\ny"))
	got := fb.String()
	if !strings.Contains(got, `level=ERROR msg=second tenant=acme err="x\ny"`) || strings.Count(got, "\n") != 1 {
		t.Errorf("fallback: %q", got)
	}
}

// A socket nobody reads fills up: records then go to the fallback after a
// bounded wait, never blocking the daemon.
func TestFullSocket(t *testing.T) {
	path, _ := listen(t)
	var fb bytes.Buffer
	log := slog.New(newHandler(path, Options{Fallback: &fb}))
	for i := 0; i < 2000 && fb.Len() == 0; i++ {
		log.Info("fill", "i", i, "pad", strings.Repeat("p", 512))
	}
	if !strings.Contains(fb.String(), "msg=fill") {
		t.Errorf("no fallback line once the socket is full")
	}
}

func TestAvailable(t *testing.T) {
	path, _ := listen(t)
	if err := available(path); err != nil {
		t.Error(err)
	}
	if err := available(filepath.Join(t.TempDir(), "none")); !errors.Is(err, ErrNoJournal) {
		t.Errorf("missing socket: %v", err)
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if err := available(f); !errors.Is(err, ErrNoJournal) {
		t.Errorf("plain file: %v", err)
	}
}

func TestFieldName(t *testing.T) {
	for in, want := range map[string]string{
		"tenant":                       "TENANT",
		"error_id":                     "ERROR_ID",
		"req.id":                       "REQ_ID",
		"a-b c":                        "A_B_C",
		"_trusted":                     "X__TRUSTED",
		"9lives":                       "X_9LIVES",
		"":                             "X_",
		"é":                            "X___",
		"priority":                     "X_PRIORITY",
		"Message":                      "X_MESSAGE",
		strings.Repeat("a", 100):       strings.Repeat("A", 64),
		"_" + strings.Repeat("a", 100): "X__" + strings.Repeat("A", 61),
	} {
		if got := FieldName(in); got != want {
			t.Errorf("FieldName(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzFieldName(f *testing.F) {
	for _, s := range []string{"tenant", "_x", "9", "", "req.sub.a", "priority", "ü", strings.Repeat("z", 80)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		n := FieldName(key)
		if len(n) == 0 || len(n) > maxName {
			t.Fatalf("FieldName(%q) = %q: length %d", key, n, len(n))
		}
		if n[0] < 'A' || n[0] > 'Z' {
			t.Fatalf("FieldName(%q) = %q: does not start with a letter", key, n)
		}
		for i := 0; i < len(n); i++ {
			c := n[i]
			if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
				t.Fatalf("FieldName(%q) = %q: byte %q", key, n, c)
			}
		}
		if reserved[n] {
			t.Fatalf("FieldName(%q) = %q: reserved", key, n)
		}
		if FieldName(n) != n {
			t.Fatalf("FieldName(%q) = %q is not a fixed point", key, n)
		}
	})
}

func TestStreamMatches(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	good := strings.Join([]string{u(uint64(st.Dev)), u(uint64(st.Ino))}, ":")
	if !streamMatches(good, fd) {
		t.Errorf("%s does not match its own file", good)
	}
	for _, env := range []string{
		"", ":", good + ":1", u(uint64(st.Dev)) + ":" + u(uint64(st.Ino)+1),
		u(uint64(st.Dev)+1) + ":" + u(uint64(st.Ino)), "x:y", u(uint64(st.Ino)),
	} {
		if streamMatches(env, fd) {
			t.Errorf("JOURNAL_STREAM=%q matches", env)
		}
	}
	if streamMatches(good, 1<<20) {
		t.Errorf("a closed fd matches")
	}
}

func u(n uint64) string { return strconv.FormatUint(n, 10) }
