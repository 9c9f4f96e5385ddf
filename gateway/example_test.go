package gateway_test

import (
	"context"
	"encoding/json"
	"log"
	"net/http"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/gateway"
	"github.com/sessionbridge/sessionbridge/memory"
)

// A gateway on the in-process backend, with one application frame type
// that needs the "chat" scope besides a pattern allowing "chat.send" itself.
// The gateway takes the node's bus, tickets and ID from the Manager.
func Example() {
	mgr, err := sb.NewManager(memory.New())
	if err != nil {
		log.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Manager: mgr})
	if err != nil {
		log.Fatal(err)
	}
	gw.Handle("chat.send", "chat", func(ctx context.Context, c *gateway.Conn, data json.RawMessage) (any, error) {
		var msg struct{ To, Text string }
		if err := json.Unmarshal(data, &msg); err != nil || msg.To == "" {
			return nil, gateway.FrameError(gateway.CodeBadRequest, `want {"to": user, "text": text}`)
		}
		out, _ := json.Marshal(map[string]string{"from": c.Context().UserID, "text": msg.Text})
		return map[string]bool{"sent": true}, gw.SendToUser(ctx, msg.To, out)
	})

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() { _ = mgr.Run(ctx) }() // claim expired sessions and keys
	go func() { _ = gw.Run(ctx) }()  // apply session events to the sockets

	mux := http.NewServeMux()
	mux.Handle("GET /ws", gw)
	srv := &http.Server{Addr: "127.0.0.1:8080", Handler: mux}
	_ = srv // srv.ListenAndServe(); on exit: gw.Shutdown(ctx), srv.Shutdown(ctx)
}
