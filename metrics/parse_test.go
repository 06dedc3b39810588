package metrics

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	vm "github.com/VictoriaMetrics/metrics"
)

// sample is one parsed line of the text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

func (s sample) String() string {
	keys := slices.Sorted(maps.Keys(s.labels))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, s.labels[k])
	}
	return fmt.Sprintf("%s{%s} %g", s.name, strings.Join(parts, ","), s.value)
}

// exposition is a parsed scrape.
type exposition struct {
	samples []sample
	help    map[string]string
	typ     map[string]string
	order   []string // family of every sample line, in order
}

// parseExposition is a small, strict parser of the Prometheus text format:
// `# HELP`, `# TYPE` and `name{label="value",…} value` lines, with the
// three escapes the format allows in label values.
func parseExposition(t testing.TB, text string) *exposition {
	t.Helper()
	ex := &exposition{help: map[string]string{}, typ: map[string]string{}}
	for n, line := range strings.Split(text, "\n") {
		if line == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# "); ok {
			kind, rest, _ := strings.Cut(rest, " ")
			name, val, _ := strings.Cut(rest, " ")
			switch kind {
			case "HELP":
				if _, dup := ex.help[name]; dup {
					t.Fatalf("line %d: second HELP for %s", n+1, name)
				}
				ex.help[name] = val
			case "TYPE":
				if _, dup := ex.typ[name]; dup {
					t.Fatalf("line %d: second TYPE for %s", n+1, name)
				}
				ex.typ[name] = val
			}
			continue
		}
		s, err := parseLine(line)
		if err != nil {
			t.Fatalf("line %d %q: %v", n+1, line, err)
		}
		// The part before the value must also satisfy VictoriaMetrics.
		if err := vm.ValidateMetric(line[:strings.LastIndexByte(line, ' ')]); err != nil {
			t.Fatalf("line %d %q: %v", n+1, line, err)
		}
		ex.samples = append(ex.samples, s)
		ex.order = append(ex.order, familyName(s.name))
	}
	return ex
}

func familyName(name string) string {
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if i, known := familyIndex[name]; known && families[i].name == base {
				return base
			}
		}
	}
	return name
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if !(c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func parseLine(line string) (sample, error) {
	s := sample{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		return s, fmt.Errorf("no value")
	}
	s.name = line[:i]
	if !isIdent(s.name) {
		return s, fmt.Errorf("bad name %q", s.name)
	}
	rest := line[i:]
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, " \t") // the format allows blanks between labels
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.IndexByte(rest, '=')
			if eq < 0 {
				return s, fmt.Errorf("no = in labels")
			}
			key := rest[:eq]
			if !isIdent(key) {
				return s, fmt.Errorf("bad label name %q", key)
			}
			rest = rest[eq+1:]
			if !strings.HasPrefix(rest, `"`) {
				return s, fmt.Errorf("label %s: no opening quote", key)
			}
			rest = rest[1:]
			var b strings.Builder
			closed := false
			for len(rest) > 0 && !closed {
				c := rest[0]
				rest = rest[1:]
				switch c {
				case '"':
					closed = true
				case '\n':
					return s, fmt.Errorf("raw line feed in label %s", key)
				case '\\':
					if rest == "" {
						return s, fmt.Errorf("dangling backslash")
					}
					switch rest[0] {
					case '\\':
						b.WriteByte('\\')
					case '"':
						b.WriteByte('"')
					case 'n':
						b.WriteByte('\n')
					default:
						return s, fmt.Errorf("invalid escape \\%c", rest[0])
					}
					rest = rest[1:]
				default:
					b.WriteByte(c)
				}
			}
			if !closed {
				return s, fmt.Errorf("label %s: no closing quote", key)
			}
			if _, dup := s.labels[key]; dup {
				return s, fmt.Errorf("label %s twice", key)
			}
			s.labels[key] = b.String()
			if strings.HasPrefix(rest, ",") {
				rest = rest[1:]
			} else if !strings.HasPrefix(rest, "}") {
				return s, fmt.Errorf("after label %s: %q", key, rest)
			}
		}
	}
	if !strings.HasPrefix(rest, " ") {
		return s, fmt.Errorf("no space before value")
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
	if err != nil {
		return s, fmt.Errorf("value: %v", err)
	}
	s.value = v
	return s, nil
}

// scrape GETs the handler of r through httptest and parses the body.
func scrape(t testing.TB, r *Registry) *exposition {
	t.Helper()
	return parseExposition(t, scrapeText(t, r))
}

func scrapeText(t testing.TB, r *Registry) string {
	t.Helper()
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + Path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s: %s", resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("Content-Type %q", ct)
	}
	return string(body)
}

// find returns the samples named name whose labels include want.
func (ex *exposition) find(name string, want map[string]string) []sample {
	var out []sample
	for _, s := range ex.samples {
		if s.name != name {
			continue
		}
		ok := true
		for k, v := range want {
			if s.labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}

// one returns the single sample with exactly these labels.
func (ex *exposition) one(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	var hits []sample
	for _, s := range ex.find(name, labels) {
		if maps.Equal(s.labels, labels) {
			hits = append(hits, s)
		}
	}
	if len(hits) != 1 {
		t.Fatalf("%s%v: %d series, want 1; similar: %v", name, labels, len(hits), ex.find(name, nil))
	}
	return hits[0].value
}

func with(base map[string]string, kv ...string) map[string]string {
	m := maps.Clone(base)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}
