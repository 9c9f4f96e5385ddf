package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/forward"
)

const testForwardSecret = "0123456789abcdef0123456789abcdef"

func TestNewRefusesBadForwardConfig(t *testing.T) {
	users := filepath.Join(t.TempDir(), "users.json")
	for name, fc := range map[string]ForwardConfig{
		"no secret":          {URL: "http://127.0.0.1:9/frames", Types: []string{"chat.*"}},
		"short secret":       {URL: "http://127.0.0.1:9/frames", Secret: testForwardSecret[1:], Types: []string{"chat.*"}},
		"secret newline":     {URL: "http://127.0.0.1:9/frames", Secret: testForwardSecret + "\n", Types: []string{"chat.*"}},
		"not http":           {URL: "ws://127.0.0.1:9/frames", Secret: testForwardSecret, Types: []string{"chat.*"}},
		"no types":           {URL: "http://127.0.0.1:9/frames", Secret: testForwardSecret},
		"bad type":           {URL: "http://127.0.0.1:9/frames", Secret: testForwardSecret, Types: []string{"chat*"}},
		"types without url":  {Secret: testForwardSecret, Types: []string{"chat.*"}},
		"secret without url": {Secret: testForwardSecret},
		"negative in-flight": {URL: "http://127.0.0.1:9/frames", Secret: testForwardSecret, Types: []string{"chat.*"}, InFlight: -1},
	} {
		s, err := New(context.Background(), Config{UsersFile: users, Forward: fc}, slog.New(slog.DiscardHandler))
		if err == nil {
			s.Close()
			t.Errorf("%s: New accepted %+v", name, fc)
			continue
		}
		if strings.Contains(err.Error(), testForwardSecret[4:]) {
			t.Errorf("%s: the error quotes the secret: %v", name, err)
		}
	}
}

// TestForwardThroughServer: with forwarding configured, a socket's frame of
// an application type reaches the application's endpoint signed, and the
// answer comes back.
func TestForwardThroughServer(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := forward.Verify([]byte(testForwardSecret), r.Header, b, time.Now(), time.Minute); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var req forward.Request
		if err := json.Unmarshal(b, &req); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		seen = append(seen, req.Type+" "+req.Principal.UserID)
		mu.Unlock()
		_, _ = io.WriteString(w, `{"type":"game.moved","data":{"ok":true}}`)
	}))
	defer app.Close()
	r := start(t, Config{AdminToken: "tok", Forward: ForwardConfig{
		URL: app.URL + "/frames", Secret: testForwardSecret, Types: []string{"game.*"},
	}})
	resp, body := r.do("POST", "/api/v1/sessions", `{"user_id":"u1"}`, map[string]string{"Authorization": "Bearer tok"})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	ws := r.dial(http.Header{"X-Session-Token": {between(body, `"token":"`, `"`)}})
	if err := ws.WriteMessage(1, []byte(`{"type":"game.move","id":"m1","data":{"x":1}}`)); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := ws.ReadMessage()
	if err != nil || string(msg) != `{"type":"game.moved","id":"m1","data":{"ok":true}}` {
		t.Fatalf("relayed reply %s %v", msg, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != "game.move u1" {
		t.Fatalf("the application saw %q", seen)
	}
}
