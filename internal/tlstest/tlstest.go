// Package tlstest makes a test certificate authority and certificates
// (ECDSA P-256) in a test's temporary directory, for the fleet's TLS API
// and mutual TLS between nodes. For tests only: keys are written unencrypted.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a test certificate authority.
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	dir     string
	file    string
	pool    *x509.CertPool
	serial  atomic.Int64
	issued  atomic.Int64
	expires time.Time
}

// NewCA makes a CA valid for a day, its certificate written to a PEM file
// in a new temporary directory of t.
func NewCA(t testing.TB) *CA {
	t.Helper()
	ca, err := NewCAIn(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// NewCAIn is NewCA outside a test (a benchmark's): the CA's files and the
// certificates it issues go in dir, which the caller made and removes.
func NewCAIn(dir string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tlstest: CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "scoped test CA", Organization: []string{"scoped tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("tlstest: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("tlstest: CA certificate: %w", err)
	}
	ca := &CA{cert: cert, key: key, dir: dir, pool: x509.NewCertPool(), expires: tmpl.NotAfter}
	ca.pool.AddCert(cert)
	ca.serial.Store(1)
	ca.file = filepath.Join(ca.dir, "ca.pem")
	return ca, writePEM(ca.file, "CERTIFICATE", der, 0o644)
}

// CertFile is the PEM file of the CA's certificate (tls_ca).
func (ca *CA) CertFile() string { return ca.file }

// Pool is a pool holding the CA's certificate.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// Certificate is the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Issue makes a certificate for name (its common name) with the IP
// addresses and DNS names as subject alternative names, good for both a
// server and a client (fleet nodes are both), and writes it and its key as
// PEM files; it returns their paths.
func (ca *CA) Issue(t testing.TB, name string, ips []net.IP, dnsNames ...string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, err := ca.IssueFiles(name, ips, dnsNames...)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// IssueFiles is Issue outside a test.
func (ca *CA) IssueFiles(name string, ips []net.IP, dnsNames ...string) (certFile, keyFile string, err error) {
	return ca.issue(name, ips, dnsNames, ca.cert, ca.key)
}

func (ca *CA) issue(name string, ips []net.IP, dnsNames []string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("tlstest: key of %s: %w", name, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial.Add(1)),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"scoped tests"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     ca.expires,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  ips,
		DNSNames:     dnsNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return "", "", fmt.Errorf("tlstest: certificate of %s: %w", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("tlstest: key of %s: %w", name, err)
	}
	n := ca.issued.Add(1)
	base := filepath.Join(ca.dir, "cert-"+big.NewInt(n).String())
	certFile, keyFile = base+".pem", base+"-key.pem"
	if err := errors.Join(writePEM(certFile, "CERTIFICATE", der, 0o644), writePEM(keyFile, "PRIVATE KEY", keyDER, 0o600)); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// IssueSelfSigned makes a certificate for name that no CA signed (a
// stranger's), written as Issue writes its certificates.
func (ca *CA) IssueSelfSigned(t testing.TB, name string, ips []net.IP, dnsNames ...string) (certFile, keyFile string) {
	t.Helper()
	other := NewCA(t)
	certFile, keyFile, err := ca.issue(name, ips, dnsNames, other.cert, other.key)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// KeyPair loads a certificate and key written by Issue.
func KeyPair(t testing.TB, certFile, keyFile string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("tlstest: %v", err)
	}
	return c
}

// ServerConfig is a TLS 1.3 server configuration presenting the
// certificate and verifying client certificates against the CA when a
// client presents one (clientAuth decides whether it must).
func (ca *CA) ServerConfig(t testing.TB, certFile, keyFile string, clientAuth tls.ClientAuthType) *tls.Config {
	t.Helper()
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{KeyPair(t, certFile, keyFile)},
		ClientCAs:    ca.pool,
		ClientAuth:   clientAuth,
	}
}

// ClientConfig is a TLS 1.3 client configuration trusting the CA, with the
// certificate when certFile is not empty, for serverName.
func (ca *CA) ClientConfig(t testing.TB, serverName, certFile, keyFile string) *tls.Config {
	t.Helper()
	c := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.pool, ServerName: serverName}
	if certFile != "" {
		c.Certificates = []tls.Certificate{KeyPair(t, certFile, keyFile)}
	}
	return c
}

func writePEM(path, kind string, der []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), mode); err != nil {
		return fmt.Errorf("tlstest: %w", err)
	}
	return nil
}
