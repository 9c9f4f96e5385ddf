package gateway_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/auth"
	"github.com/sessionbridge/sessionbridge/gateway"
	"github.com/sessionbridge/sessionbridge/httpapi"
	"github.com/sessionbridge/sessionbridge/keys"
	"github.com/sessionbridge/sessionbridge/memory"
)

type countingStore struct {
	sb.Store
	gets atomic.Int32
}

func (s *countingStore) Get(ctx context.Context, id string) (*sb.Session, error) {
	s.gets.Add(1)
	return s.Store.Get(ctx, id)
}

type countingKeyStore struct {
	sb.KeyStore
	gets atomic.Int32
}

func (s *countingKeyStore) GetKey(ctx context.Context, id string) (*sb.APIKey, error) {
	s.gets.Add(1)
	return s.KeyStore.GetKey(ctx, id)
}

type countingJWT struct{ calls atomic.Int32 }

func (v *countingJWT) Verify(ctx context.Context, token string) (*sb.Principal, error) {
	v.calls.Add(1)
	if token != "good.jwt.token" {
		return nil, sb.ErrInvalidToken
	}
	return &sb.Principal{UserID: "carol", Scopes: []string{"ws:connect", "chat.**"}}, nil
}

// TestSocketBehindMiddlewareAuthenticatesOnce mounts the gateway under the
// HTTP middleware, as a library user may, with one shared authenticator:
// the upgrade takes the principal the middleware found instead of reading
// the credential again.
func TestSocketBehindMiddlewareAuthenticatesOnce(t *testing.T) {
	bus := memory.NewBus()
	store := &countingStore{Store: memory.NewStore(bus)}
	keyStore := &countingKeyStore{KeyStore: memory.NewKeyStore(nil)}
	subscribed := &gapSignalBus{Bus: bus}
	tickets := memory.NewTickets()
	mgr, err := sb.NewManager(sb.Backend{NodeID: "test", Store: store, Bus: subscribed, Tickets: tickets})
	if err != nil {
		t.Fatal(err)
	}
	km := &keys.Manager{Store: keyStore}
	verifier := &countingJWT{}
	authn, err := auth.New(auth.Config{Sessions: mgr, Keys: km, JWT: verifier})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Manager: mgr, Auth: authn, SweepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	sessions := &httpapi.Sessions{Manager: mgr, Auth: authn}
	mux := http.NewServeMux()
	mux.Handle("/ws", sessions.Middleware(gw))
	srv := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- gw.Run(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := gw.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		cancel()
		if err := <-ran; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		srv.Close()
	})
	// Past the gap of the first subscription, which makes an upgrade in
	// flight read its session again, every read counted is the upgrade's.
	deadline := time.Now().Add(10 * time.Second)
	for !subscribed.gapped.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the gateway did not subscribe")
		}
		time.Sleep(5 * time.Millisecond)
	}
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	dial := func(h http.Header, query string) (string, int) {
		t.Helper()
		u := wsURL
		if query != "" {
			u += "?" + query
		}
		c, resp, err := websocket.DefaultDialer.Dial(u, h)
		if err != nil {
			if resp == nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return "", resp.StatusCode
		}
		defer c.Close()
		var frame struct {
			Type string `json:"type"`
			Data struct {
				Auth   string `json:"auth"`
				UserID string `json:"user_id"`
			} `json:"data"`
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := c.ReadJSON(&frame); err != nil || frame.Type != "welcome" {
			t.Fatalf("welcome: %+v %v", frame, err)
		}
		return frame.Data.Auth + " " + frame.Data.UserID, http.StatusSwitchingProtocols
	}

	// An API key: one key read, the middleware's.
	key, _, err := km.Create(context.Background(), keys.NewKey{UserID: "svc", Name: "k", Scopes: []string{"**"}})
	if err != nil {
		t.Fatal(err)
	}
	if who, _ := dial(http.Header{"Authorization": {"Bearer " + key}}, ""); who != "apikey svc" {
		t.Fatalf("api key socket: %q", who)
	}
	if n := keyStore.gets.Load(); n != 1 {
		t.Fatalf("%d key reads for one upgrade behind the middleware, want 1", n)
	}
	// A JWT: verified once.
	if who, _ := dial(http.Header{"Authorization": {"Bearer good.jwt.token"}}, ""); who != "jwt carol" {
		t.Fatalf("jwt socket: %q", who)
	}
	if n := verifier.calls.Load(); n != 1 {
		t.Fatalf("JWT verified %d times for one upgrade, want 1", n)
	}
	// A session: the first socket of a session on the node reads it once
	// more, for the events that may have come between the middleware's read
	// and the registration; a further socket of the session reads only
	// what the middleware reads.
	_, tok, err := mgr.Create(context.Background(), sb.NewSession{UserID: "alice"}, sb.Change{})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"X-Session-Token": {tok}}
	conn, _, err := websocket.DefaultDialer.Dial(wsURL, h)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The welcome comes after the first socket's own second read.
	if _, _, err := conn.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	before := store.gets.Load()
	if who, _ := dial(h, ""); who != "session alice" {
		t.Fatalf("session socket: %q", who)
	}
	if n := store.gets.Load() - before; n != 1 {
		t.Fatalf("%d session reads for a second socket behind the middleware, want 1", n)
	}

	// What is the upgrade's own stays its own: the origin of a cookie...
	ck := http.Header{"Cookie": {"sb_session=" + tok}, "Origin": {"https://evil.example"}}
	if _, status := dial(ck, ""); status != http.StatusForbidden {
		t.Fatalf("cookie from a foreign origin behind the middleware: %d", status)
	}
	// ... and a ticket, which the middleware does not look at: one of
	// another session conflicts with the credential beside it.
	_, otherTok, err := mgr.Create(context.Background(), sb.NewSession{UserID: "alice"}, sb.Change{})
	if err != nil {
		t.Fatal(err)
	}
	otherID, _, _ := sb.ParseToken(otherTok)
	ticket, err := tickets.Issue(context.Background(), sb.Ticket{UserID: "alice", SessionID: otherID, Method: sb.AuthSession}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, status := dial(h, "ticket="+url.QueryEscape(ticket)); status != http.StatusUnauthorized {
		t.Fatalf("ticket of another session beside a header token: %d", status)
	}
}

// gapSignalBus reports when its subscriber has handled its first gap.
type gapSignalBus struct {
	sb.Bus
	gapped atomic.Bool
}

func (b *gapSignalBus) Subscribe(ctx context.Context, h sb.EventHandler) error {
	return b.Bus.Subscribe(ctx, gapSignal{EventHandler: h, done: &b.gapped})
}

type gapSignal struct {
	sb.EventHandler
	done *atomic.Bool
}

func (g gapSignal) HandleGap() {
	g.EventHandler.HandleGap()
	g.done.Store(true)
}
