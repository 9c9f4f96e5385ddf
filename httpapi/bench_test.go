package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/memory"
)

// BenchmarkMiddlewareCookie measures what the middleware adds to a request
// with a valid session cookie on the memory store: token parsing, the store
// read, the secret check and a throttled (write-free) touch.
func BenchmarkMiddlewareCookie(b *testing.B) {
	mgr, err := sessionbridge.NewManager(memory.New())
	if err != nil {
		b.Fatal(err)
	}
	_, tok, err := mgr.Create(context.Background(), sessionbridge.NewSession{UserID: "alice"}, sessionbridge.Change{})
	if err != nil {
		b.Fatal(err)
	}
	s := &Sessions{Manager: mgr}
	h := s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := FromContext(r.Context()); !ok {
			b.Fatal("no session")
		}
	}))
	r := httptest.NewRequest("GET", "/", nil)
	r.AddCookie(&http.Cookie{Name: DefaultCookieName, Value: tok})
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}

// BenchmarkDecodeStrict measures decoding a typical admin create body.
func BenchmarkDecodeStrict(b *testing.B) {
	body := []byte(`{"user_id":"alice","data":{"plan":"pro","seats":5},"ttl_seconds":3600}`)
	b.ReportAllocs()
	for b.Loop() {
		var v createRequest
		if e := decodeStrict(body, &v); e != nil {
			b.Fatal(e)
		}
	}
}
