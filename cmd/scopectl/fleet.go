package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/scoped-io/scoped/client"
)

// fleetFlags are the global flags of --fleet: where the fleet's etcd is and
// the TLS files for etcd and for the nodes' API.
type fleetFlags struct {
	endpoints, prefix         string
	ca, cert, key, serverName string
	etcdCA, etcdCert, etcdKey string
}

func (f *fleetFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.endpoints, "fleet", f.endpoints, "call a fleet: etcd's client URLs, comma-separated (env SCOPED_FLEET)")
	fs.StringVar(&f.prefix, "fleet-prefix", f.prefix, "the fleet's etcd key prefix (default /scoped)")
	fs.StringVar(&f.ca, "fleet-ca", f.ca, "PEM CA file verifying the nodes' API certificates (default: the system's)")
	fs.StringVar(&f.cert, "fleet-cert", f.cert, "PEM client certificate for the nodes' API")
	fs.StringVar(&f.key, "fleet-key", f.key, "PEM key of --fleet-cert")
	fs.StringVar(&f.serverName, "fleet-server-name", f.serverName, "name checked in every node's certificate (default: the node's address)")
	fs.StringVar(&f.etcdCA, "etcd-ca", f.etcdCA, "PEM CA file for TLS to etcd")
	fs.StringVar(&f.etcdCert, "etcd-cert", f.etcdCert, "PEM client certificate for etcd")
	fs.StringVar(&f.etcdKey, "etcd-key", f.etcdKey, "PEM key of --etcd-cert")
}

// dialFleet connects to the fleet of --fleet. A degraded fleet view (etcd
// unreachable after the first read) is said on stderr.
func (g *globals) dialFleet(ctx context.Context) (conn, error) {
	var eps []string
	for _, e := range strings.Split(g.fleet.endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	if len(eps) == 0 {
		return nil, usagef("--fleet %q: no etcd endpoint", g.fleet.endpoints)
	}
	dctx, cancel := g.callCtx(ctx)
	defer cancel()
	fc, err := client.DialFleet(dctx, client.FleetOptions{
		Endpoints: eps, Prefix: g.fleet.prefix,
		EtcdCA: g.fleet.etcdCA, EtcdCert: g.fleet.etcdCert, EtcdKey: g.fleet.etcdKey,
		CA: g.fleet.ca, Cert: g.fleet.cert, Key: g.fleet.key, ServerName: g.fleet.serverName,
		Token: g.token, MaxMessageSize: maxMessage,
	})
	if err != nil {
		return nil, err
	}
	if err := fc.Degraded(); err != nil {
		fmt.Fprintf(g.stderr, "scopectl: fleet degraded: %v\n", err)
	}
	if g.verbose {
		fmt.Fprintf(g.stderr, "scopectl: fleet of %d live nodes\n", len(fc.Nodes()))
	}
	return fc, nil
}
