//go:build unix

package clustertest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/gateway"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
	"github.com/sessionbridge/sessionbridge/redis"
)

// BenchmarkConnectAuthRedis measures the connect path on the Redis store:
// dial with X-Session-Token (a session only in Redis, read uncached the first
// time), read welcome, close. Client, gateway and Redis client share the
// process; redis-server runs apart and is not counted in the CPU profile nor
// in cpu-ns/op, the process's CPU time (user+system) per connect.
func BenchmarkConnectAuthRedis(b *testing.B) {
	for _, tc := range []struct {
		name    string
		noCache bool
	}{{"cache", false}, {"nocache", true}} {
		b.Run(tc.name, func(b *testing.B) { benchConnectRedis(b, tc.noCache) })
	}
}

func benchConnectRedis(b *testing.B, noCache bool) {
	srv := redistest.Start(b)
	ctx, cancel := context.WithCancel(context.Background())
	be, err := redis.New(ctx, redis.Options{URL: srv.URL(), NodeID: "bench", DisableClientCache: noCache})
	if err != nil {
		b.Fatal(err)
	}
	m, err := sb.NewManager(be.Node())
	if err != nil {
		b.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Manager: m})
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(gw)
	var wg sync.WaitGroup
	wg.Go(func() { _ = gw.Run(ctx) })
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = gw.Shutdown(sctx)
		cancel()
		wg.Wait()
		hs.Close()
		be.Close()
	}()

	// A fresh session for every iteration, made before the timer runs: each
	// connect is the first one of its session, as with distinct browsers.
	const batch = 2000
	var headers []http.Header
	var setup time.Duration // CPU spent creating sessions, not counted
	refill := func() {
		b.StopTimer()
		t0 := processCPU()
		defer func() { setup += processCPU() - t0 }()
		headers = headers[:0]
		for range batch {
			_, tok, err := m.Create(ctx, sb.NewSession{UserID: "user-1", Data: json.RawMessage(`{"theme":"dark","cart":{"items":3}}`)}, sb.Change{Source: sb.SourceHTTP})
			if err != nil {
				b.Fatal(err)
			}
			headers = append(headers, http.Header{"X-Session-Token": {tok}})
		}
		b.StartTimer()
	}
	u := "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"
	d := websocket.Dialer{}
	b.ReportAllocs()
	cpu0 := processCPU()
	for b.Loop() {
		if len(headers) == 0 {
			refill()
		}
		h := headers[len(headers)-1]
		headers = headers[:len(headers)-1]
		ws, _, err := d.Dial(u, h)
		if err != nil {
			b.Fatal(err)
		}
		_, msg, err := ws.ReadMessage()
		if err != nil || !strings.Contains(string(msg), `"welcome"`) {
			b.Fatalf("first frame %q, %v", msg, err)
		}
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				break
			}
		}
		_ = ws.Close()
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0-setup)/float64(b.N), "cpu-ns/op")
}

// processCPU returns the CPU time the process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
