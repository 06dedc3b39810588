package fleet

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DialTimeout bounds connecting to etcd.
const DialTimeout = 5 * time.Second

// Dial returns a client of the fleet's etcd (cfg validated and enabled),
// with TLS when cfg names etcd certificate files. It does not wait for
// etcd: calls fail (and the state goes degraded) while it is unreachable.
func Dial(cfg *Config) (*clientv3.Client, error) {
	cc := clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          DialTimeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Logger:               zap.NewNop(), // the fleet components log what matters
	}
	if cfg.EtcdCA != "" || cfg.EtcdCert != "" {
		t := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.EtcdCA != "" {
			pem, err := os.ReadFile(cfg.EtcdCA)
			if err != nil {
				return nil, fmt.Errorf("fleet.etcd_ca: %w", err)
			}
			t.RootCAs = x509.NewCertPool()
			if !t.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("fleet.etcd_ca %s: no PEM certificate", cfg.EtcdCA)
			}
		}
		if cfg.EtcdCert != "" {
			c, err := tls.LoadX509KeyPair(cfg.EtcdCert, cfg.EtcdKey)
			if err != nil {
				return nil, fmt.Errorf("fleet.etcd_cert/etcd_key: %w", err)
			}
			t.Certificates = []tls.Certificate{c}
		}
		cc.TLS = t
	}
	c, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("%w: dial etcd: %w", ErrUnavailable, err)
	}
	return c, nil
}
