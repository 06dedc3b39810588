#!/bin/sh
# sockjack: a hostile go-runtime worker (tests only). Instead of serving
# go-plugin it makes its socket's name a symlink to the host path in the
# bundle's file "target" and announces that name, so that a daemon that
# follows it connects to a host socket in the worker's stead.
set -eu
ln -sf "$(cat /ext/target)" "$PLUGIN_UNIX_SOCKET_DIR/s"
# core protocol | app protocol (plugins.Handshake) | network | address | protocol
echo "1|1|unix|$PLUGIN_UNIX_SOCKET_DIR/s|grpc"
exec sleep 3600
