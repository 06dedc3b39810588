package supervisor

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/scoped-io/scoped/fleet"
	"github.com/scoped-io/scoped/internal/tlstest"
)

// TestUnitFleetPeerServerName: with [fleet] peer_server_name the node
// checks a peer's certificate for that name, not the peer's address (nodes
// sharing one certificate with a DNS name); without it, for the address.
func TestUnitFleetPeerServerName(t *testing.T) {
	ca := tlstest.NewCA(t)
	shared, sharedKey := ca.Issue(t, "nodes", nil, "nodes.scoped.test") // no IP SAN
	srvConf := ca.ServerConfig(t, shared, sharedKey, tls.RequireAndVerifyClientCert)
	l, err := tls.Listen("tcp", "127.0.0.1:0", srvConf)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	dial := func(name string) error {
		fc := fleet.Config{TLSCA: ca.CertFile(), TLSCert: shared, TLSKey: sharedKey, PeerServerName: name}
		conf, err := fleetClientTLS(&fc)
		if err != nil {
			t.Fatal(err)
		}
		if conf.ServerName != name {
			t.Errorf("ServerName %q, want %q", conf.ServerName, name)
		}
		c, err := tls.DialWithDialer(&net.Dialer{}, "tcp", l.Addr().String(), conf)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial("nodes.scoped.test"); err != nil {
		t.Errorf("peer_server_name matching the shared certificate: %v", err)
	}
	if err := dial(""); err == nil {
		t.Error("without peer_server_name a certificate without the peer's IP was accepted")
	}
	if err := dial("other.scoped.test"); err == nil {
		t.Error("a certificate without the configured name was accepted")
	}
}
