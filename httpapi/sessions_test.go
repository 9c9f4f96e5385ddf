package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
)

func TestLoginSetsSafeCookie(t *testing.T) {
	for _, insecure := range []bool{false, true} {
		f := newFixture(t, func(f *fixture) { f.sessions.Insecure = insecure })
		resp := f.do(req{method: "POST", path: "/auth/login", body: `{"username":"alice","password":"alice-password"}`,
			header: map[string]string{"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"}})
		expect(t, resp, http.StatusOK)
		c := resp.cookie("sb_session")
		if c == nil {
			t.Fatal("no sb_session cookie")
		}
		if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Secure == insecure {
			t.Errorf("insecure=%v: cookie attributes HttpOnly=%v SameSite=%v Path=%q Secure=%v", insecure, c.HttpOnly, c.SameSite, c.Path, c.Secure)
		}
		if want := int(sessionbridge.DefaultAbsoluteTimeout / time.Second); c.MaxAge != want {
			t.Errorf("Max-Age %d, want the absolute lifetime %d", c.MaxAge, want)
		}
		var ps sessionbridge.PublicSession
		resp.json(t, &ps)
		if ps.UserID != "alice" || ps.ID == "" || strings.Contains(string(resp.body), c.Value) {
			t.Errorf("login body %s: want alice's public session without the token", resp.body)
		}
		if ps.Device.Browser == "" || ps.Device.IP != "127.0.0.1" {
			t.Errorf("device not recorded from the request: %+v", ps.Device)
		}
		s, err := f.mgr.Authenticate(context.Background(), c.Value)
		if err != nil || s.ID != ps.ID {
			t.Fatalf("cookie token does not authenticate the session: %v", err)
		}
		f.events.waitFor(t, "created", func(ev sessionbridge.Event) bool {
			return ev.Type == sessionbridge.EventCreated && ev.SessionID == ps.ID && ev.Source == sessionbridge.SourceHTTP
		})
	}
}

func TestLoginFailures(t *testing.T) {
	f := newFixture(t)
	for _, body := range []string{
		`{"username":"alice","password":"wrong"}`,
		`{"username":"nobody","password":"alice-password"}`,
	} {
		resp := f.do(req{method: "POST", path: "/auth/login", body: body})
		expect(t, resp, http.StatusUnauthorized)
		if code := resp.errorCode(t); code != CodeInvalidCredentials {
			t.Errorf("code %q, want %q", code, CodeInvalidCredentials)
		}
		if resp.cookie("sb_session") != nil {
			t.Error("failed login set a cookie")
		}
	}
	expect(t, f.do(req{method: "POST", path: "/auth/login", body: `{"username":"alice"}`}), http.StatusBadRequest)
	// A form post (the shape of a cross-site login attempt) is refused.
	resp := f.do(req{method: "POST", path: "/auth/login", body: `{"username":"alice","password":"alice-password"}`,
		header: map[string]string{"Content-Type": "text/plain"}})
	expect(t, resp, http.StatusUnsupportedMediaType)
}

func TestLoginReplacesExistingSession(t *testing.T) {
	f := newFixture(t)
	oldTok, old := f.login("alice")
	resp := f.do(req{method: "POST", path: "/auth/login", cookie: oldTok, header: map[string]string{"Origin": f.srv.URL},
		body: `{"username":"alice","password":"alice-password"}`})
	expect(t, resp, http.StatusOK)
	var ps sessionbridge.PublicSession
	resp.json(t, &ps)
	if ps.ID == old.ID || resp.cookie("sb_session").Value == oldTok {
		t.Fatal("login kept the old session ID")
	}
	if f.exists(old.ID) {
		t.Error("the session the request carried survived the login")
	}
	f.events.waitFor(t, "deleted", func(ev sessionbridge.Event) bool {
		return ev.Type == sessionbridge.EventDeleted && ev.SessionID == old.ID
	})
	// A cookie of another user is replaced too.
	bobTok, bob := f.login("bob")
	resp = f.do(req{method: "POST", path: "/auth/login", cookie: bobTok, body: `{"username":"alice","password":"alice-password"}`})
	expect(t, resp, http.StatusOK)
	if f.exists(bob.ID) {
		t.Error("bob's session survived alice's login in the same browser")
	}
}

func TestLogout(t *testing.T) {
	f := newFixture(t)
	tok, ps := f.login("alice")
	resp := f.do(req{method: "POST", path: "/auth/logout", cookie: tok, header: map[string]string{"Origin": f.srv.URL}})
	expect(t, resp, http.StatusNoContent)
	c := resp.cookie("sb_session")
	if c == nil || c.MaxAge >= 0 || c.Value != "" {
		t.Errorf("logout did not clear the cookie: %+v", c)
	}
	if f.exists(ps.ID) {
		t.Error("session exists after logout")
	}
	ev := f.events.waitFor(t, "deleted", func(ev sessionbridge.Event) bool {
		return ev.Type == sessionbridge.EventDeleted && ev.SessionID == ps.ID
	})
	if ev.Reason != sessionbridge.ReasonLogout {
		t.Errorf("deleted event reason %q, want logout", ev.Reason)
	}
	// The old cookie no longer works, and logging out again is harmless.
	expect(t, f.do(req{method: "GET", path: "/auth/session", cookie: tok}), http.StatusUnauthorized)
	expect(t, f.do(req{method: "POST", path: "/auth/logout"}), http.StatusNoContent)
}

func TestMiddlewareLoadsAndTouches(t *testing.T) {
	f := newFixture(t)
	s, tok := f.create("alice")
	var seen *sessionbridge.Session
	h := f.sessions.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, _ = FromContext(r.Context())
	}))
	serve := func(r *http.Request) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	withCookie := func(tok string) *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		r.AddCookie(&http.Cookie{Name: "sb_session", Value: tok})
		return r
	}

	serve(httptest.NewRequest("GET", "/", nil))
	if seen != nil {
		t.Fatal("session in the context of a request without credentials")
	}
	serve(withCookie(tok))
	if seen == nil || seen.ID != s.ID {
		t.Fatalf("context session %v, want %s", seen, s.ID)
	}
	if !seen.ExpiresAt.Equal(s.ExpiresAt) {
		t.Error("a request within the touch interval moved the deadline")
	}

	// After the touch interval a request moves the idle deadline.
	f.clock.Advance(2 * time.Minute)
	serve(withCookie(tok))
	want := f.clock.Now().Add(sessionbridge.DefaultIdleTimeout)
	if !seen.ExpiresAt.Equal(want) {
		t.Errorf("deadline after touch %v, want %v", seen.ExpiresAt, want)
	}
	stored, err := f.mgr.Get(context.Background(), s.ID)
	if err != nil || !stored.ExpiresAt.Equal(want) || !stored.LastSeenAt.Equal(f.clock.Now()) {
		t.Errorf("touch not stored: %+v, %v", stored, err)
	}
	f.events.waitFor(t, "touch", func(ev sessionbridge.Event) bool {
		return ev.Type == sessionbridge.EventUpdated && ev.SessionID == s.ID && ev.Updates == nil && ev.Source == sessionbridge.SourceHTTP
	})
}

func TestBadCookieClearedAndRequestProceeds(t *testing.T) {
	f := newFixture(t)
	s, _ := f.create("alice")
	wrongSecret := s.ID + "." + strings.Repeat("A", 43)
	_, expTok := f.create("bob")
	f.clock.Advance(sessionbridge.DefaultIdleTimeout + time.Second)
	for _, bad := range []string{"garbage", wrongSecret, expTok} {
		called := false
		h := f.sessions.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, ok := FromContext(r.Context())
			called = !ok
		}))
		r := httptest.NewRequest("GET", "/", nil)
		r.AddCookie(&http.Cookie{Name: "sb_session", Value: bad})
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if !called {
			t.Errorf("request with a bad cookie did not proceed unauthenticated")
		}
		cleared := false
		for _, c := range w.Result().Cookies() {
			cleared = cleared || (c.Name == "sb_session" && c.MaxAge < 0)
		}
		if !cleared {
			t.Errorf("bad cookie not cleared: %v", w.Header()["Set-Cookie"])
		}
	}
}

func TestSessionTokenHeader(t *testing.T) {
	f := newFixture(t)
	s, tok := f.create("alice")
	_, other := f.create("bob")

	resp := f.do(req{method: "GET", path: "/auth/session", header: map[string]string{"X-Session-Token": tok}})
	expect(t, resp, http.StatusOK)
	var ps sessionbridge.PublicSession
	resp.json(t, &ps)
	if ps.ID != s.ID {
		t.Fatalf("header session %s, want %s", ps.ID, s.ID)
	}
	// Same token in cookie and header is fine; different ones are refused.
	expect(t, f.do(req{method: "GET", path: "/auth/session", cookie: tok, header: map[string]string{"X-Session-Token": tok}}), http.StatusOK)
	resp = f.do(req{method: "GET", path: "/auth/session", cookie: other, header: map[string]string{"X-Session-Token": tok}})
	expect(t, resp, http.StatusUnauthorized)
	if code := resp.errorCode(t); code != CodeConflictingTokens {
		t.Errorf("code %q, want %q", code, CodeConflictingTokens)
	}
	// A bad header token is refused outright, and never echoed.
	resp = f.do(req{method: "GET", path: "/auth/session", header: map[string]string{"X-Session-Token": s.ID + ".bad"}})
	expect(t, resp, http.StatusUnauthorized)
	if code := resp.errorCode(t); code != CodeInvalidToken || strings.Contains(string(resp.body), s.ID) {
		t.Errorf("bad header answer %s", resp.body)
	}
	// An empty header counts as absent: the cookie decides, and the
	// cross-origin check applies.
	r, err := http.NewRequest("POST", f.srv.URL+"/auth/ws-ticket", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header["X-Session-Token"] = []string{""}
	r.Header.Set("Sec-Fetch-Site", "cross-site")
	r.AddCookie(&http.Cookie{Name: "sb_session", Value: tok})
	raw, err := f.srv.Client().Do(r)
	if err != nil {
		t.Fatal(err)
	}
	raw.Body.Close()
	if raw.StatusCode != http.StatusForbidden {
		t.Errorf("empty header with a cross-site cookie request: %d, want 403", raw.StatusCode)
	}
	// Header requests skip the cross-origin check: browsers cannot send the
	// header cross-origin without a preflight.
	resp = f.do(req{method: "POST", path: "/auth/ws-ticket", header: map[string]string{"X-Session-Token": tok, "Sec-Fetch-Site": "cross-site"}})
	expect(t, resp, http.StatusOK)
}

func TestRequireWithoutMiddleware(t *testing.T) {
	f := newFixture(t)
	_, tok := f.create("alice")
	h := f.sessions.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := FromContext(r.Context())
		io.WriteString(w, s.UserID)
	}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), CodeUnauthenticated) {
		t.Errorf("no session: %d %s", w.Code, w.Body)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.AddCookie(&http.Cookie{Name: "sb_session", Value: tok})
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK || w.Body.String() != "alice" {
		t.Errorf("with session: %d %s", w.Code, w.Body)
	}
}

func TestStoreUnavailable(t *testing.T) {
	f := newFixture(t)
	tok, _ := f.login("alice")
	f.store.down.Store(true)
	for _, q := range []req{
		{method: "GET", path: "/auth/session", cookie: tok},
		{method: "GET", path: "/auth/sessions", cookie: tok},
		{method: "POST", path: "/auth/logout", cookie: tok},
		{method: "POST", path: "/auth/login", body: `{"username":"alice","password":"alice-password"}`},
		{method: "GET", path: "/auth/session", header: map[string]string{"X-Session-Token": tok}},
		{method: "POST", path: "/api/v1/sessions", body: `{"user_id":"carol"}`, header: adminHeader()},
		{method: "GET", path: "/api/v1/users/alice/sessions", header: adminHeader()},
	} {
		resp := f.do(q)
		expect(t, resp, http.StatusServiceUnavailable)
		if code := resp.errorCode(t); code != CodeUnavailable {
			t.Errorf("%s %s: code %q", q.method, q.path, code)
		}
		if c := resp.cookie("sb_session"); c != nil {
			t.Errorf("%s %s: cookie changed while the store was down", q.method, q.path)
		}
	}
	// A public route still works, unauthenticated.
	h := f.sessions.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := FromContext(r.Context()); ok {
			t.Error("session in context while the store is down")
		}
		w.WriteHeader(http.StatusTeapot)
	}))
	r := httptest.NewRequest("GET", "/", nil)
	r.AddCookie(&http.Cookie{Name: "sb_session", Value: tok})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusTeapot {
		t.Errorf("public route answered %d", w.Code)
	}
	f.store.down.Store(false)
	expect(t, f.do(req{method: "GET", path: "/auth/session", cookie: tok}), http.StatusOK)
}

func TestLoginLogoutAsLibrary(t *testing.T) {
	f := newFixture(t)
	var token string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /in", func(w http.ResponseWriter, r *http.Request) {
		s, err := f.sessions.Login(w, r, "alice", json.RawMessage(`{"role":"admin"}`))
		if err != nil {
			t.Error(err)
			return
		}
		if got, ok := FromContext(r.Context()); !ok || got.ID != s.ID {
			t.Error("Login did not update the request's session")
		}
	})
	mux.HandleFunc("POST /out", func(w http.ResponseWriter, r *http.Request) {
		if err := f.sessions.Logout(w, r); err != nil {
			t.Error(err)
		}
		if _, ok := FromContext(r.Context()); ok {
			t.Error("session still in context after Logout")
		}
	})
	h := f.sessions.Middleware(mux)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/in", nil))
	for _, c := range w.Result().Cookies() {
		token = c.Value
	}
	s, err := f.mgr.Authenticate(context.Background(), token)
	if err != nil || string(s.Data) != `{"role":"admin"}` {
		t.Fatalf("library login: %v %s", err, s.Data)
	}
	r := httptest.NewRequest("POST", "/out", nil)
	r.AddCookie(&http.Cookie{Name: "sb_session", Value: token})
	h.ServeHTTP(httptest.NewRecorder(), r)
	if f.exists(s.ID) {
		t.Error("library logout left the session")
	}
}

// TestRotate: Rotate moves the request's session to a new ID with a new
// cookie, keeps its data, and the old token stops working.
func TestRotate(t *testing.T) {
	f := newFixture(t)
	var rotated *sessionbridge.Session
	h := f.sessions.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := f.sessions.Rotate(w, r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		if got, ok := FromContext(r.Context()); !ok || got.ID != s.ID {
			t.Error("Rotate did not update the request's session")
		}
		rotated = s
	}))
	old, oldToken, err := f.mgr.Create(context.Background(), sessionbridge.NewSession{UserID: "alice", Data: json.RawMessage(`{"role":"user"}`)}, sessionbridge.Change{})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("POST", "/", nil)
	r.AddCookie(&http.Cookie{Name: "sb_session", Value: oldToken})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if rotated == nil {
		t.Fatalf("rotate: %d %s", w.Code, w.Body)
	}
	var c *http.Cookie
	for _, ck := range w.Result().Cookies() {
		if ck.Name == "sb_session" {
			c = ck
		}
	}
	if c == nil || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.MaxAge <= 0 {
		t.Fatalf("rotated cookie %+v", c)
	}
	s, err := f.mgr.Authenticate(context.Background(), c.Value)
	if err != nil || s.ID != rotated.ID || s.ID == old.ID || s.UserID != "alice" || string(s.Data) != `{"role":"user"}` {
		t.Errorf("new token: %v %+v", err, s)
	}
	if _, err := f.mgr.Authenticate(context.Background(), oldToken); err == nil {
		t.Error("the old token still works after the rotation")
	}

	// Without a session there is nothing to rotate.
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/", nil))
	if w.Code != http.StatusNotFound || len(w.Result().Cookies()) != 0 {
		t.Errorf("rotate without a session: %d, cookies %v", w.Code, w.Result().Cookies())
	}
}

func TestSeveralSessionCookies(t *testing.T) {
	f := newFixture(t)
	s, tok := f.create("alice")
	_, other := f.create("mallory")
	get := func(h map[string]string, cookies ...string) response {
		r, err := http.NewRequest("GET", f.srv.URL+"/auth/session", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cookies {
			r.AddCookie(&http.Cookie{Name: "sb_session", Value: c})
		}
		for k, v := range h {
			r.Header.Set(k, v)
		}
		resp, err := f.srv.Client().Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return response{Response: resp, body: b}
	}
	// The same token twice is one credential.
	expect(t, get(nil, tok, tok), http.StatusOK)
	// Two different ones: nobody, and no cookie is touched.
	resp := get(nil, other, tok)
	expect(t, resp, http.StatusUnauthorized)
	if resp.cookie("sb_session") != nil {
		t.Error("a cookie was cleared on conflicting cookies")
	}
	if !f.exists(s.ID) {
		t.Error("conflicting cookies deleted a session")
	}
	resp = get(map[string]string{"X-Session-Token": tok}, tok, other)
	expect(t, resp, http.StatusUnauthorized)
	if code := resp.errorCode(t); code != CodeConflictingTokens {
		t.Errorf("header with conflicting cookies: %q", code)
	}
}
