package fleet

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// DialTimeout bounds connecting to etcd.
const DialTimeout = 5 * time.Second

// reconnect caps the reconnection backoff to etcd (gRPC's default grows
// to two minutes): after a long outage a node would otherwise come back
// after its lease expired, and clients would route around a node that
// serves. The same cap as client.DialFleet's.
var reconnect = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
	MinConnectTimeout: 5 * time.Second,
})

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
		DialOptions:          []grpc.DialOption{reconnect},
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
