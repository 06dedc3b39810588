package record

import (
	"errors"
	"testing"
)

func TestUnitKeys(t *testing.T) {
	k := Keys{}
	if got := k.Node("n1"); got != "/scoped/nodes/n1" {
		t.Errorf("Node = %q", got)
	}
	if got := (Keys{Prefix: "/x/"}).Extension("acme", "prod", "hook"); got != "/x/extensions/acme/prod/hook" {
		t.Errorf("Extension = %q", got)
	}
	if n, err := k.NodeOf("/scoped/nodes/n1"); err != nil || n != "n1" {
		t.Errorf("NodeOf = %q, %v", n, err)
	}
	for _, bad := range []string{"/scoped/nodes/../x", "/scoped/nodes/a/b", "/other/nodes/n1", "/scoped/nodes/"} {
		if _, err := k.NodeOf(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("NodeOf(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestUnitDecode(t *testing.T) {
	var n Node
	if err := Decode([]byte(`{"name":"n1","addr":"10.0.0.1:7443","labels":["dedicated-acme"],"slots":1024,"cpus":2,"scopes":3,"busy":0.5}`), &n); err != nil {
		t.Fatal(err)
	}
	if !n.HasLabels([]string{"dedicated-acme"}) || n.HasLabels([]string{"gpu"}) || !n.HasLabels(nil) {
		t.Errorf("HasLabels wrong for %v", n.Labels)
	}
	for _, bad := range []string{
		`{"name":"../n","addr":"10.0.0.1:1"}`,
		`{"name":"n","addr":"nohost"}`,
		`{"name":"n","addr":"h:1","labels":["a/b"]}`,
		`{"name":"n","addr":"h:1","scopes":-1}`,
		`not json`,
	} {
		if err := Decode([]byte(bad), &Node{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Decode(%s) = %v, want ErrInvalid", bad, err)
		}
	}
	if err := Decode(make([]byte, MaxRecord+1), &Node{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("oversized record: %v", err)
	}
	var p Policy
	if err := Decode([]byte(`{"isolation":["environment"],"placement":{"dedicated":["dedicated-acme"]}}`), &p); err != nil {
		t.Fatal(err)
	}
	if err := Decode([]byte(`{"isolation":["planet"]}`), &Policy{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad isolation field: %v", err)
	}
}

func FuzzUnitDecodeNode(f *testing.F) {
	f.Add([]byte(`{"name":"n1","addr":"10.0.0.1:7443","slots":1,"cpus":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var n Node
		if err := Decode(b, &n); err == nil {
			if CheckNodeName(n.Name) != nil {
				t.Fatalf("accepted name %q", n.Name)
			}
		}
	})
}
