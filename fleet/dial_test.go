package fleet

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDialFiles(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{EtcdCA: filepath.Join(dir, "missing.pem")}, "fleet.etcd_ca"},
		{Config{EtcdCA: notPEM}, "no PEM certificate"},
		{Config{EtcdCert: notPEM, EtcdKey: notPEM}, "fleet.etcd_cert"},
	} {
		c.cfg.Endpoints = []string{"https://127.0.0.1:1"}
		if _, err := Dial(&c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Dial(%+v) = %v, want %q", c.cfg, err, c.want)
		}
	}
}

// Dialling an etcd that is down does not fail: calls do (ErrUnavailable at
// a State's Start).
func TestDialDown(t *testing.T) {
	f := newFixture(t)
	f.etcd.Stop()
	c, err := Dial(&Config{Endpoints: f.etcd.Endpoints()})
	if err != nil {
		t.Fatalf("Dial with etcd down: %v", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s := NewState(StateOptions{Client: c, Keys: f.keys, Node: "a", Timeout: time.Second, Log: f.log()})
	if err := s.Start(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Start with etcd down: %v", err)
	}
}
