package fleet

import (
	"strings"
	"testing"
	"time"
)

func TestUnitConfig(t *testing.T) {
	var off Config
	if off.Enabled() || off.Validate() != nil {
		t.Fatal("an empty [fleet] must be off and valid")
	}
	ok := Config{Endpoints: []string{"http://127.0.0.1:2379"}, Node: "n1", Listen: "10.0.0.1:7443",
		TLSCA: "ca.pem", TLSCert: "n1.pem", TLSKey: "n1-key.pem", Labels: []string{"dedicated-acme"}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if ok.Advertise != "10.0.0.1:7443" || ok.LeaseTTL.Duration != DefaultLeaseTTL || ok.Prefix != "/scoped" {
		t.Errorf("defaults: %+v", ok)
	}
	for name, change := range map[string]func(*Config){
		"endpoint scheme":    func(c *Config) { c.Endpoints = []string{"127.0.0.1:2379"} },
		"node path":          func(c *Config) { c.Node = "../n" },
		"listen":             func(c *Config) { c.Listen = "7443" },
		"wildcard advertise": func(c *Config) { c.Listen, c.Advertise = "0.0.0.0:7443", "" },
		"no tls":             func(c *Config) { c.TLSKey = "" },
		"short lease":        func(c *Config) { c.LeaseTTL.Duration = time.Second },
		"label":              func(c *Config) { c.Labels = []string{"a b"} },
		"prefix":             func(c *Config) { c.Prefix = "scoped" },
		"etcd cert alone":    func(c *Config) { c.EtcdCert = "c.pem" },
		"peer server name":   func(c *Config) { c.PeerServerName = "nodes/../x" },
	} {
		c := Config{Endpoints: []string{"http://127.0.0.1:2379"}, Node: "n1", Listen: "10.0.0.1:7443",
			TLSCA: "ca.pem", TLSCert: "n1.pem", TLSKey: "n1-key.pem"}
		change(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "fleet.") {
			t.Errorf("%s: %v, want an error naming the key", name, err)
		}
	}
}
