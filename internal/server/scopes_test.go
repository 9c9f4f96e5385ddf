package server

import (
	"context"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestSessionScopesConfig: SessionScopes is what sessions without scopes of
// their own hold; scopes set through the admin API win; a default that does
// not compile stops the server from starting.
func TestSessionScopesConfig(t *testing.T) {
	r := start(t, Config{AdminToken: "tok", SessionScopes: []string{"ws:connect", "session.get"}})
	admin := map[string]string{"Authorization": "Bearer tok"}
	for body, want := range map[string]string{
		`{"user_id":"u1"}`: `"scopes":["ws:connect","session.get"]`,
		`{"user_id":"u2","scopes":["ws:connect","chat.*"]}`: `"scopes":["ws:connect","chat.*"]`,
	} {
		resp, out := r.do("POST", "/api/v1/sessions", body, admin)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("create: %d %s", resp.StatusCode, out)
		}
		ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(r.url, "http")+"/ws", http.Header{"X-Session-Token": {between(out, `"token":"`, `"`)}})
		if err != nil {
			t.Fatal(err)
		}
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, welcome, err := ws.ReadMessage()
		ws.Close()
		if err != nil || !strings.Contains(string(welcome), want) {
			t.Errorf("%s: welcome %s (%v), want %s", body, welcome, err, want)
		}
	}

	_, err := New(context.Background(), Config{UsersFile: filepath.Join(t.TempDir(), "users.json"), SessionScopes: []string{"chat.**.x"}}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "SessionScopes") {
		t.Fatalf("New with an invalid default scope: %v", err)
	}
}
