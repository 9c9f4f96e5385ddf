package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/forward"
)

var forwardSecret = []byte("a shared secret of at least 32 bytes, for tests")

// appRequest is what the fake application saw of one forwarded frame.
type appRequest struct {
	sigErr error
	body   struct {
		ForwardID    string          `json:"forward_id"`
		Type         string          `json:"type"`
		ID           string          `json:"id"`
		Data         json.RawMessage `json:"data"`
		ConnectionID string          `json:"connection_id"`
		Principal    struct {
			Auth      string   `json:"auth"`
			UserID    string   `json:"user_id"`
			SessionID string   `json:"session_id"`
			KeyID     string   `json:"key_id"`
			Scopes    []string `json:"scopes"`
		} `json:"principal"`
	}
}

// fakeApp is an application behind an HTTP endpoint: it verifies each
// request's signature, records it, and answers by the frame's type.
type fakeApp struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []appRequest
}

func newFakeApp(t *testing.T) *fakeApp {
	t.Helper()
	a := &fakeApp{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		var rec appRequest
		rec.sigErr = forward.Verify(forwardSecret, r.Header, b, time.Now(), time.Minute)
		if err := json.Unmarshal(b, &rec.body); err != nil {
			t.Errorf("app: %v", err)
		}
		a.mu.Lock()
		a.got = append(a.got, rec)
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch rec.body.Type {
		case "chat.send":
			out, _ := json.Marshal(map[string]any{"type": "chat.sent", "data": map[string]any{"echo": rec.body.Data}})
			_, _ = w.Write(out)
		case "chat.join":
			_, _ = io.WriteString(w, `{"error":{"code":"forbidden","message":"this room is closed"}}`)
		case "chat.fail":
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "upstream trace: secret detail")
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeApp) requests() []appRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.got)
}

func newHTTPForwarder(t *testing.T, url string) *forward.HTTP {
	t.Helper()
	f, err := forward.New(forward.Config{URL: url, Secret: forwardSecret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// TestForwardToApplication: a frame of a forwarded type reaches the
// application signed and with the principal, and its answer comes back as
// the reply with the frame's id; a frame the connection's scopes do not allow
// is refused forbidden and never reaches the application.
func TestForwardToApplication(t *testing.T) {
	app := newFakeApp(t)
	fw := newHTTPForwarder(t, app.srv.URL+"/frames")
	e := newEnv(t, func(c *Config) {
		c.Forwarder, c.ForwardTypes = fw, []string{"chat.**"}
	})
	s, tok := e.session("alice")
	c, wel := e.dial(bearer(tok), "")

	c.send("chat.send", "c1", map[string]any{"text": "hi"})
	f := c.read()
	if f.Type != "chat.sent" || f.ID != "c1" || string(f.Data) != `{"echo":{"text":"hi"}}` {
		t.Fatalf("relayed reply %q %q %s", f.Type, f.ID, f.Data)
	}
	got := app.requests()
	if len(got) != 1 {
		t.Fatalf("the application got %d requests", len(got))
	}
	r := got[0]
	if r.sigErr != nil {
		t.Fatalf("signature: %v", r.sigErr)
	}
	b, p := r.body, r.body.Principal
	if b.Type != "chat.send" || b.ID != "c1" || string(b.Data) != `{"text":"hi"}` || b.ConnectionID != wel.ConnectionID || b.ForwardID == "" {
		t.Fatalf("frame at the application %+v", b)
	}
	if p.Auth != "session" || p.UserID != "alice" || p.SessionID != s.ID || p.KeyID != "" || !slices.Equal(p.Scopes, []string{"**"}) {
		t.Fatalf("principal at the application %+v", p)
	}

	// An answer with no content is an ack; an error answer an error frame.
	c.send("chat.leave", "c2", nil)
	if f := c.read(); f.Type != TypeAck || f.ID != "c2" || len(f.Data) != 0 {
		t.Fatalf("204 relayed as %q %q %s", f.Type, f.ID, f.Data)
	}
	c.send("chat.join", "c3", map[string]any{"room": "x"})
	if d := errorOf(t, c.read()); d.Code != CodeForbidden || d.ID != "c3" || d.Message != "this room is closed" {
		t.Fatalf("the application's refusal: %+v", d)
	}
	c.send("chat.fail", "c4", nil)
	if d := errorOf(t, c.read()); d.Code != CodeUnavailable || d.ID != "c4" || strings.Contains(d.Message, "secret") {
		t.Fatalf("the application's failure: %+v", d)
	}
	if n := e.counter("sessionbridge_frames_total", map[string]string{"type": "forwarded", "result": "ok"}); n != 2 { // chat.send, chat.leave
		t.Errorf("frames counted ok: %v", n)
	}

	// A JWT connection whose scopes allow chat.read only.
	e.jwt.add("r.e.ad", sb.Principal{UserID: "bob", Scopes: []string{"ws:connect", "chat.read"}})
	r2, _ := e.dial(bearer("r.e.ad"), "")
	r2.send("chat.send", "x1", map[string]any{"text": "spam"})
	if d := errorOf(t, r2.read()); d.Code != CodeForbidden || d.ID != "x1" || !strings.Contains(d.Message, "chat.send") {
		t.Fatalf("frame outside the scopes: %+v", d)
	}
	r2.send("chat.read", "x2", nil)
	if f := r2.read(); f.Type != TypeAck || f.ID != "x2" {
		t.Fatalf("frame within the scopes: %+v", f)
	}
	for _, r := range app.requests() {
		if r.body.Principal.UserID == "bob" && r.body.Type != "chat.read" {
			t.Fatalf("a refused frame reached the application: %+v", r.body)
		}
	}
	if !strings.Contains(e.logs.String(), "frame_type_not_allowed") {
		t.Error("no authz_fail audit record for the refused frame")
	}
	if n := e.counter("sessionbridge_frames_total", map[string]string{"type": "forwarded", "result": "forbidden"}); n != 2 { // the app's refusal, and the scopes'
		t.Errorf("frames counted forbidden: %v", n)
	}
}

// TestForwardApplicationDown: frames for an application that cannot be
// reached get error unavailable; the socket stays open.
func TestForwardApplicationDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	fw := newHTTPForwarder(t, "http://"+addr+"/frames")
	e := newEnv(t, func(c *Config) { c.Forwarder, c.ForwardTypes = fw, []string{"chat.*"} })
	_, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	for _, id := range []string{"d1", "d2"} {
		c.send("chat.send", id, map[string]any{"text": "hi"})
		if d := errorOf(t, c.read()); d.Code != CodeUnavailable || d.ID != id || d.Message != "the application could not be reached" {
			t.Fatalf("application down: %+v", d)
		}
	}
	c.send(TypePing, "p", nil)
	if f := c.read(); f.Type != TypePong || f.ID != "p" {
		t.Fatalf("after the failures: %+v", f)
	}
	if e.g.Len() != 1 {
		t.Fatal("the socket was closed")
	}
}

// fakeForwarder records what it is asked and, while hold is open, waits for
// it to close (or for the request's context to end) before it answers.
type fakeForwarder struct {
	started  chan forward.Request
	hold     chan struct{}
	canceled atomic.Int32
	returned atomic.Int32
	mu       sync.Mutex
	got      []forward.Request
}

func newFakeForwarder(hold bool) *fakeForwarder {
	f := &fakeForwarder{started: make(chan forward.Request, 100)}
	if hold {
		f.hold = make(chan struct{})
	}
	return f
}

func (f *fakeForwarder) Forward(ctx context.Context, req forward.Request) (forward.Reply, error) {
	defer f.returned.Add(1)
	f.mu.Lock()
	f.got = append(f.got, req)
	f.mu.Unlock()
	f.started <- req
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			f.canceled.Add(1)
			return forward.Reply{}, ctx.Err()
		}
	}
	return forward.Reply{Type: req.Type + ".done", Data: json.RawMessage(`{"id":"` + req.ID + `"}`)}, nil
}

func (f *fakeForwarder) types() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.got {
		out = append(out, r.Type)
	}
	return out
}

// TestForwardOnlyApplicationTypes: built-in types are never forwarded, even
// under "**"; a registered Handler wins over forwarding; types outside the
// patterns are unknown.
func TestForwardOnlyApplicationTypes(t *testing.T) {
	fw := newFakeForwarder(false)
	e := newEnv(t, func(c *Config) { c.Forwarder, c.ForwardTypes = fw, []string{"**", "!admin.**"} })
	e.g.Handle("chat.local", "", func(ctx context.Context, c *Conn, data json.RawMessage) (any, error) {
		return "handled here", nil
	})
	_, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	for _, typ := range []string{TypeWelcome, TypeMessage, TypeError, TypeAck, TypePong, TypeSession, TypeSessionUpdated, TypeSessionExpiring, "admin.delete"} {
		c.send(typ, "u", nil)
		if d := errorOf(t, c.read()); d.Code != CodeUnknownType {
			t.Fatalf("%s: %+v, want unknown_type", typ, d)
		}
	}
	c.send(TypeSessionGet, "g", nil)
	if f := c.read(); f.Type != TypeSession {
		t.Fatalf("session.get: %+v", f)
	}
	c.send("chat.local", "h", nil)
	if f := c.read(); f.Type != "chat.local.result" || string(f.Data) != `"handled here"` {
		t.Fatalf("handled type: %+v", f)
	}
	c.send("game.move", "m", map[string]int{"x": 1})
	if f := c.read(); f.Type != "game.move.done" || f.ID != "m" {
		t.Fatalf("forwarded type: %+v", f)
	}
	if got := fw.types(); !slices.Equal(got, []string{"game.move"}) {
		t.Fatalf("the forwarder got %q, want only game.move", got)
	}
}

// TestForwardDoesNotBlockTheConnection: forwarded frames of a connection are
// in flight together up to the bound, one more is refused rate_limited, and
// the connection keeps being served meanwhile.
func TestForwardDoesNotBlockTheConnection(t *testing.T) {
	fw := newFakeForwarder(true)
	e := newEnv(t, func(c *Config) {
		c.Forwarder, c.ForwardTypes, c.ForwardInFlight = fw, []string{"chat.*"}, 2
	})
	_, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	c.send("chat.a", "a1", nil)
	c.send("chat.a", "a2", nil)
	for range 2 {
		<-fw.started
	}
	c.send("chat.a", "a3", nil)
	if d := errorOf(t, c.read()); d.Code != CodeRateLimited || d.ID != "a3" || !strings.Contains(d.Message, "at most 2") {
		t.Fatalf("over the bound: %+v", d)
	}
	c.send(TypePing, "p", nil)
	if f := c.read(); f.Type != TypePong || f.ID != "p" {
		t.Fatalf("ping while two frames wait for the application: %+v", f)
	}
	close(fw.hold)
	var ids []string
	for range 2 {
		f := c.read()
		if f.Type != "chat.a.done" {
			t.Fatalf("relayed reply %+v", f)
		}
		ids = append(ids, f.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"a1", "a2"}) {
		t.Fatalf("replies for %q", ids)
	}
	// The slots are free again.
	c.send("chat.a", "a4", nil)
	if f := c.read(); f.Type != "chat.a.done" || f.ID != "a4" {
		t.Fatalf("after the bound freed: %+v", f)
	}
}

// TestForwardCanceledOnClose: closing the socket cancels the frames that
// wait for the application, and their goroutines end.
func TestForwardCanceledOnClose(t *testing.T) {
	fw := newFakeForwarder(true)
	e := newEnv(t, func(c *Config) { c.Forwarder, c.ForwardTypes = fw, []string{"chat.*"} })
	_, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	c.send("chat.a", "a1", nil)
	c.send("chat.b", "b1", nil)
	for range 2 {
		<-fw.started
	}
	_ = c.ws.Close()
	waitFor(t, "the forwarded frames canceled", func() bool { return fw.canceled.Load() == 2 && fw.returned.Load() == 2 })
	waitFor(t, "the connection unregistered", func() bool { return e.g.Len() == 0 })
}

// TestForwardRevokedSessionSendsNothing: a frame that waits for the
// application when its session is revoked gets no answer: the socket closes
// 4401 and the request is canceled.
func TestForwardRevokedSessionSendsNothing(t *testing.T) {
	fw := newFakeForwarder(true)
	e := newEnv(t, func(c *Config) { c.Forwarder, c.ForwardTypes = fw, []string{"chat.*"} })
	s, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	c.send("chat.a", "a1", nil)
	<-fw.started
	if _, err := e.mgr.Delete(context.Background(), s.ID, sb.ReasonRevoked, sb.Change{Source: sb.SourceAPI}); err != nil {
		t.Fatal(err)
	}
	c.expectClose(CloseReauthenticate, ReasonSessionRevoked)
	waitFor(t, "the forwarded frame canceled", func() bool { return fw.canceled.Load() == 1 })
}

func TestForwardConfig(t *testing.T) {
	mgr := newManager(t, sb.Backend{Store: &failingStore{}, Bus: &lossyBus{}})
	base := func() Config { return Config{Manager: mgr} }
	bad := map[string]func(*Config){
		"types without forwarder": func(c *Config) { c.ForwardTypes = []string{"chat.*"} },
		"bad pattern":             func(c *Config) { c.Forwarder, c.ForwardTypes = newFakeForwarder(false), []string{"chat.**.x"} },
		"negative bound":          func(c *Config) { c.Forwarder, c.ForwardInFlight = newFakeForwarder(false), -1 },
		"huge bound":              func(c *Config) { c.Forwarder, c.ForwardInFlight = newFakeForwarder(false), 1<<20 },
	}
	for name, tweak := range bad {
		cfg := base()
		tweak(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	cfg := base()
	cfg.Forwarder, cfg.ForwardTypes = newFakeForwarder(false), []string{"chat.**"}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if g.fwd.inFlight != DefaultForwardInFlight {
		t.Fatalf("default bound %d", g.fwd.inFlight)
	}
}

// TestForwardBuiltinsCoverTheProtocol: every frame type of the protocol is
// one forward.Builtin refuses to forward or relay.
func TestForwardBuiltinsCoverTheProtocol(t *testing.T) {
	for _, typ := range []string{TypePing, TypeSessionGet, TypeSessionUpdate, TypeAuthRefresh,
		TypeWelcome, TypePong, TypeSession, TypeAck, TypeSessionUpdated, TypeSessionExpiring, TypeMessage, TypeError} {
		if !forward.Builtin(typ) {
			t.Errorf("forward.Builtin(%q) is false", typ)
		}
	}
	if !errors.Is(&forward.Error{Err: forward.ErrBusy}, forward.ErrBusy) || forward.CodeUnavailable != CodeUnavailable {
		t.Error("the forward package's codes differ from the gateway's")
	}
}
