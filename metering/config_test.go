package metering

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// [metering] decodes into Config; Validate reads each exporter's token
// file once (and again on the next Validate, a reload).
func TestConfigTOMLAndTokenFile(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(tok, []byte("sk_one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := `enabled = true
window = "60s"
flush = "10s"
retention = "2160h"
[[export]]
name = "om"
format = "cloudevents"
url = "http://127.0.0.1:1/e"
source = "scoped://h"
token_file = "` + tok + `"
interval = "1m"
`
	var c Config
	md, err := toml.Decode(doc, &c)
	if err != nil || len(md.Undecoded()) > 0 {
		t.Fatalf("decode: %v, undecoded %v", err, md.Undecoded())
	}
	if c.Window.Duration != time.Minute || len(c.Exports) != 1 || c.Exports[0].Interval.Duration != time.Minute {
		t.Fatalf("decoded %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Exports[0].Token = "also"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "token and token_file are exclusive") {
		t.Fatalf("token and token_file: %v", err)
	}
	c.Exports[0].Token, c.Exports[0].TokenFile = "", filepath.Join(t.TempDir(), "missing")
	if err := c.Validate(); err == nil {
		t.Fatal("a missing token file was accepted")
	}
	if _, err := toml.Decode("[[export]]\nname = \"x\"\ninterval = 5\n", &Config{}); err == nil {
		t.Error("an interval without a unit was accepted")
	}
}
