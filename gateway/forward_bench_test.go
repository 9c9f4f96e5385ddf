//go:build unix

package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/forward"
	"github.com/sessionbridge/sessionbridge/memory"
)

// BenchmarkFrameRoundTrip is one client frame and its reply over a real
// socket on loopback, client, gateway and application in one process: served
// by a Handler in the gateway ("handler"), and forwarded to an application's
// HTTP endpoint that verifies the signature ("forwarded"). The difference is
// what forwarding costs a frame, gateway included. cpu-ns/op is the CPU the
// whole process (client, gateway, application) spent per round trip, which
// other load on the machine disturbs less than the time per op.
func BenchmarkFrameRoundTrip(b *testing.B) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil || forward.Verify(forwardSecret, r.Header, body, time.Now(), time.Minute) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"type":"bench.result","data":{"ok":true}}`)
	}))
	defer app.Close()
	fw, err := forward.New(forward.Config{URL: app.URL + "/frames", Secret: forwardSecret})
	if err != nil {
		b.Fatal(err)
	}
	defer fw.Close()
	bus := memory.NewBus()
	mgr := newManager(b, sb.Backend{Store: memory.NewStore(bus), Bus: bus})
	g, err := New(Config{Manager: mgr, PingInterval: time.Hour, Forwarder: fw, ForwardTypes: []string{"bench.forwarded"}})
	if err != nil {
		b.Fatal(err)
	}
	g.Handle("bench.handler", "", func(ctx context.Context, c *Conn, data json.RawMessage) (any, error) {
		return map[string]bool{"ok": true}, nil
	})
	srv := httptest.NewServer(g)
	defer srv.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
	}()
	_, tok, err := mgr.Create(context.Background(), sb.NewSession{UserID: "bench"}, sb.Change{Source: sb.SourceAPI})
	if err != nil {
		b.Fatal(err)
	}
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", bearer(tok))
	if err != nil {
		b.Fatal(err)
	}
	defer ws.Close()
	if _, _, err := ws.ReadMessage(); err != nil { // welcome
		b.Fatal(err)
	}
	for _, typ := range []string{"handler", "forwarded"} {
		frame := []byte(`{"type":"bench.` + typ + `","id":"1","data":{"text":"hello"}}`)
		b.Run(typ, func(b *testing.B) {
			b.ReportAllocs()
			cpu0 := processCPU()
			for b.Loop() {
				if err := ws.WriteMessage(websocket.TextMessage, frame); err != nil {
					b.Fatal(err)
				}
				_, msg, err := ws.ReadMessage()
				if err != nil {
					b.Fatal(err)
				}
				if !strings.Contains(string(msg), `"ok":true`) {
					b.Fatalf("reply %s", msg)
				}
			}
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
