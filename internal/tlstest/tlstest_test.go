package tlstest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"testing"
)

func TestUnitIssueVerifies(t *testing.T) {
	ca := NewCA(t)
	certFile, keyFile := ca.Issue(t, "node-a", []net.IP{net.IPv4(127, 0, 0, 1)}, "node-a.test")
	b, err := os.ReadFile(ca.CertFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("CertFile holds no PEM certificate")
	}
	kp := KeyPair(t, certFile, keyFile)
	leaf, err := x509.ParseCertificate(kp.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "node-a.test", KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("verify for %v: %v", usage, err)
		}
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "node-a" {
		t.Fatalf("common name %q", leaf.Subject.CommonName)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	kb, _ := os.ReadFile(keyFile)
	if blk, _ := pem.Decode(kb); blk == nil || blk.Type != "PRIVATE KEY" {
		t.Fatal("key file is not a PKCS#8 PEM key")
	}
	sc, sk := ca.IssueSelfSigned(t, "stranger", nil, "stranger.test")
	stranger, err := x509.ParseCertificate(KeyPair(t, sc, sk).Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stranger.Verify(x509.VerifyOptions{Roots: pool, DNSName: "stranger.test"}); err == nil {
		t.Fatal("a certificate of another CA verifies against this one")
	}
}

// TestUnitConfigsHandshake: a mutual TLS handshake over loopback with the
// helpers' configurations; a client without a certificate is refused
// where the server requires one.
func TestUnitConfigsHandshake(t *testing.T) {
	ca := NewCA(t)
	sc, sk := ca.Issue(t, "server", []net.IP{net.IPv4(127, 0, 0, 1)})
	cc, ck := ca.Issue(t, "client", nil)
	l, err := tls.Listen("tcp", "127.0.0.1:0", ca.ServerConfig(t, sc, sk, tls.RequireAndVerifyClientCert))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	peers := make(chan string, 2)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if err := tc.Handshake(); err != nil {
				peers <- "error"
			} else {
				peers <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
				_, _ = tc.Write([]byte("x"))
			}
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), ca.ClientConfig(t, "127.0.0.1", cc, ck))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if p := <-peers; p != "client" {
		t.Fatalf("server saw %q", p)
	}
	// No client certificate: the server refuses (in TLS 1.3 the client
	// learns it at its first read).
	c, err = tls.Dial("tcp", l.Addr().String(), ca.ClientConfig(t, "127.0.0.1", "", ""))
	if err == nil {
		_, err = io.ReadFull(c, make([]byte, 1))
		c.Close()
	}
	if err == nil {
		t.Fatal("a client without a certificate got through")
	}
	if p := <-peers; p != "error" {
		t.Fatalf("server saw %q", p)
	}
}
