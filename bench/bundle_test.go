package bench

import "testing"

func TestCheckWhoami(t *testing.T) {
	if err := CheckWhoami([]byte(`{"payload":"hi"}`), "hi"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{`{"payload":"ho"}`, `{"payload":"hi","errors":["x"]}`, `nope`} {
		if CheckWhoami([]byte(bad), "hi") == nil {
			t.Errorf("%s passed", bad)
		}
	}
}
