package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	sb "github.com/sessionbridge/sessionbridge"
)

func TestBuiltinFrames(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")

	c.send("ping", "p1", nil)
	if f := c.read(); f.Type != TypePong || f.ID != "p1" {
		t.Fatalf("ping: %+v", f)
	}

	c.send("session.get", "g1", nil)
	f := c.read()
	var sd sessionData
	if f.Type != TypeSession || f.ID != "g1" || json.Unmarshal(f.Data, &sd) != nil || sd.Session.ID != s.ID || string(sd.Session.Data) != `{"theme":"dark"}` {
		t.Fatalf("session.get: %+v %s", f, f.Data)
	}

	c.sendRaw([]byte(`{"type":`))
	if d := errorOf(t, c.read()); d.Code != CodeBadRequest {
		t.Fatalf("malformed: %+v", d)
	}
	c.sendRaw([]byte(`{"id":"x1"}`))
	if f := c.read(); errorOf(t, f).Code != CodeBadRequest || f.ID != "x1" {
		t.Fatalf("missing type: %+v", f)
	}
	c.send("no.such.type", "u1", nil)
	if f := c.read(); errorOf(t, f).Code != CodeUnknownType || f.ID != "u1" || errorOf(t, f).ID != "u1" {
		t.Fatalf("unknown type: %+v %s", f, f.Data)
	}
	if err := c.ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if d := errorOf(t, c.read()); d.Code != CodeBadRequest {
		t.Fatalf("binary: %+v", d)
	}
	c.send("session.update", "bad", map[string]any{"data": []int{1}})
	if d := errorOf(t, c.read()); d.Code != CodeBadRequest {
		t.Fatalf("non-object patch: %+v", d)
	}
	c.send("auth.refresh", "r", map[string]any{"token": "x"})
	if d := errorOf(t, c.read()); d.Code != CodeBadRequest {
		t.Fatalf("auth.refresh on a session connection: %+v", d)
	}
	// The connection survived all of it.
	c.send("ping", "p2", nil)
	if f := c.read(); f.Type != TypePong || f.ID != "p2" {
		t.Fatalf("ping after errors: %+v", f)
	}
}

func TestOversizedFrame(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ReadLimit = 1024 })
	_, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	c.sendRaw([]byte(`{"type":"ping","id":"` + strings.Repeat("x", 2048) + `"}`))
	_, err := c.tryRead()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != CloseTooBig {
		t.Fatalf("got %v, want close 1009", err)
	}
	waitFor(t, "unregister", func() bool { return e.g.Len() == 0 })
}

func TestSessionUpdateFromSocket(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	a, _ := e.dial(bearer(tok), "")
	b, _ := e.dial(bearer(tok), "")
	_, otherTok := e.session("alice")
	other, _ := e.dial(bearer(otherTok), "")

	a.send("session.update", "u1", map[string]any{"data": map[string]any{"cart": 3, "theme": nil}})
	f := a.read()
	var ack ackData
	if f.Type != TypeAck || f.ID != "u1" || json.Unmarshal(f.Data, &ack) != nil || ack.Version != 2 {
		t.Fatalf("ack: %+v %s", f, f.Data)
	}
	got, err := e.mgr.Get(context.Background(), s.ID)
	if err != nil || string(got.Data) != `{"cart":3}` || got.Version != 2 {
		t.Fatalf("store has %s v%d, %v", got.Data, got.Version, err)
	}
	f = b.read()
	var up sessionUpdatedData
	if f.Type != TypeSessionUpdated || json.Unmarshal(f.Data, &up) != nil || string(up.Session.Data) != `{"cart":3}` || up.Session.Version != 2 || up.Source != sb.SourceWebSocket {
		t.Fatalf("other socket got %+v %s", f, f.Data)
	}
	// The originating socket gets no session.updated for its own change, and
	// a socket of another session gets nothing: the next frames are pongs.
	for _, c := range []*client{a, other} {
		c.send("ping", "after", nil)
		if f := c.read(); f.Type != TypePong {
			t.Fatalf("unexpected frame %+v %s", f, f.Data)
		}
	}
	// A conditional update with a stale version is refused.
	a.send("session.update", "u2", map[string]any{"data": map[string]any{"x": 1}, "version": 1})
	if d := errorOf(t, a.read()); d.Code != CodeBadRequest || !strings.Contains(d.Message, "version") {
		t.Fatalf("stale version: %+v", d)
	}
}

func TestSessionUpdateFromHTTP(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	a, _ := e.dial(bearer(tok), "")
	b, _ := e.dial(bearer(tok), "")
	if _, err := e.mgr.Update(context.Background(), s.ID, json.RawMessage(`{"lang":"fr"}`), 0, sb.Change{Source: sb.SourceHTTP}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{a, b} {
		f := c.read()
		var up sessionUpdatedData
		if f.Type != TypeSessionUpdated || json.Unmarshal(f.Data, &up) != nil || string(up.Session.Data) != `{"lang":"fr","theme":"dark"}` || up.Source != sb.SourceHTTP || up.Session.Version != 2 {
			t.Fatalf("got %+v %s", f, f.Data)
		}
	}
	a.send("session.get", "", nil)
	var sd sessionData
	if f := a.read(); json.Unmarshal(f.Data, &sd) != nil || sd.Session.Version != 2 {
		t.Fatalf("session.get after update: %s", f.Data)
	}
}

func TestUpdateGapRereadsStore(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	ctx := context.Background()
	e.bus.dropIf(func(ev sb.Event) bool { return ev.Version == 2 })
	if _, err := e.mgr.Update(ctx, s.ID, json.RawMessage(`{"a":1}`), 0, sb.Change{Source: sb.SourceHTTP}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.mgr.Update(ctx, s.ID, json.RawMessage(`{"b":2}`), 0, sb.Change{Source: sb.SourceHTTP}); err != nil {
		t.Fatal(err)
	}
	f := c.readType(TypeSessionUpdated)
	var up sessionUpdatedData
	if json.Unmarshal(f.Data, &up) != nil || up.Session.Version != 3 || string(up.Session.Data) != `{"a":1,"b":2,"theme":"dark"}` {
		t.Fatalf("after a lost event: %s", f.Data)
	}
}

func TestDeleteClosesOnlyThatSession(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	s1, tok1 := e.session("alice")
	_, tok2 := e.session("alice")
	_, tok3 := e.session("bob")
	a1, _ := e.dial(bearer(tok1), "")
	a1b, _ := e.dial(bearer(tok1), "")
	a2, _ := e.dial(bearer(tok2), "")
	b, _ := e.dial(bearer(tok3), "")

	if _, err := e.mgr.Delete(ctx, s1.ID, sb.ReasonLogout, sb.Change{Source: sb.SourceHTTP}); err != nil {
		t.Fatal(err)
	}
	a1.expectClose(CloseReauthenticate, ReasonSessionRevoked)
	a1b.expectClose(CloseReauthenticate, ReasonSessionRevoked)
	waitFor(t, "two connections left", func() bool { return e.g.Len() == 2 })

	if _, err := e.mgr.DeleteUser(ctx, "alice", "", sb.ReasonRevoked, sb.Change{Source: sb.SourceAPI}); err != nil {
		t.Fatal(err)
	}
	a2.expectClose(CloseReauthenticate, ReasonSessionRevoked)
	waitFor(t, "one connection left", func() bool { return e.g.Len() == 1 })
	b.send("ping", "", nil)
	if f := b.read(); f.Type != TypePong {
		t.Fatalf("bob's socket: %+v", f)
	}
}

func TestRotateClosesOldSession(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	if _, _, err := e.mgr.Rotate(context.Background(), s.ID, sb.Change{Source: sb.SourceHTTP}); err != nil {
		t.Fatal(err)
	}
	c.expectClose(CloseReauthenticate, ReasonSessionRevoked)
}

func TestExpiredEventCloses(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ExpiryWarning = -1 })
	ctx := context.Background()
	s, tok, err := e.mgr.Create(ctx, sb.NewSession{UserID: "alice", TTL: 10 * time.Minute}, sb.Change{})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := e.dial(bearer(tok), "")
	// Move the store's clock past the deadline without firing the gateway's
	// timer (as if another node claimed the expiry first).
	e.clock.mu.Lock()
	e.clock.now = e.clock.now.Add(11 * time.Minute)
	e.clock.mu.Unlock()
	if list, err := e.mgr.ClaimExpired(ctx, 10); err != nil || len(list) != 1 || list[0].ID != s.ID {
		t.Fatalf("claim: %v %v", list, err)
	}
	c.expectClose(CloseReauthenticate, ReasonSessionExpired)
}

func TestExpiryWarningThenClose(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ExpiryWarning = time.Minute })
	s, tok := e.session("alice") // idle timeout 30 minutes
	c, w := e.dial(bearer(tok), "")
	if w.ExpiresAt == nil || !w.ExpiresAt.Equal(s.Deadline()) {
		t.Fatalf("welcome expires_at %v, want %v", w.ExpiresAt, s.Deadline())
	}
	e.clock.Advance(28 * time.Minute)
	c.send("ping", "still-nothing", nil) // keepalive: no touch
	if f := c.read(); f.Type != TypePong {
		t.Fatalf("before the warning: %+v", f)
	}
	e.clock.Advance(time.Minute + time.Second) // 29m01s: inside the warning lead
	f := c.read()
	var ex expiringData
	if f.Type != TypeSessionExpiring || json.Unmarshal(f.Data, &ex) != nil || !ex.ExpiresAt.Equal(s.Deadline()) {
		t.Fatalf("want session.expiring, got %+v %s", f, f.Data)
	}
	e.clock.Advance(time.Minute)
	c.expectClose(CloseReauthenticate, ReasonSessionExpired)
}

func TestActivityExtendsSession(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	e.clock.Advance(20 * time.Minute)
	c.send("session.get", "g", nil) // activity: touches the session
	c.readType(TypeSession)
	got, err := e.mgr.Get(context.Background(), s.ID)
	if err != nil || !got.ExpiresAt.Equal(e.clock.Now().Add(30*time.Minute)) {
		t.Fatalf("after activity: %v %v", got, err)
	}
	// The old deadline passes without a close; the new one closes.
	e.clock.Advance(15 * time.Minute)
	c.send("ping", "p", nil)
	if f := c.readType(TypePong); f.ID != "p" {
		t.Fatal(f)
	}
	e.clock.Advance(15 * time.Minute)
	c.expectClose(CloseReauthenticate, ReasonSessionExpired)
}

func TestTimerRereadsStoreWhenExtendedElsewhere(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ExpiryWarning = -1 })
	s, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	e.bus.dropSession(s.ID) // the touch event is lost
	e.clock.Advance(20 * time.Minute)
	if _, err := e.mgr.Touch(context.Background(), s, sb.Change{Source: sb.SourceHTTP}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(11 * time.Minute) // past the old deadline: re-read, still alive
	c.send("ping", "p", nil)
	if f := c.readType(TypePong); f.ID != "p" {
		t.Fatal(f)
	}
	e.clock.Advance(20 * time.Minute)
	c.expectClose(CloseReauthenticate, ReasonSessionExpired)
}

func TestTimerFailsClosedWhenStoreDown(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ExpiryWarning = -1 })
	_, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	e.store.down.Store(true)
	e.clock.Advance(31 * time.Minute)
	c.expectClose(CloseReauthenticate, ReasonSessionExpired)
}

func TestJWTConnections(t *testing.T) {
	e := newEnv(t, nil)
	now := e.clock.Now()
	e.jwt.add("a.b.c", sb.Principal{UserID: "bob", Scopes: []string{"ws:connect", "session.*", "auth.refresh"}, ExpiresAt: now.Add(10 * time.Minute)})
	e.jwt.add("a.b.d", sb.Principal{UserID: "bob", Scopes: []string{"ws:connect", "session.*", "auth.refresh", "write"}, ExpiresAt: now.Add(30 * time.Minute)})
	e.jwt.add("a.b.e", sb.Principal{UserID: "mallory", Scopes: []string{"**"}, ExpiresAt: now.Add(time.Hour)})

	c, w := e.dial(bearer("a.b.c"), "")
	if w.Auth != sb.AuthJWT || w.Session != nil || w.ExpiresAt == nil || !w.ExpiresAt.Equal(now.Add(10*time.Minute)) {
		t.Fatalf("welcome %+v", w)
	}
	c.send("session.get", "g", nil)
	if d := errorOf(t, c.read()); d.Code != CodeBadRequest {
		t.Fatalf("session.get without session: %+v", d)
	}
	c.send("auth.refresh", "r1", map[string]any{"token": "a.b.e"})
	if d := errorOf(t, c.read()); d.Code != CodeForbidden {
		t.Fatalf("refresh with another subject: %+v", d)
	}
	c.send("auth.refresh", "r2", map[string]any{"token": "bogus"})
	if d := errorOf(t, c.read()); d.Code != CodeForbidden {
		t.Fatalf("refresh with a bad token: %+v", d)
	}
	c.send("auth.refresh", "r3", map[string]any{})
	if d := errorOf(t, c.read()); d.Code != CodeBadRequest {
		t.Fatalf("refresh without token: %+v", d)
	}
	c.send("auth.refresh", "r4", map[string]any{"token": "a.b.d"})
	// The new token's scopes are pushed as they take effect, before the ack.
	if f := c.read(); f.Type != TypeScopesUpdated || !strings.Contains(string(f.Data), `"write"`) {
		t.Fatalf("scopes.updated after refresh: %+v %s", f, f.Data)
	}
	f := c.read()
	var ack ackData
	if f.Type != TypeAck || f.ID != "r4" || json.Unmarshal(f.Data, &ack) != nil || ack.ExpiresAt == nil || !ack.ExpiresAt.Equal(now.Add(30*time.Minute)) {
		t.Fatalf("refresh: %+v %s", f, f.Data)
	}
	if p := e.g.reg.conn(w.ConnectionID).Principal(); len(p.Scopes) != 4 {
		t.Fatalf("scopes after refresh %v", p.Scopes)
	}
	e.clock.Advance(15 * time.Minute) // past the first token's exp: still open
	c.send("ping", "p", nil)
	if f := c.read(); f.Type != TypePong {
		t.Fatalf("after the old exp: %+v", f)
	}
	e.clock.Advance(15 * time.Minute)
	c.expectClose(CloseReauthenticate, ReasonTokenExpired)
}

func TestJWTWithoutRefreshClosesAtExp(t *testing.T) {
	e := newEnv(t, nil)
	e.jwt.add("a.b.c", sb.Principal{UserID: "bob", Scopes: []string{"ws:connect"}, ExpiresAt: e.clock.Now().Add(time.Minute)})
	c, _ := e.dial(bearer("a.b.c"), "")
	e.clock.Advance(time.Minute)
	c.expectClose(CloseReauthenticate, ReasonTokenExpired)
}

func TestJWTBoundToSessionIsRevoked(t *testing.T) {
	e := newEnv(t, nil)
	s, _ := e.session("alice")
	e.jwt.add("a.b.c", sb.Principal{UserID: "alice", SessionID: s.ID, Scopes: []string{"ws:connect", "session.get"}, ExpiresAt: e.clock.Now().Add(time.Hour)})
	c, w := e.dial(bearer("a.b.c"), "")
	if w.Session == nil || w.Session.ID != s.ID {
		t.Fatalf("welcome %+v", w)
	}
	c.send("session.get", "g", nil)
	if f := c.read(); f.Type != TypeSession {
		t.Fatalf("session.get on a sid-bound JWT: %+v", f)
	}
	if _, err := e.mgr.Delete(context.Background(), s.ID, sb.ReasonRevoked, sb.Change{}); err != nil {
		t.Fatal(err)
	}
	c.expectClose(CloseReauthenticate, ReasonSessionRevoked)
}

func TestAPIKeyConnection(t *testing.T) {
	e := newEnv(t, nil)
	key, _ := e.key("svc", 0, "ws:connect", "session.update", "publish")
	c, w := e.dial(bearer(key), "")
	if w.Auth != sb.AuthAPIKey || w.ExpiresAt != nil || w.Session != nil {
		t.Fatalf("welcome %+v", w)
	}
	c.send("session.update", "u", map[string]any{"data": map[string]any{"a": 1}})
	if d := errorOf(t, c.read()); d.Code != CodeBadRequest {
		t.Fatalf("session.update without session: %+v", d)
	}
}

func TestCustomHandlerScopes(t *testing.T) {
	e := newEnv(t, nil)
	e.g.Handle("chat.send", "chat:write", func(ctx context.Context, c *Conn, data json.RawMessage) (any, error) {
		cc := c.Context()
		return map[string]any{"echo": data, "user": cc.UserID, "conn": cc.Device.ConnectionID, "proto": cc.Protocol}, nil
	})
	e.g.Handle("fail", "", func(ctx context.Context, c *Conn, data json.RawMessage) (any, error) {
		if string(data) == `"limit"` {
			return nil, FrameError(CodeRateLimited, "slow down")
		}
		return nil, errors.New("boom: secret detail")
	})
	// The type itself must be allowed, and the handler's scope held too.
	e.jwt.add("r.o.x", sb.Principal{UserID: "reader", Scopes: []string{"ws:connect", "chat.*"}})
	e.jwt.add("n.t.x", sb.Principal{UserID: "notype", Scopes: []string{"ws:connect", "chat:write"}})
	e.jwt.add("w.r.x", sb.Principal{UserID: "writer", Scopes: []string{"ws:connect", "chat:write", "chat.*", "fail"}})

	r, _ := e.dial(bearer("r.o.x"), "")
	r.send("chat.send", "c1", "hi")
	if d := errorOf(t, r.read()); d.Code != CodeForbidden || d.ID != "c1" || !strings.Contains(d.Message, "chat:write") {
		t.Fatalf("missing handler scope: %+v", d)
	}
	n, _ := e.dial(bearer("n.t.x"), "")
	n.send("chat.send", "c0", "hi")
	if d := errorOf(t, n.read()); d.Code != CodeForbidden || d.ID != "c0" || !strings.Contains(d.Message, "chat.send") {
		t.Fatalf("type not allowed: %+v", d)
	}
	w, wel := e.dial(bearer("w.r.x"), "")
	w.send("chat.send", "c2", "hi")
	f := w.read()
	var res map[string]any
	if f.Type != "chat.send.result" || f.ID != "c2" || json.Unmarshal(f.Data, &res) != nil ||
		res["echo"] != "hi" || res["user"] != "writer" || res["conn"] != wel.ConnectionID || res["proto"] != "websocket" {
		t.Fatalf("handler reply %+v %s", f, f.Data)
	}
	w.send("fail", "f1", "limit")
	if d := errorOf(t, w.read()); d.Code != CodeRateLimited || d.Message != "slow down" {
		t.Fatalf("frame error: %+v", d)
	}
	w.send("fail", "f2", "other")
	if d := errorOf(t, w.read()); d.Code != CodeInternal || strings.Contains(d.Message, "secret") {
		t.Fatalf("internal error: %+v", d)
	}
	// Session connections hold every scope by default.
	_, tok := e.session("alice")
	s, _ := e.dial(bearer(tok), "")
	s.send("chat.send", "c3", 1)
	if f := s.read(); f.Type != "chat.send.result" {
		t.Fatalf("session connection: %+v", f)
	}
}

func TestSendToUserAndSession(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	s1, tok1 := e.session("alice")
	_, tok2 := e.session("alice")
	_, tok3 := e.session("bob")
	a1, _ := e.dial(bearer(tok1), "")
	a2, _ := e.dial(bearer(tok2), "")
	b, _ := e.dial(bearer(tok3), "")

	if err := e.g.SendToUser(ctx, "alice", json.RawMessage(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{a1, a2} {
		if f := c.read(); f.Type != TypeMessage || string(f.Data) != `{"data":{"n":1}}` {
			t.Fatalf("SendToUser: %+v %s", f, f.Data)
		}
	}
	if err := e.g.SendToSession(ctx, s1.ID, json.RawMessage(`"only-s1"`)); err != nil {
		t.Fatal(err)
	}
	if f := a1.read(); f.Type != TypeMessage || string(f.Data) != `{"data":"only-s1"}` {
		t.Fatalf("SendToSession: %+v %s", f, f.Data)
	}
	for _, c := range []*client{a2, b} {
		c.send("ping", "", nil)
		if f := c.read(); f.Type != TypePong {
			t.Fatalf("message leaked: %+v %s", f, f.Data)
		}
	}
	if err := e.g.SendToUser(ctx, "alice", json.RawMessage(`{bad`)); err == nil {
		t.Fatal("invalid JSON accepted")
	}
}

func TestGapRevalidationClosesDeletedSessions(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	s1, tok1 := e.session("alice")
	s2, tok2 := e.session("bob")
	_, tok3 := e.session("carol")
	a, _ := e.dial(bearer(tok1), "")
	b, _ := e.dial(bearer(tok2), "")
	c, _ := e.dial(bearer(tok3), "")

	e.bus.dropSession(s1.ID, s2.ID)
	if _, err := e.mgr.Delete(ctx, s1.ID, sb.ReasonRevoked, sb.Change{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.mgr.Update(ctx, s2.ID, json.RawMessage(`{"x":1}`), 0, sb.Change{Source: sb.SourceAPI}); err != nil {
		t.Fatal(err)
	}
	// Nothing reached the sockets; a gap makes the gateway re-validate.
	e.store.down.Store(true)
	e.g.HandleGap()
	c.send("ping", "", nil)
	c.readType(TypePong)
	if e.g.Len() != 3 {
		t.Fatalf("store down: %d connections, want all 3 kept", e.g.Len())
	}
	e.store.down.Store(false)
	e.g.HandleGap()
	a.expectClose(CloseReauthenticate, ReasonSessionRevoked)
	f := b.readType(TypeSessionUpdated)
	var up sessionUpdatedData
	if json.Unmarshal(f.Data, &up) != nil || up.Session.Version != 2 || up.Source != sb.SourceSystem {
		t.Fatalf("after gap: %s", f.Data)
	}
	c.send("ping", "", nil)
	c.readType(TypePong)
}

// TestGapReadsWholeOnlyChanged: a re-validation asks the store for the
// versions of every local session and reads whole only those that changed.
func TestGapReadsWholeOnlyChanged(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	var socks []*client
	var ids []string
	for _, user := range []string{"alice", "bob", "carol", "dave"} {
		s, tok := e.session(user)
		c, _ := e.dial(bearer(tok), "")
		socks, ids = append(socks, c), append(ids, s.ID)
	}
	e.bus.dropSession(ids[0], ids[1])
	if _, err := e.mgr.Delete(ctx, ids[0], sb.ReasonRevoked, sb.Change{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.mgr.Update(ctx, ids[1], json.RawMessage(`{"x":1}`), 0, sb.Change{Source: sb.SourceAPI}); err != nil {
		t.Fatal(err)
	}
	checked, whole := e.store.checked.Load(), e.store.wholeReads.Load()
	e.g.HandleGap()
	socks[0].expectClose(CloseReauthenticate, ReasonSessionRevoked)
	socks[1].readType(TypeSessionUpdated)
	if got := e.store.checked.Load() - checked; got != 4 {
		t.Errorf("versions checked: %d, want 4", got)
	}
	if got := e.store.wholeReads.Load() - whole; got != 2 {
		t.Errorf("sessions read whole: %d, want the 2 that changed", got)
	}
	socks[2].send("ping", "", nil)
	socks[2].readType(TypePong)
}

func TestSweepRevalidates(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SweepInterval = 20 * time.Millisecond })
	s, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	e.bus.dropSession(s.ID)
	if _, err := e.mgr.Delete(context.Background(), s.ID, sb.ReasonRevoked, sb.Change{}); err != nil {
		t.Fatal(err)
	}
	c.expectClose(CloseReauthenticate, ReasonSessionRevoked)
}

func TestSlowConsumerIsCut(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SendQueue = 8; c.WriteTimeout = 200 * time.Millisecond })
	_, tok := e.session("alice")
	_, w := e.dial(bearer(tok), "")
	sc := e.g.reg.conn(w.ConnectionID)
	// The client never reads again; the server pushes until its kernel
	// buffers fill and the queue overflows.
	payload := map[string]string{"blob": strings.Repeat("x", 16<<10)}
	var err error
	for i := 0; i < 100000 && err == nil; i++ {
		err = sc.Send(context.Background(), "message", payload)
		sc.mu.Lock()
		n := len(sc.queue)
		sc.mu.Unlock()
		if n > 8 {
			t.Fatalf("queue grew to %d frames", n)
		}
	}
	if !errors.Is(err, ErrSlowConsumer) {
		t.Fatalf("Send ended with %v, want ErrSlowConsumer", err)
	}
	if err := sc.Send(context.Background(), "message", 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after cut: %v", err)
	}
	waitFor(t, "slow consumer dropped", func() bool { return e.g.Len() == 0 })
}

func TestPresence(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	s1, tok1 := e.session("alice")
	s2, _ := e.session("alice")
	e.dial(bearer(tok1), "")
	e.dial(bearer(tok1), "")
	counts, err := e.g.SessionCounts(ctx, []string{s1.ID, s2.ID})
	if err != nil || counts[s1.ID] != 2 || len(counts) != 1 {
		t.Fatalf("counts %v %v", counts, err)
	}
	list, err := e.g.UserConnections(ctx, "alice")
	if err != nil || len(list) != 2 || list[0].SessionID != s1.ID || list[0].NodeID != "test" || list[0].Method != sb.AuthSession || list[0].IP != "127.0.0.1" {
		t.Fatalf("connections %+v %v", list, err)
	}
	if all, _ := e.g.UserConnections(ctx, ""); len(all) != 2 {
		t.Fatalf("all connections %v", all)
	}
	if none, _ := e.g.UserConnections(ctx, "bob"); len(none) != 0 {
		t.Fatalf("bob %v", none)
	}
}

func TestKeepalive(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PingInterval = 50 * time.Millisecond; c.PongTimeout = 1500 * time.Millisecond })
	_, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	pings := make(chan struct{}, 100)
	var mute atomic.Bool
	c.ws.SetPingHandler(func(data string) error {
		if mute.Load() {
			return nil
		}
		select {
		case pings <- struct{}{}:
		default:
		}
		return c.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	// A reader that answers pings keeps the connection alive well past the
	// pong timeout.
	done := make(chan error, 1)
	go func() {
		_, _, err := c.ws.ReadMessage()
		done <- err
	}()
	for i := 0; i < 40; i++ { // 2s: longer than the pong timeout
		select {
		case <-pings:
		case err := <-done:
			t.Fatalf("connection ended: %v\n%s", err, e.logs.String())
		case <-time.After(10 * time.Second):
			t.Fatal("no ping")
		}
	}
	if e.g.Len() != 1 {
		t.Fatal("connection dropped while answering pings")
	}
	// A peer that stops answering is dropped after the pong timeout.
	mute.Store(true)
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dead peer not dropped")
	}
	waitFor(t, "dead peer unregistered", func() bool { return e.g.Len() == 0 })
}

func TestFanOutDoesNotWaitForSlowSocket(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SendQueue = 16; c.WriteTimeout = 200 * time.Millisecond })
	s, tok := e.session("alice")
	slow, _ := e.dial(bearer(tok), "") // never reads again
	fast, _ := e.dial(bearer(tok), "")
	ctx := context.Background()
	got := make(chan string, 1)
	go func() {
		for {
			f, err := fast.tryRead()
			if err != nil {
				close(got)
				return
			}
			got <- string(f.Data)
		}
	}()
	blob, _ := json.Marshal(strings.Repeat("y", 32<<10))
	for i := 0; e.g.Len() == 2; i++ {
		if i == 5000 {
			t.Fatal("slow socket never cut")
		}
		if err := e.g.SendToSession(ctx, s.ID, blob); err != nil {
			t.Fatal(err)
		}
		// The fast socket keeps up: each message arrives while the slow
		// socket's buffers fill.
		select {
		case _, ok := <-got:
			if !ok {
				t.Fatal("fast socket closed")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("fast socket stalled behind the slow one")
		}
	}
	if err := e.g.SendToSession(ctx, s.ID, json.RawMessage(`"last"`)); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if d != `{"data":"last"}` {
			t.Fatalf("fast socket got %.40s", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("fast socket did not get the last message")
	}
	if e.g.Len() != 1 {
		t.Fatalf("%d connections, want the fast one", e.g.Len())
	}
	_ = slow
}

func TestSweepClosesExpiredSessions(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ExpiryWarning = -1 })
	_, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	// Time passes without the gateway's timer firing (as after a pause of
	// the process); re-validation finds the session expired.
	e.clock.mu.Lock()
	e.clock.now = e.clock.now.Add(time.Hour)
	e.clock.mu.Unlock()
	e.g.HandleGap()
	c.expectClose(CloseReauthenticate, ReasonSessionExpired)
}

// TestChurn connects, updates, messages and revokes concurrently, for the race
// detector and the leak checker.
func TestChurn(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	const workers = 8
	done := make(chan error, workers)
	for w := range workers {
		go func() {
			done <- func() error {
				user := fmt.Sprint("user-", w%3)
				for i := range 5 {
					s, tok, err := e.mgr.Create(ctx, sb.NewSession{UserID: user}, sb.Change{})
					if err != nil {
						return err
					}
					c, _, err := e.tryDial(bearer(tok), "")
					if err != nil {
						return err
					}
					if f, err := c.tryRead(); err != nil || f.Type != TypeWelcome {
						return fmt.Errorf("welcome: %v %v", f, err)
					}
					_ = c.ws.WriteJSON(map[string]any{"type": "session.update", "id": "u", "data": map[string]any{"data": map[string]any{"i": i}}})
					_ = e.g.SendToUser(ctx, user, json.RawMessage(`1`))
					if i%2 == 0 {
						_, _ = e.mgr.Delete(ctx, s.ID, sb.ReasonRevoked, sb.Change{})
					} else {
						_ = c.ws.Close()
					}
				}
				return nil
			}()
		}()
	}
	for range workers {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for u := range 3 {
		if _, err := e.mgr.DeleteUser(ctx, fmt.Sprint("user-", u), "", sb.ReasonRevoked, sb.Change{}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.g.Len() != 0 {
		if time.Now().After(deadline) {
			e.g.reg.forAll(func(c *Conn) {
				c.mu.Lock()
				t.Logf("left: %s session %s closing %v sent %v closed %v held %v writing %v queue %d code %d", c.id, c.p.SessionID, c.closing, c.closeSent, c.closed, c.held, c.writing, len(c.queue), c.code)
				c.mu.Unlock()
			})
			t.Fatal("connections left")
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.g.reg.mu.RLock()
	defer e.g.reg.mu.RUnlock()
	if len(e.g.reg.sessions) != 0 || len(e.g.reg.users) != 0 {
		t.Fatalf("registry keeps %d sessions and %d users", len(e.g.reg.sessions), len(e.g.reg.users))
	}
}

func TestConnContext(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Metadata = func(r *http.Request, p *sb.Principal) map[string]string {
			return map[string]string{"tenant": r.URL.Query().Get("tenant"), "user": p.UserID}
		}
	})
	got := make(chan ConnContext, 1)
	e.g.Handle("whoami", "", func(ctx context.Context, c *Conn, data json.RawMessage) (any, error) {
		got <- c.Context()
		return nil, nil
	})
	s, tok := e.session("alice")
	h := bearer(tok)
	h.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0")
	c, w := e.dial(h, "tenant=acme")
	c.send("whoami", "1", nil)
	if f := c.read(); f.Type != "whoami.result" {
		t.Fatalf("reply %+v", f)
	}
	cc := <-got
	if !cc.Authenticated || cc.SessionID != s.ID || cc.UserID != "alice" || cc.Protocol != "websocket" ||
		cc.Method != sb.AuthSession || string(cc.SessionData) != `{"theme":"dark"}` ||
		cc.Device.ConnectionID != w.ConnectionID || cc.Device.IP != "127.0.0.1" || cc.Device.UserAgent == "" ||
		cc.Metadata["tenant"] != "acme" || cc.Metadata["user"] != "alice" {
		t.Fatalf("context %+v", cc)
	}
}

// TestClosingConnectionRunsNoHandlers checks that once the gateway has
// decided to close a socket (here: its session was revoked), frames the
// client still sends during the close handshake run no handler: a revoked
// credential must not act, even for the close grace.
func TestClosingConnectionRunsNoHandlers(t *testing.T) {
	e := newEnv(t, nil)
	var calls atomic.Int32
	e.g.Handle("chat.send", "", func(ctx context.Context, c *Conn, data json.RawMessage) (any, error) {
		calls.Add(1)
		return nil, nil
	})
	s, tok := e.session("alice")
	c, w := e.dial(bearer(tok), "")
	c.send("chat.send", "before", "hi")
	if f := c.read(); f.Type != "chat.send.result" {
		t.Fatalf("before the revocation: %+v", f)
	}
	if _, err := e.mgr.Delete(context.Background(), s.ID, sb.ReasonRevoked, sb.Change{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the server to start closing", func() bool {
		conn := e.g.reg.conn(w.ConnectionID)
		if conn == nil {
			return true
		}
		conn.mu.Lock()
		defer conn.mu.Unlock()
		return conn.closing
	})
	// The client has not read the close frame, so it can still write.
	c.send("chat.send", "after", "hi")
	c.send("session.update", "after2", map[string]any{"data": map[string]any{"x": 1}})
	waitFor(t, "the connection to end", func() bool { return e.g.reg.conn(w.ConnectionID) == nil })
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want once (before the revocation)", n)
	}
}
