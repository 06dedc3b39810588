// Package netns owns the scopes' networks: a scope either keeps the
// loopback-only namespace its sandbox makes itself ("none"), or gets a
// namespace from this package ("egress"): a veth into a bridge scoped owns,
// an address from a private subnet, NAT to the host's uplink (nftables over
// netlink), an eBPF allow-list on the scope's cgroup and tc bandwidth caps.
//
// Everything is made in-process with netlink, namespaces are held by file
// descriptor only (a crash frees them), and Open removes what an earlier run
// left behind.
package netns
