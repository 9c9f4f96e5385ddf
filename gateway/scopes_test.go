package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/scope"
)

// scopedSession creates a session of user holding scopes.
func (e *env) scopedSession(user string, scopes ...string) (*sb.Session, string) {
	e.t.Helper()
	if scopes == nil {
		scopes = []string{}
	}
	s, tok, err := e.mgr.Create(context.Background(), sb.NewSession{UserID: user, Data: json.RawMessage(`{"theme":"dark"}`), Scopes: scopes}, sb.Change{Source: sb.SourceAPI})
	if err != nil {
		e.t.Fatal(err)
	}
	return s, tok
}

// patchScopes sets a session's scopes as the admin API does.
func (e *env) patchScopes(id string, scopes ...string) *sb.Session {
	e.t.Helper()
	if scopes == nil {
		scopes = []string{}
	}
	s, err := e.mgr.Patch(context.Background(), id, sb.SessionPatch{Scopes: &scopes}, 0, sb.Change{Source: sb.SourceAPI})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func scopesOf(t *testing.T, f wireFrame) []string {
	t.Helper()
	if f.Type != TypeScopesUpdated {
		t.Fatalf("frame %q %s, want scopes.updated", f.Type, f.Data)
	}
	var d scopesUpdatedData
	if err := json.Unmarshal(f.Data, &d); err != nil {
		t.Fatal(err)
	}
	return d.Scopes
}

func echo(ctx context.Context, c *Conn, data json.RawMessage) (any, error) { return data, nil }

// TestFramePermissions: every frame type, built-in or the application's, is
// checked against the connection's patterns; deny wins; ping always passes.
func TestFramePermissions(t *testing.T) {
	e := newEnv(t, nil)
	e.g.Handle("chat.send", "", echo)
	e.g.Handle("chat.admin", "", echo)
	e.g.Handle("rooms.join", "", echo)
	_, tok := e.scopedSession("alice", "ws:connect", "chat.*", "!chat.admin")
	c, w := e.dial(bearer(tok), "")
	if !slices.Equal(w.Scopes, []string{"ws:connect", "chat.*", "!chat.admin"}) {
		t.Fatalf("welcome scopes %v", w.Scopes)
	}

	c.send("chat.send", "1", "hi")
	if f := c.read(); f.Type != "chat.send.result" || f.ID != "1" || string(f.Data) != `"hi"` {
		t.Fatalf("allowed frame: %+v %s", f, f.Data)
	}
	for _, typ := range []string{"chat.admin", "session.update", "session.get", "rooms.join", "chat.room.send", "other"} {
		c.send(typ, "x-"+typ, map[string]any{"data": map[string]any{"a": 1}})
		d := errorOf(t, c.read())
		if d.Code != CodeForbidden || d.ID != "x-"+typ || !strings.Contains(d.Message, typ) {
			t.Errorf("%s: %+v, want forbidden naming the type", typ, d)
		}
	}
	// Allowed but served by no handler: the client learns it is unknown.
	c.send("chat.nobody", "u", nil)
	if d := errorOf(t, c.read()); d.Code != CodeUnknownType {
		t.Errorf("allowed type without handler: %+v", d)
	}
	c.send("ping", "p", nil)
	if f := c.read(); f.Type != TypePong || f.ID != "p" {
		t.Fatalf("ping: %+v", f)
	}
	// A refused type that no one registered does not become a metrics
	// label of its own.
	if n := e.counter("sessionbridge_frames_total", map[string]string{"type": "unknown", "result": CodeForbidden}); n != 2 {
		t.Errorf("forbidden frames of unregistered types counted %v under unknown, want 2", n)
	}
	if n := e.counter("sessionbridge_frames_total", map[string]string{"type": "chat.admin", "result": CodeForbidden}); n != 1 {
		t.Errorf("forbidden chat.admin counted %v, want 1", n)
	}
	if !strings.Contains(e.logs.String(), "frame_type_not_allowed") {
		t.Error("no authz_fail audit for a refused frame")
	}
	// The session was not changed by the refused session.update.
	got, err := e.mgr.Get(context.Background(), w.Session.ID)
	if err != nil || got.Version != w.Session.Version {
		t.Fatalf("refused update changed the session: %v %+v", err, got)
	}
	// A refused frame with a huge type is named, but not repeated whole.
	long := strings.Repeat("x", 4000)
	c.send(long, "l", nil)
	if d := errorOf(t, c.read()); d.Code != CodeForbidden || len(d.Message) > 300 {
		t.Fatalf("long type: %d-byte message", len(d.Message))
	}
}

// TestUpgradeNeedsWSConnect: without ws:connect, or with scopes that do not
// compile, the upgrade is refused 403 forbidden, naming ws:connect.
func TestUpgradeNeedsWSConnect(t *testing.T) {
	e := newEnv(t, nil)
	_, noConnect := e.scopedSession("alice", "chat.*", "session.*")
	_, none := e.scopedSession("alice")
	e.jwt.add("j.no.c", sb.Principal{UserID: "bob", Scopes: []string{"**", "!ws:connect"}})
	e.jwt.add("j.bad.p", sb.Principal{UserID: "bob", Scopes: []string{"ws:connect", "chat.**.x"}})
	noConnectKey, _ := e.key("svc", 0, "publish")
	for name, tc := range map[string]struct {
		h    http.Header
		word string
	}{
		"session without ws:connect": {bearer(noConnect), "ws:connect"},
		"session with no scope":      {bearer(none), "ws:connect"},
		"jwt denying ws:connect":     {bearer("j.no.c"), "ws:connect"},
		"api key without it":         {bearer(noConnectKey), "ws:connect"},
		"jwt with a bad pattern":     {bearer("j.bad.p"), "scope"},
	} {
		_, resp, err := e.tryDial(tc.h, "")
		if err == nil || resp == nil {
			t.Fatalf("%s: upgrade accepted", name)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var body refusalBody
		if err := json.Unmarshal(b, &body); err != nil {
			t.Fatalf("%s: body %q", name, b)
		}
		if resp.StatusCode != http.StatusForbidden || body.Error != "forbidden" || !strings.Contains(body.Message, tc.word) ||
			resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %+v", name, resp.StatusCode, body)
		}
	}
	if e.g.Len() != 0 {
		t.Fatalf("%d connections registered", e.g.Len())
	}
	// The legacy "*" still opens a socket: it means everything.
	e.jwt.add("j.star.x", sb.Principal{UserID: "bob", Scopes: []string{"*"}})
	c, _ := e.dial(bearer("j.star.x"), "")
	c.send("session.get", "g", nil)
	if d := errorOf(t, c.read()); d.Code != CodeBadRequest {
		t.Fatalf("session.get with * on a JWT without session: %+v, want bad_request (allowed, no session)", d)
	}
}

// TestSessionScopesChangeLive: an administrator's change of a session's
// scopes reaches its open sockets at once, without a reconnect; losing
// ws:connect closes them 4403. A JWT bound to the same session keeps its own
// scopes.
func TestSessionScopesChangeLive(t *testing.T) {
	e := newEnv(t, nil)
	e.g.Handle("chat.send", "", echo)
	s, tok := e.session("alice") // the default: everything
	a, _ := e.dial(bearer(tok), "")
	b, _ := e.dial(bearer(tok), "")
	e.jwt.add("j.sid.x", sb.Principal{UserID: "alice", SessionID: s.ID, Scopes: []string{"ws:connect", "session.get"}, ExpiresAt: e.clock.Now().Add(time.Hour)})
	j, jw := e.dial(bearer("j.sid.x"), "")

	next := e.patchScopes(s.ID, "ws:connect", "chat.*")
	for _, c := range []*client{a, b} {
		if f := c.read(); f.Type != TypeSessionUpdated {
			t.Fatalf("first push %q, want session.updated (the version moved)", f.Type)
		}
		if got := scopesOf(t, c.read()); !slices.Equal(got, next.Scopes) {
			t.Fatalf("scopes.updated %v, want %v", got, next.Scopes)
		}
		c.send("chat.send", "1", "hi")
		if f := c.read(); f.Type != "chat.send.result" {
			t.Fatalf("chat.send after the change: %+v", f)
		}
		c.send("session.update", "2", map[string]any{"data": map[string]any{"x": 1}})
		if d := errorOf(t, c.read()); d.Code != CodeForbidden || !strings.Contains(d.Message, "session.update") {
			t.Fatalf("session.update after the change: %+v", d)
		}
	}
	if p := e.g.reg.conn(jw.ConnectionID).Principal(); !slices.Equal(p.Scopes, []string{"ws:connect", "session.get"}) {
		t.Fatalf("the JWT connection's scopes became %v", p.Scopes)
	}
	if f := j.read(); f.Type != TypeSessionUpdated {
		t.Fatalf("JWT socket got %q, want only session.updated", f.Type)
	}
	j.send("ping", "p", nil)
	if f := j.read(); f.Type != TypePong {
		t.Fatalf("JWT socket got %q before pong: no scopes.updated expected", f.Type)
	}

	// Losing ws:connect: told, then closed 4403.
	e.patchScopes(s.ID, "chat.*")
	for _, c := range []*client{a, b} {
		if got := scopesOf(t, c.readType(TypeScopesUpdated)); !slices.Equal(got, []string{"chat.*"}) {
			t.Fatalf("scopes.updated %v", got)
		}
		c.expectClose(CloseForbidden, ReasonForbidden)
	}
	waitFor(t, "the session's sockets to go", func() bool { return e.g.Len() == 1 })
	if !strings.Contains(e.logs.String(), "lost_ws_connect") {
		t.Error("no audit of the lost ws:connect")
	}
	// New sockets of the session are refused at the upgrade now.
	_, resp, err := e.tryDial(bearer(tok), "")
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("upgrade after losing ws:connect: %v", err)
	}
}

// TestUserCannotPatchScopes: a session's own user patches data only; a data
// member named "scopes" is just data.
func TestUserCannotPatchScopes(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.scopedSession("alice", "ws:connect", "session.*")
	c, _ := e.dial(bearer(tok), "")
	c.send("session.update", "u", map[string]any{"data": map[string]any{"scopes": []string{"**"}}})
	if f := c.read(); f.Type != TypeAck {
		t.Fatalf("update: %+v %s", f, f.Data)
	}
	got, err := e.mgr.Get(context.Background(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Scopes, []string{"ws:connect", "session.*"}) || string(got.Data) != `{"scopes":["**"],"theme":"dark"}` {
		t.Fatalf("after the user's patch: scopes %v data %s", got.Scopes, got.Data)
	}
	// Still held to the old scopes: no scopes.updated came.
	c.send("chat.send", "x", nil)
	if d := errorOf(t, c.read()); d.Code != CodeForbidden {
		t.Fatalf("after the user's patch: %+v", d)
	}
}

// TestSessionScopesAfterLostEvent: when the event that carried a scopes
// change was lost, the re-validation after the gap applies it.
func TestSessionScopesAfterLostEvent(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	e.bus.dropSession(s.ID)
	e.patchScopes(s.ID, "ws:connect", "chat.*")
	e.bus.dropIf(nil)
	e.g.HandleGap()
	if got := scopesOf(t, c.readType(TypeScopesUpdated)); !slices.Equal(got, []string{"ws:connect", "chat.*"}) {
		t.Fatalf("scopes after the gap %v", got)
	}
	// A store write that changed the scopes without carrying them in its
	// event (a hand-written one) reaches the sockets at the next sweep.
	cur, err := e.mgr.Get(context.Background(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	next := cur.Clone()
	next.Scopes, next.Version = []string{"ws:connect", "rooms.*"}, cur.Version+1
	if err := e.store.Update(context.Background(), next, cur.Version, sb.Event{Type: sb.EventUpdated, SessionID: s.ID, UserID: s.UserID, Version: next.Version, Updates: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if f := c.readType(TypeSessionUpdated); f.Type != TypeSessionUpdated {
		t.Fatal(f)
	}
	e.g.HandleGap()
	if got := scopesOf(t, c.readType(TypeScopesUpdated)); !slices.Equal(got, []string{"ws:connect", "rooms.*"}) {
		t.Fatalf("scopes after the sweep %v", got)
	}
}

// TestSessionScopesChangedDuringUpgrade: a change that lands between the
// upgrade's authentication read and the socket's registration still reaches
// the socket.
func TestSessionScopesChangedDuringUpgrade(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	once := false
	hook := func(id string) {
		if id != s.ID || once {
			return
		}
		once = true
		e.patchScopes(s.ID, "ws:connect", "chat.*")
	}
	e.store.afterGet.Store(&hook)
	c, w := e.dial(bearer(tok), "")
	e.store.afterGet.Store(nil)
	got := w.Scopes
	if !slices.Equal(got, []string{"ws:connect", "chat.*"}) {
		got = scopesOf(t, c.readType(TypeScopesUpdated))
	}
	if !slices.Equal(got, []string{"ws:connect", "chat.*"}) {
		t.Fatalf("scopes %v", got)
	}
	c.send("session.get", "g", nil)
	if d := errorOf(t, c.readType(TypeError)); d.Code != CodeForbidden {
		t.Fatalf("session.get after the change: %+v", d)
	}
}

// TestSessionDefaultScopes: SessionScopes is what sessions without scopes of
// their own hold; New refuses patterns that do not compile.
func TestSessionDefaultScopes(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SessionScopes = []string{"ws:connect", "session.get"} })
	_, tok := e.session("alice")
	c, w := e.dial(bearer(tok), "")
	if !slices.Equal(w.Scopes, []string{"ws:connect", "session.get"}) {
		t.Fatalf("welcome scopes %v", w.Scopes)
	}
	c.send("session.update", "u", map[string]any{"data": map[string]any{}})
	if d := errorOf(t, c.read()); d.Code != CodeForbidden {
		t.Fatalf("session.update under the default: %+v", d)
	}
	if _, err := New(Config{Manager: e.mgr, SessionScopes: []string{"a**"}}); err == nil {
		t.Fatal("New accepted an invalid default scope")
	}
}

func TestHandleRefusesUnnameableTypes(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range [][2]string{{"chat.*", ""}, {"chat..send", ""}, {"!chat", ""}, {"chat send", ""}, {"chat.send", "chat:*"}, {"chat.send", "a..b"}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Handle(%q, %q) did not panic", tc[0], tc[1])
				}
			}()
			e.g.Handle(tc[0], tc[1], echo)
		}()
	}
}

// TestFrameCheckAllocs: the per-frame permission check allocates nothing.
func TestFrameCheckAllocs(t *testing.T) {
	c := benchConn(t)
	types := []string{"chat.send", "chat.admin", "session.update", "rooms.a.b.c", "ping", "other"}
	if n := testing.AllocsPerRun(1000, func() {
		for _, typ := range types {
			_ = c.allows(typ)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per check", n)
	}
	for typ, want := range map[string]bool{"chat.send": true, "chat.admin": false, "session.update": false, "rooms.a.b.c": true, "ping": true, "other": false} {
		if c.allows(typ) != want {
			t.Errorf("allows(%q) = %v", typ, !want)
		}
	}
}

// benchScopes are a realistic set of patterns: exact, one-segment and
// any-depth wildcards, and a deny.
var benchScopes = []string{"ws:connect", "session.get", "chat.*", "!chat.admin", "rooms.**", "presence.*.read"}

func benchConn(t testing.TB) *Conn {
	set, err := sb.CompileScopes(benchScopes)
	if err != nil {
		t.Fatal(err)
	}
	c := &Conn{}
	c.scopes.Store(&set)
	return c
}

// BenchmarkFrameScopeCheck measures the per-frame permission check: the
// types are allowed by an exact pattern, by a wildcard, refused by a deny
// and refused by no match.
func BenchmarkFrameScopeCheck(b *testing.B) {
	c := benchConn(b)
	for _, typ := range []string{"session.get", "chat.send", "rooms.a.b", "chat.admin", "other.type"} {
		b.Run(typ, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = c.allows(typ)
			}
		})
	}
	b.Run("everything(**)", func(b *testing.B) {
		set := scope.MustCompile("**")
		c := &Conn{}
		c.scopes.Store(&set)
		b.ReportAllocs()
		for b.Loop() {
			_ = c.allows("chat.room.send")
		}
	})
}
