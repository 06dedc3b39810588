package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const dashboardPath = "../contrib/grafana/scoped.json"

// queries returns every PromQL string of the dashboard: panel targets'
// expr and the template variables' queries, with where they were found.
func queries(v any, path string, out map[string]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			p := path + "." + k
			if s, ok := x.(string); ok && (k == "expr" || k == "definition" || k == "query" && strings.Contains(s, "(")) {
				out[p] = s
				continue
			}
			queries(x, p, out)
		}
	case []any:
		for i, x := range v {
			queries(x, path+"["+strconv.Itoa(i)+"]", out)
		}
	}
}

var (
	reMetric   = regexp.MustCompile(`\bscoped_[a-zA-Z0-9_]+`)
	reGrouping = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	reMatchers = regexp.MustCompile(`\{([^}]*)\}`)
	reMatcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	reLabelVal = regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)[^,]*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
	reVariable = regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)`)
)

// The dashboard is valid JSON, and every series, label and variable its
// queries use exists in a full exposition of this package.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardPath, err)
	}
	if v, _ := dash["schemaVersion"].(float64); v < 36 {
		t.Errorf("schemaVersion %v", dash["schemaVersion"])
	}

	// A full exposition: every family has series.
	r := New()
	populate(r)
	ex := scrape(t, r)
	labels := map[string]map[string]bool{} // series name → its label names
	for _, s := range ex.samples {
		if labels[s.name] == nil {
			labels[s.name] = map[string]bool{}
		}
		for k := range s.labels {
			labels[s.name][k] = true
		}
	}

	// Template variables.
	vars := map[string]bool{"__rate_interval": true, "__interval": true, "__range": true}
	templ, _ := dash["templating"].(map[string]any)
	list, _ := templ["list"].([]any)
	for _, v := range list {
		if m, ok := v.(map[string]any); ok {
			vars[m["name"].(string)] = true
			if m["type"] == "datasource" && m["query"] != "prometheus" {
				t.Errorf("datasource variable %v is not of type prometheus", m["name"])
			}
		}
	}
	for _, want := range []string{"DS_PROMETHEUS", "tenant", "scope"} {
		if !vars[want] {
			t.Errorf("no template variable %s", want)
		}
	}

	qs := map[string]string{}
	queries(dash, "", qs)
	if len(qs) < 20 {
		t.Fatalf("only %d queries found", len(qs))
	}
	used := map[string]bool{}
	for where, q := range qs {
		names := reMetric.FindAllString(q, -1)
		if len(names) == 0 {
			t.Errorf("%s: %q uses no scoped_ series", where, q)
		}
		known := map[string]bool{"le": true}
		for _, n := range names {
			if labels[n] == nil {
				t.Errorf("%s: %s is not exposed (query %q)", where, n, q)
				continue
			}
			used[familyName(n)] = true
			for l := range labels[n] {
				known[l] = true
			}
		}
		for _, m := range reGrouping.FindAllStringSubmatch(q, -1) {
			for l := range strings.SplitSeq(m[1], ",") {
				if l = strings.TrimSpace(l); l != "" && !known[l] {
					t.Errorf("%s: groups by %s, a label none of %v has", where, l, names)
				}
			}
		}
		for _, m := range reMatchers.FindAllStringSubmatch(q, -1) {
			for _, mm := range reMatcher.FindAllStringSubmatch(m[1], -1) {
				if !known[mm[1]] {
					t.Errorf("%s: matches on %s, a label none of %v has", where, mm[1], names)
				}
			}
		}
		for _, m := range reLabelVal.FindAllStringSubmatch(q, -1) {
			if !labels[m[1]][m[2]] {
				t.Errorf("%s: label_values(%s, %s): no such label", where, m[1], m[2])
			}
		}
		for _, m := range reVariable.FindAllStringSubmatch(q, -1) {
			if !vars[m[1]] {
				t.Errorf("%s: variable $%s is not defined", where, m[1])
			}
		}
	}
	// Every family is on the dashboard somewhere.
	for _, f := range families {
		if !used[f.name] {
			t.Errorf("the dashboard does not show %s", f.name)
		}
	}

	// Panels: unique ids, a grid position, and the datasource variable.
	ids := map[float64]bool{}
	panels, _ := dash["panels"].([]any)
	for _, p := range panels {
		m := p.(map[string]any)
		id, _ := m["id"].(float64)
		if ids[id] {
			t.Errorf("panel id %v twice", id)
		}
		ids[id] = true
		if _, ok := m["gridPos"].(map[string]any); !ok {
			t.Errorf("panel %v has no gridPos", m["title"])
		}
		if m["type"] == "row" {
			continue
		}
		ds, _ := m["datasource"].(map[string]any)
		if ds["uid"] != "${DS_PROMETHEUS}" || ds["type"] != "prometheus" {
			t.Errorf("panel %v: datasource %v", m["title"], ds)
		}
		targets, _ := m["targets"].([]any)
		if len(targets) == 0 {
			t.Errorf("panel %v has no targets", m["title"])
		}
	}
}
