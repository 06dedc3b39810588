package confval

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func TestDurationTOML(t *testing.T) {
	var v struct {
		D Duration `toml:"d"`
	}
	if _, err := toml.Decode(`d = "1m30s"`, &v); err != nil || v.D.Duration != 90*time.Second {
		t.Fatalf("decode = %v, %v", v.D, err)
	}
	// A bare integer has no unit: refused, not read as nanoseconds.
	if _, err := toml.Decode(`d = 5`, &v); err == nil {
		t.Fatalf("decode of an integer = %v, want an error", v.D)
	}
	b, err := Duration{Duration: 1500 * time.Millisecond}.MarshalText()
	if err != nil || string(b) != "1.5s" {
		t.Fatalf("MarshalText = %q, %v", b, err)
	}
}

func TestDurationJSON(t *testing.T) {
	b, err := json.Marshal(Duration{Duration: time.Second})
	if err != nil || string(b) != "1000000000" {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	for in, want := range map[string]time.Duration{`1000000000`: time.Second, `"2s"`: 2 * time.Second} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err != nil || d.Duration != want {
			t.Errorf("Unmarshal(%s) = %v, %v", in, d, err)
		}
	}
	var d Duration
	if err := json.Unmarshal([]byte(`"soon"`), &d); err == nil {
		t.Error("Unmarshal of a bad string: no error")
	}
}
