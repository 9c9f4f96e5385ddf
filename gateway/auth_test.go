package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/auth"
)

func TestAuthSources(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.AllowQueryToken = true })
	s, tok := e.session("alice")
	e.jwt.add("aaa.bbb.ccc", sb.Principal{UserID: "bob", Scopes: []string{"ws:connect", "read"}, ExpiresAt: e.clock.Now().Add(time.Hour)})
	apiKey, _ := e.key("svc", 0, "**")
	ticket, err := e.tickets.Issue(context.Background(), sb.Ticket{UserID: "alice", SessionID: s.ID, Method: sb.AuthSession}, 0)
	if err != nil {
		t.Fatal(err)
	}
	ticket2, err := e.tickets.Issue(context.Background(), sb.Ticket{UserID: "alice", SessionID: s.ID, Method: sb.AuthSession}, 0)
	if err != nil {
		t.Fatal(err)
	}
	origin := e.srv.URL
	cases := []struct {
		name    string
		h       http.Header
		query   string
		auth    sb.AuthMethod
		user    string
		session bool
	}{
		{"bearer session token", bearer(tok), "", sb.AuthSession, "alice", true},
		{"X-Session-Token", http.Header{"X-Session-Token": {tok}}, "", sb.AuthSession, "alice", true},
		{"cookie with own origin", http.Header{"Cookie": {CookieName + "=" + tok}, "Origin": {origin}}, "", sb.AuthSession, "alice", true},
		{"ticket", nil, "ticket=" + url.QueryEscape(ticket), sb.AuthSession, "alice", true},
		{"query token when enabled", nil, "session_token=" + url.QueryEscape(tok), sb.AuthSession, "alice", true},
		{"jwt", bearer("aaa.bbb.ccc"), "", sb.AuthJWT, "bob", false},
		{"api key", bearer(apiKey), "", sb.AuthAPIKey, "svc", false},
		{"bearer and same header token", http.Header{"Authorization": {"Bearer " + tok}, "X-Session-Token": {tok}}, "", sb.AuthSession, "alice", true},
		{"ticket with a cleared cookie", http.Header{"Cookie": {CookieName + "="}}, "ticket=" + url.QueryEscape(ticket2), sb.AuthSession, "alice", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, w := e.dial(tc.h, tc.query)
			if w.Auth != tc.auth || w.UserID != tc.user || w.ConnectionID == "" {
				t.Fatalf("welcome %+v", w)
			}
			if (w.Session != nil) != tc.session {
				t.Fatalf("welcome session %v, want present=%v", w.Session, tc.session)
			}
			if tc.session && (w.Session.ID != s.ID || string(w.Session.Data) != `{"theme":"dark"}` || w.ExpiresAt == nil || !w.ExpiresAt.Equal(s.Deadline())) {
				t.Fatalf("welcome session %+v expires %v", w.Session, w.ExpiresAt)
			}
			// Sessions without scopes of their own hold the default:
			// every type.
			if tc.auth == sb.AuthSession && (len(w.Scopes) != 1 || w.Scopes[0] != "**") {
				t.Fatalf("scopes %v", w.Scopes)
			}
			if e.g.reg.conn(w.ConnectionID) == nil {
				t.Fatal("connection not registered")
			}
			_ = c.ws.Close()
			waitFor(t, "unregister", func() bool { return e.g.reg.conn(w.ConnectionID) == nil })
		})
	}
}

type refusalBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func expectRefusal(t *testing.T, e *env, h http.Header, query string, status int, code string) {
	t.Helper()
	c, resp, err := e.tryDial(h, query)
	if err == nil {
		_ = c.ws.Close()
		t.Fatalf("upgrade accepted, want %d %s", status, code)
	}
	if resp == nil {
		t.Fatalf("no response: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body refusalBody
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	if resp.StatusCode != status || body.Error != code || body.Message == "" {
		t.Fatalf("got %d %+v, want %d %s", resp.StatusCode, body, status, code)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
}

func TestAuthRefusals(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	s, tok := e.session("alice")
	id, _, _ := sb.ParseToken(tok)
	_, otherTok := e.session("alice")
	_, wrongSecret, _ := sb.ParseToken(otherTok)

	expiredSess, expiredTok, err := e.mgr.Create(ctx, sb.NewSession{UserID: "carol", TTL: time.Minute}, sb.Change{})
	if err != nil {
		t.Fatal(err)
	}
	_, revokedTok := e.session("dave")
	revokedID, _, _ := sb.ParseToken(revokedTok)
	if _, err := e.mgr.Delete(ctx, revokedID, sb.ReasonRevoked, sb.Change{}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Minute) // carol's session is past its absolute deadline
	_ = expiredSess
	e.jwt.add("exp.jwt.tok", sb.Principal{UserID: "bob", ExpiresAt: e.clock.Now().Add(-time.Second)})
	e.jwt.add("sid.jwt.tok", sb.Principal{UserID: "dave", SessionID: revokedID})

	cookie := func(v, origin string) http.Header {
		h := http.Header{"Cookie": {CookieName + "=" + v}}
		if origin != "" {
			h.Set("Origin", origin)
		}
		return h
	}
	own := e.srv.URL
	cases := []struct {
		name   string
		h      http.Header
		query  string
		status int
		code   string
	}{
		{"no credentials", nil, "", 401, "unauthorized"},
		{"garbage bearer", bearer("garbage"), "", 401, "unauthorized"},
		{"right id wrong secret", bearer(sb.FormatToken(id, wrongSecret)), "", 401, "unauthorized"},
		{"expired session", bearer(expiredTok), "", 401, "unauthorized"},
		{"revoked session", bearer(revokedTok), "", 401, "unauthorized"},
		{"basic auth scheme", http.Header{"Authorization": {"Basic YTpi"}}, "", 401, "unauthorized"},
		{"empty bearer", http.Header{"Authorization": {"Bearer "}}, "", 401, "unauthorized"},
		{"two authorization headers", http.Header{"Authorization": {"Bearer " + tok, "Bearer " + tok}}, "", 401, "conflicting_credentials"},
		{"bearer and other header token", http.Header{"Authorization": {"Bearer " + tok}, "X-Session-Token": {otherTok}}, "", 401, "conflicting_credentials"},
		{"two different cookies", http.Header{"Cookie": {CookieName + "=" + tok + "; " + CookieName + "=" + otherTok}, "Origin": {own}}, "", 401, "conflicting_credentials"},
		{"query token when disabled", nil, "session_token=" + url.QueryEscape(tok), 401, "unauthorized"},
		{"unknown ticket", nil, "ticket=nope", 401, "unauthorized"},
		{"cookie foreign origin", cookie(tok, "https://evil.example"), "", 403, "origin_not_allowed"},
		{"cookie null origin", cookie(tok, "null"), "", 403, "origin_not_allowed"},
		{"cookie no origin", cookie(tok, ""), "", 403, "origin_not_allowed"},
		{"cookie look-alike origin", cookie(tok, strings.Replace(own, "127.0.0.1", "127.0.0.1.evil.com", 1)), "", 403, "origin_not_allowed"},
		{"cookie malformed origin", cookie(tok, own+"/path"), "", 403, "origin_not_allowed"},
		{"jwt unknown", bearer("x.y.z"), "", 401, "unauthorized"},
		{"jwt expired", bearer("exp.jwt.tok"), "", 401, "unauthorized"},
		{"jwt bound to revoked session", bearer("sid.jwt.tok"), "", 401, "unauthorized"},
		{"api key unknown", bearer("sbk_nope"), "", 401, "unauthorized"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { expectRefusal(t, e, tc.h, tc.query, tc.status, tc.code) })
	}
	if e.g.Len() != 0 {
		t.Fatalf("%d connections after refusals", e.g.Len())
	}
	_ = s
	if n := e.counter("sessionbridge_connects_total", map[string]string{"result": "unauthorized"}); n < 15 {
		t.Fatalf("connects_total{unauthorized} = %v", n)
	}
	if n := e.counter("sessionbridge_connects_total", map[string]string{"result": "forbidden"}); n != 5 {
		t.Fatalf("connects_total{forbidden} = %v", n)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "authn_failed") || !strings.Contains(logs, "origin_not_allowed") {
		t.Fatalf("refusals not audited:\n%s", logs)
	}
	for _, secret := range []string{tok, otherTok, wrongSecret, expiredTok, revokedTok, "garbage", "sbk_nope"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("a credential leaked into the logs: %q", secret)
		}
	}
}

func TestNotAnUpgrade(t *testing.T) {
	e := newEnv(t, nil)
	resp, err := http.Get(e.srv.URL + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body refusalBody
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest || body.Error != "bad_request" {
		t.Fatalf("got %d %+v", resp.StatusCode, body)
	}
}

func TestDisabledVerifiers(t *testing.T) {
	e := newEnvWith(t, func(b *sb.Backend) { b.Tickets = nil }, func(c *Config) { c.JWT, c.APIKeys = nil, nil })
	expectRefusal(t, e, bearer("a.b.c"), "", 401, "unauthorized")
	expectRefusal(t, e, bearer("sbk_whatever"), "", 401, "unauthorized")
	expectRefusal(t, e, nil, "ticket=abc", 401, "unauthorized")
}

func TestTicketSingleUse(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	ticket, err := e.tickets.Issue(context.Background(), sb.Ticket{UserID: "alice", SessionID: s.ID, Method: sb.AuthSession}, 0)
	if err != nil {
		t.Fatal(err)
	}
	q := "ticket=" + url.QueryEscape(ticket)
	_, w := e.dial(nil, q)
	if w.Session == nil || w.Session.ID != s.ID {
		t.Fatalf("welcome %+v", w)
	}
	expectRefusal(t, e, nil, q, 401, "unauthorized")

	// A ticket with a cookie of another session conflicts.
	_, otherTok := e.session("alice")
	ticket2, err := e.tickets.Issue(context.Background(), sb.Ticket{UserID: "alice", SessionID: s.ID, Method: sb.AuthSession}, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Cookie": {CookieName + "=" + otherTok}, "Origin": {e.srv.URL}}
	expectRefusal(t, e, h, "ticket="+url.QueryEscape(ticket2), 401, "conflicting_credentials")
	// ... and with a cookie of the same session it is accepted.
	ticket3, err := e.tickets.Issue(context.Background(), sb.Ticket{UserID: "alice", SessionID: s.ID, Method: sb.AuthSession}, 0)
	if err != nil {
		t.Fatal(err)
	}
	h = http.Header{"Cookie": {CookieName + "=" + tok}, "Origin": {e.srv.URL}}
	_, w = e.dial(h, "ticket="+url.QueryEscape(ticket3))
	if w.Session == nil || w.Session.ID != s.ID {
		t.Fatalf("welcome %+v", w)
	}
}

func TestAllowedOrigins(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.AllowedOrigins = []string{"https://app.example.com", "https://*.example.org"}
	})
	_, tok := e.session("alice")
	ck := func(origin string) http.Header {
		return http.Header{"Cookie": {CookieName + "=" + tok}, "Origin": {origin}}
	}
	// The server's own origin is always allowed, list or no list.
	for _, o := range []string{"https://app.example.com", "https://app.example.com:443", "https://a.example.org", "https://a.b.example.org", "HTTPS://A.EXAMPLE.ORG", e.srv.URL} {
		c, _ := e.dial(ck(o), "")
		_ = c.ws.Close()
	}
	for _, o := range []string{
		"https://example.org", "https://example.org.evil.com", "https://evilexample.org", "http://a.example.org",
		"https://a.example.org:8443", "https://app.example.com.evil.com", "null", "https://-x.example.org",
		strings.Replace(e.srv.URL, "127.0.0.1", "127.0.0.2", 1),
		"https://user@app.example.com",
	} {
		t.Run(o, func(t *testing.T) { expectRefusal(t, e, ck(o), "", 403, "origin_not_allowed") })
	}
	// Bearer credentials need no Origin, but a present one must be allowed.
	c, _ := e.dial(bearer(tok), "")
	_ = c.ws.Close()
	h := bearer(tok)
	h.Set("Origin", "https://evil.example")
	expectRefusal(t, e, h, "", 403, "origin_not_allowed")
	h.Set("Origin", e.srv.URL)
	c, _ = e.dial(h, "")
	_ = c.ws.Close()
}

func TestBearerIgnoresOriginWithoutAllowList(t *testing.T) {
	e := newEnv(t, nil)
	_, tok := e.session("alice")
	h := bearer(tok)
	h.Set("Origin", "https://other.example")
	c, _ := e.dial(h, "")
	_ = c.ws.Close()
}

func TestStoreUnavailable(t *testing.T) {
	e := newEnv(t, nil)
	_, tok := e.session("alice")
	e.store.down.Store(true)
	expectRefusal(t, e, bearer(tok), "", 503, "unavailable")
	e.jwt.mu.Lock()
	e.jwt.err = fmt.Errorf("jwks: %w", sb.ErrUnavailable)
	e.jwt.mu.Unlock()
	expectRefusal(t, e, bearer("a.b.c"), "", 503, "unavailable")
	e.store.down.Store(false)
	c, _ := e.dial(bearer(tok), "")
	_ = c.ws.Close()
}

func TestShutdownRefusesUpgrades(t *testing.T) {
	e := newEnv(t, nil)
	_, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	if err := e.g.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.expectClose(CloseGoingAway, ReasonServerShutdown)
	expectRefusal(t, e, bearer(tok), "", 503, "unavailable")
	if e.g.Len() != 0 {
		t.Fatalf("Len %d after shutdown", e.g.Len())
	}
}

func TestHostileHandshakes(t *testing.T) {
	e := newEnv(t, nil)
	_, tok := e.session("alice")
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	send := func(req string) string {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(c)
		return string(b)
	}
	head := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer " + tok + "\r\n"

	// A key that is not 16 base64 bytes: 400 with the JSON body.
	got := send(head + "Sec-WebSocket-Key: abc\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 400") || !strings.Contains(got, `"error":"bad_request"`) {
		t.Fatalf("bad key: %q", got)
	}
	// Frame bytes sent before the handshake answer: dropped, never upgraded.
	got = send(head + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n\x81\x85abcdefghi")
	if strings.Contains(got, "101 Switching Protocols") {
		t.Fatalf("early data upgraded: %q", got)
	}
	// A client that hangs up right after its handshake leaves nothing behind.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(head + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitFor(t, "no connection left", func() bool { return e.g.Len() == 0 })
}

// A session revoked between the upgrade's authentication and the socket's
// registration, whose event therefore found no socket, is still caught.
func TestRevokedDuringUpgrade(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	var once sync.Once
	hook := func(id string) {
		once.Do(func() {
			before := e.g.marks.mark(id)
			if _, err := e.mgr.Delete(context.Background(), id, sb.ReasonRevoked, sb.Change{}); err != nil {
				t.Error(err)
			}
			// The event goes by before registration.
			waitFor(t, "the deleted event", func() bool { return e.g.marks.mark(id) != before })
		})
	}
	e.store.afterGet.Store(&hook)
	c, w := e.dial(bearer(tok), "")
	if w.Session == nil || w.Session.ID != s.ID {
		t.Fatal("welcome without session")
	}
	c.expectClose(CloseReauthenticate, ReasonSessionRevoked)
}

// A revocation in the same window whose event the bus lost, reporting a gap,
// is caught as well.
func TestRevokedDuringUpgradeEventLost(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	e.bus.dropSession(s.ID)
	var once sync.Once
	hook := func(id string) {
		once.Do(func() {
			if _, err := e.mgr.Delete(context.Background(), id, sb.ReasonRevoked, sb.Change{}); err != nil {
				t.Error(err)
			}
			e.g.HandleGap()
		})
	}
	e.store.afterGet.Store(&hook)
	c, w := e.dial(bearer(tok), "")
	if w.Session == nil {
		t.Fatal("welcome without session")
	}
	c.expectClose(CloseReauthenticate, ReasonSessionRevoked)
}

// Without any event in the window, the upgrade reads its session once.
func TestUpgradeReadsSessionOnce(t *testing.T) {
	e := newEnv(t, nil)
	_, tok := e.session("alice")
	var reads atomic.Int32
	hook := func(string) { reads.Add(1) }
	e.store.afterGet.Store(&hook)
	e.dial(http.Header{"X-Session-Token": {tok}}, "")
	if n := reads.Load(); n != 1 {
		t.Fatalf("%d store reads on connect, want 1", n)
	}
}

// TestRevokedWhileAnotherSocketCloses covers a socket that joins a session
// whose other sockets on this node are being closed for a revocation: the
// deleted event was applied to the session's entry before the new socket was
// registered, so the new socket must be closed too, not left open until the
// next sweep.
func TestRevokedWhileAnotherSocketCloses(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	// The first socket's client never answers the close frame, so it stays
	// registered (closing) while the second upgrade completes.
	_, first := e.dial(bearer(tok), "")
	hook := func(id string) {
		if _, err := e.mgr.Delete(context.Background(), id, sb.ReasonRevoked, sb.Change{}); err != nil {
			t.Error(err)
			return
		}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			c := e.g.reg.conn(first.ConnectionID)
			if c == nil {
				t.Error("the first socket left before the second one registered; the test cannot cover the race")
				return
			}
			c.mu.Lock()
			closing := c.closing
			c.mu.Unlock()
			if closing {
				return
			}
			time.Sleep(time.Millisecond)
		}
		t.Error("the deleted event never reached the first socket")
	}
	var once sync.Once
	onceHook := func(id string) {
		if id == s.ID {
			once.Do(func() { hook(id) })
		}
	}
	e.store.afterGet.Store(&onceHook)
	c, _ := e.dial(bearer(tok), "")
	c.expectClose(CloseReauthenticate, ReasonSessionRevoked)
}

// TestTicketKeepsCredentialExpiry checks that a ticket issued for a JWT
// carries the token's expiry over to the socket: a ticket must not turn a
// short-lived token into a connection that never expires.
func TestTicketKeepsCredentialExpiry(t *testing.T) {
	e := newEnv(t, nil)
	now := e.clock.Now()
	issue := func(exp time.Time) string {
		t.Helper()
		tk, err := e.tickets.Issue(context.Background(), sb.Ticket{UserID: "bob", Method: sb.AuthJWT, Scopes: []string{"ws:connect", "read"}, ExpiresAt: exp}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return "ticket=" + url.QueryEscape(tk)
	}
	expectRefusal(t, e, nil, issue(now), 401, "unauthorized")

	c, w := e.dial(nil, issue(now.Add(time.Minute)))
	if w.Auth != sb.AuthJWT || w.ExpiresAt == nil || !w.ExpiresAt.Equal(now.Add(time.Minute)) {
		t.Fatalf("welcome %+v", w)
	}
	e.clock.Advance(time.Minute)
	c.expectClose(CloseReauthenticate, ReasonTokenExpired)
}

// A handler sees the device the connection comes from, parsed from its
// User-Agent.
func TestContextDevice(t *testing.T) {
	e := newEnv(t, nil)
	_, tok := e.session("alice")
	e.g.Handle("whoami", "", func(ctx context.Context, c *Conn, data json.RawMessage) (any, error) {
		return c.Context().Device, nil
	})
	ua := "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
	c, w := e.dial(http.Header{"X-Session-Token": {tok}, "User-Agent": {ua}}, "")
	c.send("whoami", "1", nil)
	var d ConnDevice
	if err := json.Unmarshal(c.readType("whoami.result").Data, &d); err != nil {
		t.Fatal(err)
	}
	if d.UserAgent != ua || d.Browser != "Firefox 140" || d.OS != "Linux" || d.DeviceType != "desktop" ||
		d.IP != "127.0.0.1" || d.ConnectionID != w.ConnectionID {
		t.Fatalf("device %+v", d)
	}
}

// An API key opens a socket as its owner with its scopes and expiry; a
// mistyped one is refused before any store read; a revoked or expired one is
// refused; a key store that cannot answer fails closed.
func TestAPIKeyUpgrade(t *testing.T) {
	e := newEnv(t, nil)
	key, id := e.key("svc", time.Hour, "ws:connect", "chat.**", "!chat.admin")
	c, w := e.dial(bearer(key), "")
	if w.Auth != sb.AuthAPIKey || w.UserID != "svc" || w.Session != nil || strings.Join(w.Scopes, " ") != "ws:connect chat.** !chat.admin" ||
		w.ExpiresAt == nil || !w.ExpiresAt.Equal(e.clock.Now().Add(time.Hour).Truncate(time.Millisecond)) {
		t.Fatalf("welcome %+v", w)
	}
	if conn := e.g.reg.conn(w.ConnectionID); conn == nil || conn.Principal().KeyID != id {
		t.Fatal("the connection does not name its key")
	}
	_ = c.ws.Close()

	reads := e.keyStore.reads.Load()
	for _, bad := range []string{key[:25] + string(key[25]^1) + key[26:], key[:len(key)-1], "sbk_" + strings.Repeat("0", 60)} {
		expectRefusal(t, e, bearer(bad), "", 401, "unauthorized")
	}
	if n := e.keyStore.reads.Load(); n != reads {
		t.Fatalf("mistyped keys cost %d key store reads", n-reads)
	}

	e.keyStore.down.Store(true)
	expectRefusal(t, e, bearer(key), "", 503, "unavailable")
	e.keyStore.down.Store(false)

	e.clock.Advance(time.Hour)
	expectRefusal(t, e, bearer(key), "", 401, "unauthorized")
	live, liveID := e.key("svc", 0, "ws:connect", "chat.**")
	if _, err := e.keys.Delete(context.Background(), liveID); err != nil {
		t.Fatal(err)
	}
	expectRefusal(t, e, bearer(live), "", 401, "unauthorized")
	if strings.Contains(e.logs.String(), key[len(key)-49:]) {
		t.Fatal("a key secret reached the log")
	}
}

// The admin token is for the admin API: it opens no socket. A shared
// authenticator decides alone: New refuses credential settings beside it.
func TestAdminTokenOpensNoSocket(t *testing.T) {
	const admin = "the-admin-token-0123456789"
	e := newEnv(t, func(c *Config) {
		a, err := auth.New(auth.Config{Sessions: c.Manager, AdminToken: admin})
		if err != nil {
			t.Fatal(err)
		}
		c.Auth, c.JWT, c.APIKeys = a, nil, nil
	})
	expectRefusal(t, e, bearer(admin), "", 403, "forbidden")
	if _, err := New(Config{Manager: e.mgr, Auth: e.g.auth, AllowedOrigins: []string{"https://app.example.com"}}); err == nil {
		t.Fatal("New accepted allowed origins beside a shared authenticator")
	}
}

// A connection keeps its API key's own limits apart from the rest of its
// principal, and Principal returns them; a session connection has none.
func TestPrincipalKeepsKeyLimits(t *testing.T) {
	e := newEnv(t, nil)
	limits := sb.Limits{FramesPerSecond: 7, MaxConnections: 3, DryRun: []string{sb.RuleFramesPerSecond}}
	key := e.rawKey(sb.APIKey{UserID: "svc", Name: "limited", Scopes: []string{"ws:connect"}, Limits: limits})
	_, w := e.dial(bearer(key), "")
	got := e.g.reg.conn(w.ConnectionID).Principal().Limits
	if got.FramesPerSecond != 7 || got.MaxConnections != 3 || !slices.Equal(got.DryRun, limits.DryRun) {
		t.Fatalf("key connection's limits %+v, want %+v", got, limits)
	}
	_, tok := e.session("alice")
	_, w = e.dial(bearer(tok), "")
	if got := e.g.reg.conn(w.ConnectionID).Principal().Limits; !reflect.ValueOf(got).IsZero() {
		t.Fatalf("session connection's limits %+v, want none", got)
	}
}
