package e2e

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMetrics: invocations and the scope's cgroup figures show up on
// /metrics with tenant and scope labels, and go away with the scope.
func TestMetrics(t *testing.T) {
	addr := freePort(t)
	d := startDaemon(t, options{metrics: addr, poolExtra: `idle_timeout = "1s"`})
	c := d.client()
	deploy(t, c, "acme", "production", "spin", bins.spin)
	if _, err := invoke(c, "acme", "production", "spin", "100"); err != nil {
		t.Fatal(err)
	}
	var text string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		text = scrape(t, addr)
		if strings.Contains(text, `scoped_scope_cpu_seconds_total{`) || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range []string{
		`scoped_invocations_total{`, `result="ok"`, `scope="acme.production"`, `tenant="acme"`,
		`scoped_scope_cpu_seconds_total{`, `scoped_scope_memory_bytes{`, `scoped_cold_starts_total{`, `scoped_scopes `,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// The scope goes idle and is removed: so are its series.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		text = scrape(t, addr)
		if !strings.Contains(text, `scope="acme.production"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the removed scope's series are still exposed")
		}
	}
}

// TestTop: scopectl top -o json shows a busy scope's CPU and invocation
// rate.
func TestTop(t *testing.T) {
	d := startDaemon(t, options{})
	c := d.client()
	deploy(t, c, "acme", "production", "spin", bins.spin)
	if bins.scopectlErr != nil {
		t.Fatal(bins.scopectlErr)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = invoke(c, "acme", "production", "spin", "20")
		}
	}()
	out, err := exec.Command(bins.scopectl, "--socket", d.socket, "top", "--interval", "1s", "-o", "json").CombinedOutput()
	close(stop)
	<-done
	if err != nil {
		t.Fatalf("scopectl top: %v: %s", err, out)
	}
	var rows []struct {
		Scope      string  `json:"scope"`
		CPUPercent float64 `json:"cpu_percent"`
		InvPerSec  float64 `json:"invocations_per_second"`
	}
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("top output %q: %v", out, err)
	}
	if len(rows) != 1 || rows[0].Scope != "acme.production" || rows[0].CPUPercent < 10 || rows[0].InvPerSec < 1 {
		t.Errorf("top rows %+v, want acme.production busy", rows)
	}
}
