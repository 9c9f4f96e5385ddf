package auth

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/memory"
)

func FuzzExtract(f *testing.F) {
	tok := sessionToken
	seeds := []struct {
		auth, header, cookie, query string
		upgrade                     bool
	}{
		{"Bearer " + tok, "", "", "", false},
		{"", tok, "", "", false},
		{"", "", DefaultCookieName + "=" + tok, "", false},
		{"", "", "", "ticket=abc", true},
		{"", "", "", "session_token=" + tok, true},
		{"Bearer a.b.c", "", "", "", false},
		{"Bearer sbk_key", "", "", "", false},
		{"Bearer " + testAdminToken, "", "", "", false},
		{"Basic dXNlcjpwYXNz", "", "", "", false},
		{"Bearer " + tok, "other", "", "", false},
		{"", "", DefaultCookieName + "=a; " + DefaultCookieName + "=b", "", false},
		{"", "", DefaultCookieName + "=" + tok, "ticket=x&ticket=y", true},
		{"bearer   " + tok + "  ", "", "", "%zz", true},
		{"", "", "", "", false},
	}
	for _, s := range seeds {
		f.Add(s.auth, s.header, s.cookie, s.query, s.upgrade)
	}
	mgr, err := sb.NewManager(memory.New())
	if err != nil {
		f.Fatal(err)
	}
	a, err := New(Config{Sessions: mgr, AdminToken: testAdminToken, AllowQueryToken: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, auth, header, cookie, query string, upgrade bool) {
		r := &http.Request{Method: http.MethodGet, Header: http.Header{}, URL: &url.URL{Path: "/ws", RawQuery: query}}
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		if header != "" {
			r.Header.Set(HeaderSessionToken, header)
		}
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}
		door := HTTP
		if upgrade {
			door = Upgrade
		}
		c, err := a.Extract(r, door)
		if err != nil {
			if c.Token != "" || c.Ticket != "" || c.Source != SourceNone {
				t.Fatalf("error %v with a credential %+v", err, c)
			}
			return
		}
		if c.Source == SourceNone || c.Kind == 0 || c.Token == "" || len(c.Token) > MaxCredentialLen {
			t.Fatalf("accepted credential %+v", c)
		}
		if c.Kind == KindTicket && c.Token != c.Ticket {
			t.Fatalf("ticket credential %+v", c)
		}
		if (c.Source == SourceQuery || c.Source == SourceTicket || c.Ticket != "") && !upgrade {
			t.Fatal("query credential on the HTTP door")
		}
		if c.Kind == KindAPIKey && !strings.HasPrefix(c.Token, "sbk_") {
			t.Fatalf("api key without prefix: %+v", c)
		}
		if c.Kind == KindAdmin && c.Token != testAdminToken {
			t.Fatalf("admin kind for another token: %+v", c)
		}
		if c.Kind != KindSession && c.Kind != KindTicket && c.Source != SourceBearer {
			t.Fatalf("kind %v from %v", c.Kind, c.Source)
		}
	})
}

func FuzzParseOrigin(f *testing.F) {
	for _, s := range []string{"https://app.example.com", "http://127.0.0.1:8080", "null", "https://a.example.com.evil.com", "https://user@x", "https://x/y", "file://", "https://[::1]:443", "HTTPS://X.ORG:443"} {
		f.Add(s)
	}
	p, err := ParseOrigins([]string{"https://*.example.com", "https://app.example.org"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := parseOrigin(s)
		if err != nil {
			if p.Allows(s, "sb.example") {
				t.Fatalf("malformed %q allowed", s)
			}
			return
		}
		if o.scheme != "http" && o.scheme != "https" || o.host == "" {
			t.Fatalf("parsed %q as %+v", s, o)
		}
		if p.listed(o) {
			if o.scheme != "https" || !(o.host == "app.example.org" || strings.HasSuffix(o.host, ".example.com") && len(o.host) > len(".example.com")) {
				t.Fatalf("%q allowed", s)
			}
		}
	})
}
