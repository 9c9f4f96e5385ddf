package loadtest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestHostileNodeAnswers checks that answers no sessionbridge node gives are
// reported as clear errors, without a panic or a goroutine left behind.
func TestHostileNodeAnswers(t *testing.T) {
	up := websocket.Upgrader{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"id":"only-an-id"}`))
	})
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("X-Session-Token") {
		case "limited":
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"error":"rate_limited"}`, http.StatusTooManyRequests)
		case "not-welcome", "garbage", "silent":
			c, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			switch r.Header.Get("X-Session-Token") {
			case "not-welcome":
				_ = c.WriteMessage(websocket.TextMessage, []byte(`{"type":"pong"}`))
			case "garbage":
				_ = c.WriteMessage(websocket.TextMessage, []byte("\x00\xff not json"))
			}
			// Wait for the client to give up and hang up.
			_, _, _ = c.ReadMessage()
		}
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("go_goroutines not-a-number\n"))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx := context.Background()
	hc := newHTTPClient(2, 5*time.Second)
	defer hc.CloseIdleConnections()
	admin := &adminClient{hc: hc, token: "t"}

	if _, err := admin.createSession(ctx, srv.URL, "u", nil, time.Hour); err == nil || !strings.Contains(err.Error(), "without id or token") {
		t.Errorf("create answered without token: %v", err)
	}
	if err := admin.deleteSession(ctx, srv.URL, "x"); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("delete on a node without the route: %v", err)
	}
	if _, err := scrapeMetrics(ctx, hc, srv.URL); err == nil || !strings.Contains(err.Error(), "go_goroutines") {
		t.Errorf("garbage metrics: %v", err)
	}
	ws := newWSDialers(nil, 5*time.Second)
	for tok, want := range map[string]string{
		"limited":     "HTTP 429",
		"unknown":     "HTTP 200", // the mux answers a non-upgrade 200: not a WebSocket
		"not-welcome": `first frame is "pong", not welcome`,
		"garbage":     "not welcome",
		"silent":      "waiting for welcome",
	} {
		c, err := ws.dial(ctx, 0, wsURL(srv.URL), tok, 300*time.Millisecond)
		if err == nil {
			c.Close(time.Second)
			t.Errorf("dial with %q succeeded", tok)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("dial with %q: %v, want it to mention %q", tok, err, want)
		}
	}
}
