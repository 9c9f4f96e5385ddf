//go:build unix

package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/audit"
	"github.com/sessionbridge/sessionbridge/memory"
	"github.com/sessionbridge/sessionbridge/metrics"
	"github.com/sessionbridge/sessionbridge/usage"
)

// BenchmarkConnectAuth measures one socket's whole life on the connect path,
// as a client sees it: dial with X-Session-Token, read the welcome frame,
// close. The gateway runs as in production (Info-level logs and audit to a
// discarding text handler, metrics on, usage recorded and flushed every
// second to a sink that stores nothing, a listener without TCP keepalives
// as the server's) over the in-memory store and bus.
// Client and server share the process, so ns/op counts both sides; cpu-ns/op
// is the process's CPU time (user+system) per connect, both sides too.
func BenchmarkConnectAuth(b *testing.B) {
	bus := memory.NewBus()
	store := memory.NewStore(bus)
	mgr := newManager(b, sb.Backend{NodeID: "bench", Store: store, Bus: bus})
	logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	rec := usage.NewRecorder(discardSink{}, usage.RecorderOptions{})
	g, err := New(Config{
		Manager: mgr,
		Logger:  logger, Audit: audit.New(logger), Metrics: metrics.New(prometheus.NewRegistry()),
		Usage: rec,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- g.Run(ctx) }()
	recDone := make(chan error, 1)
	go func() { recDone <- rec.Run(ctx) }()
	defer func() { <-recDone }()
	srv := httptest.NewUnstartedServer(g)
	ln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := g.Shutdown(sctx); err != nil {
			b.Errorf("Shutdown: %v", err)
		}
		cancel()
		if err := <-runDone; !errors.Is(err, context.Canceled) {
			b.Errorf("Run returned %v", err)
		}
		srv.Close()
	}()

	// One session per socket, as a load of distinct browsers would have:
	// every connect is the first one of its session on this node.
	const nsess = 4096
	tokens := make([]http.Header, nsess)
	for i := range tokens {
		_, tok, err := mgr.Create(ctx, sb.NewSession{
			UserID: "user-" + strings.Repeat("x", i%7), Data: json.RawMessage(`{"theme":"dark","cart":{"items":3}}`),
			Device: sb.Device{UserAgent: "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"},
		}, sb.Change{Source: sb.SourceHTTP})
		if err != nil {
			b.Fatal(err)
		}
		tokens[i] = http.Header{
			"X-Session-Token": {tok},
			"User-Agent":      {"Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"},
		}
	}
	u := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	d := websocket.Dialer{}
	b.ReportAllocs()
	cpu0 := processCPU()
	i := 0
	for b.Loop() {
		ws, _, err := d.Dial(u, tokens[i%nsess])
		if err != nil {
			b.Fatal(err)
		}
		_, msg, err := ws.ReadMessage()
		if err != nil || !strings.Contains(string(msg), `"welcome"`) {
			b.Fatalf("first frame %q, %v", msg, err)
		}
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		// Wait for the server's close answer, so that every socket ends
		// inside the iteration that opened it.
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				break
			}
		}
		_ = ws.Close()
		i++
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	deadline := time.Now().Add(10 * time.Second)
	for g.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

// processCPU returns the CPU time the process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
