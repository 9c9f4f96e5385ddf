//go:build unix

package forward_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
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
// cpu-ns/op is the CPU the process (forwarder and application) spent per
// frame, which other load on the machine disturbs less than the time per op.
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
	cpu0 := processCPU()
	for b.Loop() {
		if _, err := f.Forward(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
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
	cpu0 := processCPU()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.Forward(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// BenchmarkPlainPost is the floor under BenchmarkForward: a plain POST of a
// body of the same size to a loopback server that reads it and answers the
// same reply, with a default http.Client, nothing signed or checked.
func BenchmarkPlainPost(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"type":"chat.sent","data":{"ok":true}}`)
	}))
	b.Cleanup(srv.Close)
	c := &http.Client{Transport: &http.Transport{}}
	b.Cleanup(c.CloseIdleConnections)
	body := bytes.Repeat([]byte("x"), 250)
	b.ReportAllocs()
	cpu0 := processCPU()
	for b.Loop() {
		resp, err := c.Post(srv.URL, "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// processCPU returns the CPU time the process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
