// Command library shows sessionbridge used as a library inside a Go web
// application: cookie sessions for HTTP handlers, a WebSocket endpoint that
// authenticates from the same cookie, an application message type guarded by
// a scope, and messages pushed to every socket of a user.
//
// Run it with `go run ./examples/library` and follow the curl lines printed at
// start. Everything lives in this process (memory.New); with the redis
// package's backend ((*redis.Backend).Node) in its place, the same code runs
// on many nodes.
package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/gateway"
	"github.com/sessionbridge/sessionbridge/httpapi"
	"github.com/sessionbridge/sessionbridge/memory"
)

// passwords stands in for the application's own user store.
var passwords = map[string]string{"alice": "wonderland", "bob": "builder"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, "localhost:8081"); err != nil {
		slog.Error("example stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr string) error {
	// The node: its backend (a store that publishes every change on a bus,
	// tickets, API keys), owned by the Manager.
	mgr, err := sessionbridge.NewManager(memory.New())
	if err != nil {
		return err
	}
	mgr.IdleTimeout = 30 * time.Minute

	// HTTP side: cookie sessions. Insecure only because this example serves
	// plain HTTP; drop it behind TLS.
	sessions := &httpapi.Sessions{Manager: mgr, Insecure: true}

	// WebSocket side: the same sessions, kept in step through the node's bus,
	// which the gateway takes from the Manager.
	gw, err := gateway.New(gateway.Config{Manager: mgr})
	if err != nil {
		return err
	}
	// An application frame: {"type":"chat.send","id":"1","data":{"to":"bob","text":"hi"}}.
	// Every frame type needs a scope that allows it, and this handler asks
	// for "chat" besides. Session connections hold every scope ("**", the
	// default); a JWT or API key needs e.g. "ws:connect chat.* chat". The
	// reply comes back as a "chat.send.result" frame.
	gw.Handle("chat.send", "chat", func(ctx context.Context, c *gateway.Conn, data json.RawMessage) (any, error) {
		var msg struct {
			To   string `json:"to"`
			Text string `json:"text"`
		}
		if err := json.Unmarshal(data, &msg); err != nil || msg.To == "" || msg.Text == "" {
			return nil, gateway.FrameError(gateway.CodeBadRequest, `want {"to": user, "text": text}`)
		}
		out, _ := json.Marshal(map[string]string{"from": c.Principal().UserID, "text": msg.Text})
		// Reaches every socket of the user, on every node.
		if err := gw.SendToUser(ctx, msg.To, out); err != nil {
			return nil, err
		}
		return map[string]string{"status": "sent"}, nil
	})

	mux := http.NewServeMux()
	mux.Handle("GET /ws", gw)
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ User, Password string }
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&in); err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		want, ok := passwords[in.User]
		if !ok || subtle.ConstantTimeCompare([]byte(in.Password), []byte(want)) != 1 {
			http.Error(w, "invalid credentials", http.StatusUnauthorized)
			return
		}
		// A new session ID on every login; the cookie is HttpOnly, SameSite=Lax.
		s, err := sessions.Login(w, r, in.User, json.RawMessage(`{"theme":"light"}`))
		if err != nil {
			http.Error(w, "try again later", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, s.Public())
	})
	mux.Handle("GET /me", sessions.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := httpapi.FromContext(r.Context())
		writeJSON(w, s.Public())
	})))
	mux.Handle("POST /notify", sessions.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Push to every open tab of the signed-in user.
		s, _ := httpapi.FromContext(r.Context())
		if err := gw.SendToUser(r.Context(), s.UserID, json.RawMessage(`{"text":"hello from HTTP"}`)); err != nil {
			http.Error(w, "try again later", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})))
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		// Closes every socket of the session with 4401 session_revoked.
		if err := sessions.Logout(w, r); err != nil {
			http.Error(w, "try again later", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})

	// Sessions first (the handlers read them from the context), then a
	// cross-origin check for every state-changing request.
	handler := http.NewCrossOriginProtection().Handler(sessions.Middleware(mux))
	srv := &http.Server{Addr: addr, Handler: handler, ReadHeaderTimeout: 10 * time.Second}

	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	go mgr.Run(bg) // expires sessions, closing their sockets
	go gw.Run(bg)  // applies session events to the sockets

	fmt.Printf(`listening on http://%[1]s
  curl -c jar -H 'Content-Type: application/json' -d '{"user":"alice","password":"wonderland"}' http://%[1]s/login
  curl -b jar http://%[1]s/me
  websocat -H "Cookie: $(awk '$6=="sb_session"{print $6"="$7}' jar)" -H 'Origin: http://%[1]s' ws://%[1]s/ws
  curl -b jar -X POST http://%[1]s/notify
  curl -b jar -X POST http://%[1]s/logout
`, addr)

	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	drain, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gw.Shutdown(drain) // sockets get 1001 server_shutdown
	if err := srv.Shutdown(drain); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// writeJSON answers with v as JSON. Session data is private to its user, so
// no cache may keep it.
func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}
