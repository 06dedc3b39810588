package netns

import (
	"errors"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseRule(t *testing.T) {
	pfx := netip.MustParsePrefix
	for _, tc := range []struct {
		in   string
		want Rule
		str  string // String(), if not in
	}{
		{in: "198.18.0.2", want: Rule{Prefix: pfx("198.18.0.2/32")}},
		{in: "198.18.0.2/32", want: Rule{Prefix: pfx("198.18.0.2/32")}, str: "198.18.0.2"},
		{in: "10.0.0.0/8", want: Rule{Prefix: pfx("10.0.0.0/8")}},
		{in: "10.0.0.0/8:443", want: Rule{Prefix: pfx("10.0.0.0/8"), Ports: []PortRange{{443, 443}}}},
		{in: "10.1.2.3:80,443,8000-8100", want: Rule{Prefix: pfx("10.1.2.3/32"), Ports: []PortRange{{80, 80}, {443, 443}, {8000, 8100}}}},
		{in: "0.0.0.0/0:53", want: Rule{Prefix: pfx("0.0.0.0/0"), Ports: []PortRange{{53, 53}}}},
		{in: "1.2.3.4:1-65535", want: Rule{Prefix: pfx("1.2.3.4/32"), Ports: []PortRange{{1, 65535}}}},
		{in: "1.2.3.4:7-7", want: Rule{Prefix: pfx("1.2.3.4/32"), Ports: []PortRange{{7, 7}}}, str: "1.2.3.4:7"},
		{in: "1.2.3.4:080", want: Rule{Prefix: pfx("1.2.3.4/32"), Ports: []PortRange{{80, 80}}}, str: "1.2.3.4:80"},
		{in: "1.2.3.4:" + strings.Repeat("1,", 15) + "2", want: Rule{Prefix: pfx("1.2.3.4/32"), Ports: append(repeatRange(PortRange{1, 1}, 15), PortRange{2, 2})}},
	} {
		got, err := ParseRule(tc.in)
		if err != nil {
			t.Errorf("ParseRule(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseRule(%q) = %#v, want %#v", tc.in, got, tc.want)
		}
		str := tc.str
		if str == "" {
			str = tc.in
		}
		if got.String() != str {
			t.Errorf("ParseRule(%q).String() = %q, want %q", tc.in, got.String(), str)
		}
	}
}

func TestParseRuleErrors(t *testing.T) {
	for _, tc := range []struct{ in, why string }{
		{"", "empty"},
		{"::1", "IPv4"},
		{"2001:db8::/32", "IPv4"},
		{"[2001:db8::1]:80", "IPv4"},
		{"::ffff:1.2.3.4", "IPv4"},
		{"1.2.3.4:80:90", "IPv4"},
		{"1.2.3", "ParseAddr"},
		{"1.2.3.4/33", "ParsePrefix"},
		{"1.2.3.4/", "ParsePrefix"},
		{"10.1.2.3/8", "bits set past /8"},
		{"1.2.3.4:", "no port"},
		{"1.2.3.4:0", "not in 1..65535"},
		{"1.2.3.4:65536", "not in 1..65535"},
		{"1.2.3.4:-1", "empty port"},
		{"1.2.3.4:+1", "not a number"},
		{"1.2.3.4:80,", "empty port"},
		{"1.2.3.4:,80", "empty port"},
		{"1.2.3.4:90-80", "ends before"},
		{"1.2.3.4:80-", "empty port"},
		{"1.2.3.4:80-90-100", "not a number"},
		{"1.2.3.4:80 ", "not a number"},
		{" 1.2.3.4", "ParseAddr"},
		{"1.2.3.4x", "ParseAddr"},
		{"1.2.3.4:http", "not a number"},
		{"1.2.3.4:" + strings.Repeat("1,", 16) + "2", "at most 16"},
	} {
		r, err := ParseRule(tc.in)
		if !errors.Is(err, ErrInvalidRule) {
			t.Errorf("ParseRule(%q) = %v, %v; want ErrInvalidRule", tc.in, r, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.why) {
			t.Errorf("ParseRule(%q): %q does not say %q", tc.in, err, tc.why)
		}
	}
}

func TestRuleValidate(t *testing.T) {
	pfx := netip.MustParsePrefix
	for _, r := range []Rule{
		{},
		{Prefix: pfx("2001:db8::/32")},
		{Prefix: pfx("10.1.0.0/8")},
		{Prefix: pfx("10.0.0.0/8"), Ports: []PortRange{{90, 80}}},
		{Prefix: pfx("10.0.0.0/8"), Ports: repeatRange(PortRange{1, 1}, 17)},
	} {
		if err := r.validate(); !errors.Is(err, ErrInvalidRule) {
			t.Errorf("%#v.validate() = %v, want ErrInvalidRule", r, err)
		}
	}
	if err := (Rule{Prefix: pfx("10.0.0.0/8"), Ports: []PortRange{{0, 65535}}}).validate(); err != nil {
		t.Errorf("full range: %v", err)
	}
}

func TestMergeRanges(t *testing.T) {
	got := mergeRanges([]PortRange{{443, 443}, {0, 10}, {11, 20}, {80, 90}, {85, 100}, {65535, 65535}, {65000, 65535}, {5, 6}})
	want := []PortRange{{0, 20}, {80, 100}, {443, 443}, {65000, 65535}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mergeRanges = %v, want %v", got, want)
	}
}

func TestAllowEntries(t *testing.T) {
	rules := mustRules(t, "10.0.0.0/8:443", "10.1.0.0/16:80", "10.1.2.3:22", "10.1.2.3:23", "10.2.0.0/16", "192.0.2.0/24:53")
	got, err := allowEntries(rules)
	if err != nil {
		t.Fatal(err)
	}
	pfx := netip.MustParsePrefix
	want := map[netip.Prefix][]PortRange{
		pfx("10.0.0.0/8"):   {{443, 443}},
		pfx("10.1.0.0/16"):  {{80, 80}, {443, 443}},
		pfx("10.1.2.3/32"):  {{22, 23}, {80, 80}, {443, 443}},
		pfx("10.2.0.0/16"):  {{0, 65535}},
		pfx("192.0.2.0/24"): {{53, 53}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("allowEntries = %v, want %v", got, want)
	}

	// 10 ranges on /8 and 10 others on a /32 inside: 20 at the /32.
	var a, b []string
	for i := range 10 {
		a = append(a, strconv.Itoa(1000+2*i))
		b = append(b, strconv.Itoa(2000+2*i))
	}
	rules = mustRules(t, "10.0.0.0/8:"+strings.Join(a, ","), "10.0.0.1:"+strings.Join(b, ","))
	if _, err := allowEntries(rules); !errors.Is(err, ErrInvalidRule) || !strings.Contains(err.Error(), "10.0.0.1/32") {
		t.Errorf("allowEntries with 20 ranges at 10.0.0.1: %v, want ErrInvalidRule", err)
	}
}

func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"198.18.0.2", "10.0.0.0/8", "10.0.0.0/8:443", "10.1.2.3:80,443,8000-8100",
		"0.0.0.0/0:53", "::1", "1.2.3.4:0", "1.2.3.4:90-80", "1.2.3.4/33", "1.2.3.4:65535"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidRule) {
				t.Fatalf("ParseRule(%q): %v does not wrap ErrInvalidRule", s, err)
			}
			return
		}
		if err := r.validate(); err != nil {
			t.Fatalf("ParseRule(%q) = %v, invalid: %v", s, r, err)
		}
		r2, err := ParseRule(r.String())
		if err != nil {
			t.Fatalf("ParseRule(%q).String() = %q: %v", s, r.String(), err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("ParseRule(%q) = %#v, round trip through %q = %#v", s, r, r.String(), r2)
		}
		if _, err := allowEntries([]Rule{r}); err != nil {
			t.Fatalf("allowEntries(%v): %v", r, err)
		}
	})
}

func repeatRange(r PortRange, n int) []PortRange {
	out := make([]PortRange, n)
	for i := range out {
		out[i] = r
	}
	return out
}

func mustRules(t *testing.T, ss ...string) []Rule {
	t.Helper()
	var out []Rule
	for _, s := range ss {
		r, err := ParseRule(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}
