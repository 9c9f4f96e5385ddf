package gateway

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func FuzzExtractCredentials(f *testing.F) {
	tok := "0aAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA"
	seeds := []struct {
		auth, header, cookie, query string
		allowQuery                  bool
	}{
		{"Bearer " + tok, "", "", "", false},
		{"", tok, "", "", false},
		{"", "", CookieName + "=" + tok, "", false},
		{"", "", "", "ticket=abc", false},
		{"", "", "", "session_token=" + tok, true},
		{"Bearer a.b.c", "", "", "", false},
		{"Bearer sbk_key", "", "", "", false},
		{"Basic dXNlcjpwYXNz", "", "", "", false},
		{"Bearer " + tok, "other", "", "", false},
		{"", "", CookieName + "=a; " + CookieName + "=b", "", false},
		{"", "", CookieName + "=" + tok, "ticket=x&ticket=y", false},
		{"bearer   " + tok + "  ", "", "", "%zz", true},
		{"", "", "", "", false},
	}
	for _, s := range seeds {
		f.Add(s.auth, s.header, s.cookie, s.query, s.allowQuery)
	}
	f.Fuzz(func(t *testing.T, auth, header, cookie, query string, allowQuery bool) {
		r := &http.Request{Method: http.MethodGet, Header: http.Header{}, URL: &url.URL{Path: "/ws", RawQuery: query}}
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		if header != "" {
			r.Header.Set("X-Session-Token", header)
		}
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}
		c, err := extractCredentials(r, allowQuery, DefaultAPIKeyPrefix)
		if err != nil {
			if c != (credential{}) {
				t.Fatalf("error %v with a credential %+v", err, c)
			}
			return
		}
		if c.source == srcNone || c.kind == 0 || c.token == "" || len(c.token) > maxCredentialLen {
			t.Fatalf("accepted credential %+v", c)
		}
		if c.kind == kindTicket && c.token != c.ticket {
			t.Fatalf("ticket credential %+v", c)
		}
		if c.source == srcQuery && !allowQuery {
			t.Fatal("query token accepted while disabled")
		}
		if c.kind == kindAPIKey && !strings.HasPrefix(c.token, DefaultAPIKeyPrefix) {
			t.Fatalf("api key without prefix: %+v", c)
		}
	})
}

func FuzzParseOrigin(f *testing.F) {
	for _, s := range []string{"https://app.example.com", "http://127.0.0.1:8080", "null", "https://a.example.com.evil.com", "https://user@x", "https://x/y", "file://", "https://[::1]:443", "HTTPS://X.ORG:443"} {
		f.Add(s)
	}
	p, err := parseOrigins([]string{"https://*.example.com", "https://app.example.org"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := parseOrigin(s)
		if err != nil {
			return
		}
		if o.scheme != "http" && o.scheme != "https" || o.host == "" {
			t.Fatalf("parsed %q as %+v", s, o)
		}
		if p.allows(o) {
			if o.scheme != "https" || !(o.host == "app.example.org" || strings.HasSuffix(o.host, ".example.com") && len(o.host) > len(".example.com")) {
				t.Fatalf("%q allowed", s)
			}
		}
	})
}

func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"ping","id":"1"}`,
		`{"type":"session.update","id":"u","data":{"data":{"a":1}}}`,
		`{"type":"auth.refresh","data":{"token":"a.b.c"}}`,
		`{"type":""}`, `{}`, `[]`, `null`, `{"type":1}`, `{"type":"x","data":null}`,
		`{"type":"x","id":"` + strings.Repeat("i", 200) + `"}`, "\xff\xfe", `{"type":"a","type":"b"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeFrame(b)
		if err != nil {
			if len(fr.ID) > maxFrameIDLen {
				t.Fatalf("error frame echoes a %d-byte id", len(fr.ID))
			}
			return
		}
		if fr.Type == "" || len(fr.ID) > maxFrameIDLen {
			t.Fatalf("accepted %+v", fr)
		}
		if len(fr.Data) > 0 && !json.Valid(fr.Data) {
			t.Fatalf("invalid data %q", fr.Data)
		}
		out, err := encodeFrame(fr.Type, fr.ID, fr.Data)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, err := decodeFrame(out)
		if err != nil || again.Type != fr.Type || again.ID != fr.ID {
			t.Fatalf("round trip %q -> %+v, %v", out, again, err)
		}
	})
}
