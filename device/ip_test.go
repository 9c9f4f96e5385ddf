package device

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func mustPrefixes(t testing.TB, list ...string) []netip.Prefix {
	t.Helper()
	p, err := ParsePrefixes(list)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes([]string{"10.0.0.0/8", " 192.0.2.7 ", "", "2001:db8::/32", "::1", "10.1.2.3/16", "::ffff:172.16.0.0/108"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128", "10.1.0.0/16", "172.16.0.0/12"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("prefix %d = %s, want %s", i, got[i], want[i])
		}
	}
	if got, err := ParsePrefixes(nil); err != nil || len(got) != 0 {
		t.Errorf("ParsePrefixes(nil) = %v, %v", got, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "not-an-ip", "10.0.0", "fe80::1%eth0", "10.0.0.0/8/8", "1.2.3.4:80"} {
		if _, err := ParsePrefixes([]string{"10.0.0.0/8", bad}); err == nil {
			t.Errorf("ParsePrefixes(%q) succeeded, want error", bad)
		} else if !strings.Contains(err.Error(), "1") {
			t.Errorf("error %q does not name the entry", err)
		}
	}
}

func TestClientIP(t *testing.T) {
	trusted := mustPrefixes(t, "10.0.0.0/8", "192.168.1.1", "fd00::/8")
	cases := []struct {
		name    string
		remote  string
		xff     []string
		trusted []netip.Prefix
		want    string
	}{
		{"untrusted peer, no header", "203.0.113.5:5555", nil, trusted, "203.0.113.5"},
		{"untrusted peer ignores header", "203.0.113.5:5555", []string{"198.51.100.1"}, trusted, "203.0.113.5"},
		{"no trusted list ignores header", "10.0.0.1:5555", []string{"198.51.100.1"}, nil, "10.0.0.1"},
		{"trusted peer without header", "10.0.0.1:5555", nil, trusted, "10.0.0.1"},
		{"trusted peer, one hop", "10.0.0.1:5555", []string{"198.51.100.1"}, trusted, "198.51.100.1"},
		{"forged left entries are not reached", "10.0.0.1:5555", []string{"1.1.1.1, 2.2.2.2, 198.51.100.1"}, trusted, "198.51.100.1"},
		{"trusted hops skipped", "10.0.0.1:5555", []string{"1.1.1.1, 198.51.100.1, 192.168.1.1, 10.9.9.9"}, trusted, "198.51.100.1"},
		{"several header lines form one list", "10.0.0.1:5555", []string{"1.1.1.1, 198.51.100.1", "10.2.2.2"}, trusted, "198.51.100.1"},
		{"all trusted returns leftmost", "10.0.0.1:5555", []string{"10.3.3.3, 10.2.2.2"}, trusted, "10.3.3.3"},
		{"malformed entry ends the walk", "10.0.0.1:5555", []string{"198.51.100.1, garbage, 10.2.2.2"}, trusted, "10.2.2.2"},
		{"malformed rightmost returns peer", "10.0.0.1:5555", []string{"198.51.100.1, unknown"}, trusted, "10.0.0.1"},
		{"empty entries skipped", "10.0.0.1:5555", []string{"198.51.100.1,, ,"}, trusted, "198.51.100.1"},
		{"empty header", "10.0.0.1:5555", []string{""}, trusted, "10.0.0.1"},
		{"entry with port", "10.0.0.1:5555", []string{"198.51.100.1:4711"}, trusted, "198.51.100.1"},
		{"ipv6 entry with port", "10.0.0.1:5555", []string{"[2001:db8::7]:4711"}, trusted, "2001:db8::7"},
		{"ipv6 peer and entry", "[fd00::1]:5555", []string{"2001:DB8:0:0::7"}, trusted, "2001:db8::7"},
		{"ipv4-mapped peer is unmapped", "[::ffff:10.0.0.1]:5555", []string{"198.51.100.1"}, trusted, "198.51.100.1"},
		{"ipv4-mapped entry is unmapped", "10.0.0.1:5555", []string{"::ffff:198.51.100.1"}, trusted, "198.51.100.1"},
		{"remote without port", "198.51.100.9", nil, trusted, "198.51.100.9"},
		{"remote not an address", "@", []string{"198.51.100.1"}, trusted, ""},
		{"remote empty", "", nil, trusted, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = c.remote
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := ClientIP(r, c.trusted); got != c.want {
				t.Errorf("ClientIP = %q, want %q", got, c.want)
			}
		})
	}
}

func TestFromRequest(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "10.0.0.1:5555"
	r.Header.Set("X-Forwarded-For", "198.51.100.1")
	r.Header.Set("User-Agent", uaCases[0].ua)
	d := FromRequest(r, mustPrefixes(t, "10.0.0.0/8"))
	if d.UserAgent != uaCases[0].ua || d.Browser != "Chrome 126" || d.OS != "Windows" || d.DeviceType != TypeDesktop || d.IP != "198.51.100.1" {
		t.Errorf("FromRequest = %+v", d)
	}

	r = httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "203.0.113.5:1"
	d = FromRequest(r, nil)
	if d.UserAgent != "" || d.Browser != "" || d.OS != "" || d.DeviceType != TypeUnknown || d.IP != "203.0.113.5" {
		t.Errorf("FromRequest without User-Agent = %+v", d)
	}
}

func TestCleanUserAgent(t *testing.T) {
	long := strings.Repeat("a", MaxUserAgent-1) + "é" + "tail" // "é" straddles the limit
	cases := []struct{ in, want string }{
		{"plain", "plain"},
		{"bad\xffbyte", "bad\uFFFDbyte"},
		{strings.Repeat("x", 10<<10), strings.Repeat("x", MaxUserAgent)},
		{long, strings.Repeat("a", MaxUserAgent-1)},
		{strings.Repeat("\xff", 1000), "\uFFFD"}, // a run of invalid bytes becomes one U+FFFD
		{"ok" + strings.Repeat("\xffé", 300), "ok" + strings.Repeat("\uFFFDé", 102)},
	}
	for _, c := range cases {
		got := CleanUserAgent(c.in)
		if got != c.want {
			t.Errorf("CleanUserAgent(%.30q...) = %.30q... (len %d), want %.30q... (len %d)", c.in, got, len(got), c.want, len(c.want))
		}
		if len(got) > MaxUserAgent {
			t.Errorf("CleanUserAgent result is %d bytes", len(got))
		}
	}
}

func FuzzClientIP(f *testing.F) {
	f.Add("10.0.0.1:5555", "198.51.100.1")
	f.Add("10.0.0.1:5555", "1.1.1.1, 2.2.2.2,10.2.2.2")
	f.Add("[fd00::1]:1", "[2001:db8::7]:4711, garbage")
	f.Add("203.0.113.5:1", "198.51.100.1")
	f.Add("@", ",,,")
	f.Add("[::ffff:10.0.0.1]:1", "::ffff:1.2.3.4%eth0")
	trusted := mustPrefixes(f, "10.0.0.0/8", "fd00::/8")
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := &http.Request{RemoteAddr: remote, Header: http.Header{"X-Forwarded-For": {xff}}}
		got := ClientIP(r, trusted)
		if got == "" {
			if _, ok := parseHostAddr(remote); ok {
				t.Fatalf("ClientIP(%q, %q) = \"\" for a valid peer", remote, xff)
			}
			return
		}
		a, err := netip.ParseAddr(got)
		if err != nil || a.String() != got {
			t.Fatalf("ClientIP(%q, %q) = %q, not a canonical address", remote, xff, got)
		}
		peer, _ := parseHostAddr(remote)
		if !isTrusted(peer, trusted) && got != peer.String() {
			t.Fatalf("ClientIP(%q, %q) = %q: header trusted from untrusted peer", remote, xff, got)
		}
	})
}

func BenchmarkClientIP(b *testing.B) {
	trusted := mustPrefixes(b, "10.0.0.0/8", "192.168.0.0/16")
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "10.0.0.1:5555"
	r.Header.Set("X-Forwarded-For", "1.1.1.1, 198.51.100.1, 192.168.1.1")
	b.ReportAllocs()
	for b.Loop() {
		ClientIP(r, trusted)
	}
}
