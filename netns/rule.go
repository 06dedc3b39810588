package netns

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// ErrInvalidRule is an allow-list rule that does not parse or cannot be
// enforced.
var ErrInvalidRule = errors.New("netns: invalid rule")

// maxRanges is how many port ranges a rule, and the union of the rules
// containing a prefix, may have (MAX_RANGES in bpf/policy.c).
const maxRanges = 16

// MaxRuleLen bounds a rule's text. The longest rule in canonical form
// ("255.255.255.255/32:" and maxRanges ranges "65535-65535") has 210 bytes;
// ports with leading zeros could make one of any length, which tenants'
// lists keep as given.
const MaxRuleLen = 256

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

// allPorts is the range of a rule without ports.
var allPorts = PortRange{0, 65535}

// Rule allows a scope to reach the IPv4 addresses of Prefix on Ports (all
// ports if empty) over TCP and UDP, and by any other protocol if Ports is
// empty.
type Rule struct {
	Prefix netip.Prefix // IPv4, masked
	Ports  []PortRange
}

// ParseRule parses ADDR[/BITS][:PORTS], PORTS being a comma-separated list
// of ports (1..65535) and ranges LO-HI: "198.18.0.2", "10.0.0.0/8:443",
// "10.1.2.3:80,443,8000-8100", "0.0.0.0/0:53". The prefix must have no
// bits set past its length.
func ParseRule(s string) (Rule, error) {
	if s == "" {
		return Rule{}, fmt.Errorf("%w: empty", ErrInvalidRule)
	}
	if len(s) > MaxRuleLen {
		return Rule{}, fmt.Errorf("%w: %.40q…: longer than %d bytes", ErrInvalidRule, s, MaxRuleLen)
	}
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") > 1 {
		return Rule{}, fmt.Errorf("%w: %q: only IPv4 destinations are supported", ErrInvalidRule, s)
	}
	addr, ports, hasPorts := strings.Cut(s, ":")
	var r Rule
	var err error
	if strings.Contains(addr, "/") {
		r.Prefix, err = netip.ParsePrefix(addr)
	} else {
		var a netip.Addr
		a, err = netip.ParseAddr(addr)
		r.Prefix = netip.PrefixFrom(a, a.BitLen())
	}
	switch {
	case err != nil:
		return Rule{}, fmt.Errorf("%w: %q: %w", ErrInvalidRule, s, err)
	case !r.Prefix.Addr().Is4():
		return Rule{}, fmt.Errorf("%w: %q: only IPv4 destinations are supported", ErrInvalidRule, s)
	case r.Prefix.Masked() != r.Prefix:
		return Rule{}, fmt.Errorf("%w: %q: address has bits set past /%d (%s?)", ErrInvalidRule, s, r.Prefix.Bits(), r.Prefix.Masked())
	}
	if hasPorts {
		if r.Ports, err = parsePorts(ports); err != nil {
			return Rule{}, fmt.Errorf("%w: %q: %w", ErrInvalidRule, s, err)
		}
	}
	return r, nil
}

// parsePorts parses the PORTS of a rule.
func parsePorts(s string) ([]PortRange, error) {
	if s == "" {
		return nil, errors.New("no port after ':'")
	}
	items := strings.Split(s, ",")
	if len(items) > maxRanges {
		return nil, fmt.Errorf("%d port ranges, at most %d", len(items), maxRanges)
	}
	out := make([]PortRange, 0, len(items))
	for _, it := range items {
		lo, hi, isRange := strings.Cut(it, "-")
		a, err := parsePort(lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = parsePort(hi); err != nil {
				return nil, err
			}
			if b < a {
				return nil, fmt.Errorf("port range %s ends before it starts", it)
			}
		}
		out = append(out, PortRange{a, b})
	}
	return out, nil
}

// parsePort parses a port number, 1..65535, in decimal digits only.
func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, errors.New("empty port")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("port %q is not a number", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not in 1..65535", s)
	}
	return uint16(n), nil
}

// String is the rule as ParseRule reads it.
func (r Rule) String() string {
	var b strings.Builder
	if r.Prefix.IsSingleIP() {
		b.WriteString(r.Prefix.Addr().String())
	} else {
		b.WriteString(r.Prefix.String())
	}
	for i, p := range r.Ports {
		if i == 0 {
			b.WriteByte(':')
		} else {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(p.Lo)))
		if p.Hi != p.Lo {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(int(p.Hi)))
		}
	}
	return b.String()
}

// validate checks what ParseRule guarantees, for rules built otherwise.
func (r Rule) validate() error {
	switch {
	case !r.Prefix.IsValid() || !r.Prefix.Addr().Is4():
		return fmt.Errorf("%w: %v: not an IPv4 prefix", ErrInvalidRule, r.Prefix)
	case r.Prefix.Masked() != r.Prefix:
		return fmt.Errorf("%w: %v: address has bits set past /%d", ErrInvalidRule, r.Prefix, r.Prefix.Bits())
	case len(r.Ports) > maxRanges:
		return fmt.Errorf("%w: %v: %d port ranges, at most %d", ErrInvalidRule, r, len(r.Ports), maxRanges)
	}
	for _, p := range r.Ports {
		if p.Hi < p.Lo {
			return fmt.Errorf("%w: %v: port range %d-%d ends before it starts", ErrInvalidRule, r, p.Lo, p.Hi)
		}
	}
	return nil
}

// ranges are the port ranges r allows: all ports if it names none.
func (r Rule) ranges() []PortRange {
	if len(r.Ports) == 0 {
		return []PortRange{allPorts}
	}
	return r.Ports
}

// allowEntries are the policy_allow entries of a scope's rules: each rule's
// prefix with the union of the port ranges of every rule containing it.
func allowEntries(allow []Rule) (map[netip.Prefix][]PortRange, error) {
	out := make(map[netip.Prefix][]PortRange)
	for _, r := range allow {
		if err := r.validate(); err != nil {
			return nil, err
		}
		out[r.Prefix] = nil
	}
	for pfx := range out {
		var ranges []PortRange
		for _, r := range allow {
			if r.Prefix.Bits() <= pfx.Bits() && r.Prefix.Contains(pfx.Addr()) {
				ranges = append(ranges, r.ranges()...)
			}
		}
		ranges = mergeRanges(ranges)
		if len(ranges) > maxRanges {
			return nil, fmt.Errorf("%w: the rules containing %s allow %d disjoint port ranges, at most %d", ErrInvalidRule, pfx, len(ranges), maxRanges)
		}
		out[pfx] = ranges
	}
	return out, nil
}

// mergeRanges sorts ranges and merges those that overlap or touch.
func mergeRanges(ranges []PortRange) []PortRange {
	ranges = slices.Clone(ranges)
	slices.SortFunc(ranges, func(a, b PortRange) int { return cmp.Compare(a.Lo, b.Lo) })
	var out []PortRange
	for _, r := range ranges {
		if n := len(out); n > 0 && int(r.Lo) <= int(out[n-1].Hi)+1 {
			out[n-1].Hi = max(out[n-1].Hi, r.Hi)
			continue
		}
		out = append(out, r)
	}
	return out
}
