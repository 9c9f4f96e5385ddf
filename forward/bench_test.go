package forward_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/forward"
)

// benchApp is a minimal application on loopback: it reads the body, verifies
// the signature as every application must, and answers a small reply.
func benchApp(b *testing.B) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil || forward.Verify(secret, r.Header, body, time.Now(), time.Minute) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"type":"chat.sent","data":{"ok":true}}`)
	}))
	b.Cleanup(srv.Close)
	return srv
}

// BenchmarkForward is the cost of forwarding one frame to a local
// application, without the gateway: encode and sign the request, one HTTP
// round trip over a kept-alive loopback connection (the application's own
// work included: read, verify, answer), and read the answer strictly.
func BenchmarkForward(b *testing.B) {
	srv := benchApp(b)
	f, err := forward.New(forward.Config{URL: srv.URL + "/frames", Secret: secret})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(f.Close)
	req := sampleRequest()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Forward(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkForwardParallel is BenchmarkForward with concurrent callers.
func BenchmarkForwardParallel(b *testing.B) {
	srv := benchApp(b)
	f, err := forward.New(forward.Config{URL: srv.URL + "/frames", Secret: secret})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(f.Close)
	req := sampleRequest()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.Forward(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
