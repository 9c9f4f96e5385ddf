package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/jwt/jwttest"
	"github.com/sessionbridge/sessionbridge/keys"
)

const testJWTSecret = "a-jwt-secret-for-tests-0123456789abcdef"

// welcomeData is the part of a welcome frame these tests look at.
type welcomeData struct {
	Auth      string   `json:"auth"`
	UserID    string   `json:"user_id"`
	Scopes    []string `json:"scopes"`
	ExpiresAt *string  `json:"expires_at"`
	Session   *struct {
		ID string `json:"id"`
	} `json:"session"`
}

// upgrade dials /ws with h and query and returns the HTTP status, the error
// code of a refusal, and the welcome of an accepted socket (closed at once).
func (r *running) upgrade(h http.Header, query string) (int, string, welcomeData) {
	r.t.Helper()
	u := "ws" + strings.TrimPrefix(r.url, "http") + "/ws"
	if query != "" {
		u += "?" + query
	}
	c, resp, err := websocket.DefaultDialer.Dial(u, h)
	if err != nil {
		if resp == nil {
			r.t.Fatalf("dial: %v", err)
		}
		defer resp.Body.Close()
		var body struct {
			Error string `json:"error"`
		}
		b, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(b, &body)
		return resp.StatusCode, body.Error, welcomeData{}
	}
	defer c.Close()
	var frame struct {
		Type string      `json:"type"`
		Data welcomeData `json:"data"`
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := c.ReadJSON(&frame); err != nil || frame.Type != "welcome" {
		r.t.Fatalf("welcome: %+v %v", frame, err)
	}
	return http.StatusSwitchingProtocols, "", frame.Data
}

// viaTicket asks POST /auth/ws-ticket with h (no cookie jar) and, when it is
// granted, opens a socket with the ticket: the welcome tells whom the HTTP
// door took the request for.
func (r *running) viaTicket(h http.Header) (int, string, welcomeData) {
	r.t.Helper()
	req, err := http.NewRequest("POST", r.url+"/auth/ws-ticket", nil)
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header = h.Clone()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error  string `json:"error"`
		Ticket string `json:"ticket"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &body); err != nil {
		r.t.Fatalf("ws-ticket body %q: %v", b, err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, body.Error, welcomeData{}
	}
	status, code, w := r.upgrade(nil, "ticket="+url.QueryEscape(body.Ticket))
	if status != http.StatusSwitchingProtocols {
		r.t.Fatalf("the ticket of the HTTP door was refused: %d %s", status, code)
	}
	return http.StatusOK, "", w
}

// session creates a session for user through the Manager and returns it and
// its token.
func (r *running) session(user string) (*sessionbridge.Session, string) {
	r.t.Helper()
	s, tok, err := r.srv.Manager().Create(context.Background(), sessionbridge.NewSession{UserID: user}, sessionbridge.Change{Source: sessionbridge.SourceAPI})
	if err != nil {
		r.t.Fatal(err)
	}
	return s, tok
}

// apiKey issues a key for user with scopes and returns it and its ID.
func (r *running) apiKey(user string, scopes ...string) (string, string) {
	r.t.Helper()
	key, k, err := r.srv.keys.Create(context.Background(), keys.NewKey{UserID: user, Name: "test key", Scopes: scopes})
	if err != nil {
		r.t.Fatal(err)
	}
	return key, k.ID
}

func jwtFor(t *testing.T, claims map[string]any) string {
	t.Helper()
	c := map[string]any{"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}
	for k, v := range claims {
		c[k] = v
	}
	return jwttest.HS256(t, []byte(testJWTSecret), c)
}

// TestCredentialsSameAtBothDoors runs one table of credentials against both
// doors of one server, the HTTP API (POST /auth/ws-ticket, which every user
// principal may call) and the WebSocket upgrade: the same precedence, the
// same conflict rule, the same principal. Where the doors differ by design,
// it is in the error code only: the HTTP door lets a request whose cookies
// alone are at fault proceed as no one (401 unauthenticated from the route),
// where the upgrade refuses with the reason.
func TestCredentialsSameAtBothDoors(t *testing.T) {
	r := start(t, Config{AdminToken: testAdminToken, JWT: JWTConfig{Secret: testJWTSecret}})
	alice, tok := r.session("alice")
	_, other := r.session("bob")
	key, _ := r.apiKey("svc", "ws:connect", "chat.**")
	plain := jwtFor(t, map[string]any{"sub": "carol", "scope": "ws:connect chat.read"})
	bound := jwtFor(t, map[string]any{"sub": "alice", "sid": alice.ID, "scope": "ws:connect"})
	expired := jwtFor(t, map[string]any{"sub": "carol", "exp": time.Now().Add(-time.Hour).Unix()})
	typo := key[:30] + string(key[30]^1) + key[31:]
	cookie := func(vals ...string) string {
		var parts []string
		for _, v := range vals {
			parts = append(parts, "sb_session="+v)
		}
		return strings.Join(parts, "; ")
	}

	type outcome struct {
		status           int
		httpCode, wsCode string
		auth, user       string
		session          bool
	}
	ok := func(auth, user string, session bool) outcome {
		return outcome{status: http.StatusOK, auth: auth, user: user, session: session}
	}
	refused := func(status int, httpCode, wsCode string) outcome {
		return outcome{status: status, httpCode: httpCode, wsCode: wsCode}
	}
	cases := []struct {
		name string
		h    map[string]string
		want outcome
	}{
		{"bearer session token", map[string]string{"Authorization": "Bearer " + tok}, ok("session", "alice", true)},
		{"X-Session-Token", map[string]string{"X-Session-Token": tok}, ok("session", "alice", true)},
		{"cookie", map[string]string{"Cookie": cookie(tok)}, ok("session", "alice", true)},
		{"jwt", map[string]string{"Authorization": "Bearer " + plain}, ok("jwt", "carol", false)},
		{"jwt bound to a session", map[string]string{"Authorization": "Bearer " + bound}, ok("jwt", "alice", true)},
		{"api key", map[string]string{"Authorization": "Bearer " + key}, ok("apikey", "svc", false)},
		{"bearer and the same header and cookie", map[string]string{"Authorization": "Bearer " + tok, "X-Session-Token": tok, "Cookie": cookie(tok)}, ok("session", "alice", true)},
		{"a Basic Authorization is not ours", map[string]string{"Authorization": "Basic YTpi", "Cookie": cookie(tok)}, ok("session", "alice", true)},
		{"bearer and another header", map[string]string{"Authorization": "Bearer " + tok, "X-Session-Token": other}, refused(401, "conflicting_credentials", "conflicting_credentials")},
		{"header and another cookie", map[string]string{"X-Session-Token": tok, "Cookie": cookie(other)}, refused(401, "conflicting_credentials", "conflicting_credentials")},
		{"api key and a cookie", map[string]string{"Authorization": "Bearer " + key, "Cookie": cookie(tok)}, refused(401, "conflicting_credentials", "conflicting_credentials")},
		{"two different cookies", map[string]string{"Cookie": cookie(tok, other)}, refused(401, "unauthenticated", "conflicting_credentials")},
		{"bad bearer", map[string]string{"Authorization": "Bearer " + tok + "x"}, refused(401, "invalid_token", "unauthorized")},
		{"bad cookie", map[string]string{"Cookie": cookie(tok + "x")}, refused(401, "unauthenticated", "unauthorized")},
		{"mistyped api key", map[string]string{"Authorization": "Bearer " + typo}, refused(401, "invalid_token", "unauthorized")},
		{"expired jwt", map[string]string{"Authorization": "Bearer " + expired}, refused(401, "invalid_token", "unauthorized")},
		{"no credentials", nil, refused(401, "unauthenticated", "unauthorized")},
		{"admin token", map[string]string{"Authorization": "Bearer " + testAdminToken}, refused(403, "forbidden", "forbidden")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{"Origin": {r.url}}
			for k, v := range tc.h {
				h.Set(k, v)
			}
			hs, hcode, hw := r.viaTicket(h)
			ws, wcode, ww := r.upgrade(h, "")
			if ws == http.StatusSwitchingProtocols {
				ws = http.StatusOK
			}
			if hs != tc.want.status || ws != tc.want.status {
				t.Fatalf("HTTP %d %s, upgrade %d %s; want %d at both doors", hs, hcode, ws, wcode, tc.want.status)
			}
			if hcode != tc.want.httpCode || wcode != tc.want.wsCode {
				t.Fatalf("codes: HTTP %q, upgrade %q; want %q, %q", hcode, wcode, tc.want.httpCode, tc.want.wsCode)
			}
			if tc.want.status != http.StatusOK {
				return
			}
			for door, w := range map[string]welcomeData{"HTTP": hw, "upgrade": ww} {
				if w.Auth != tc.want.auth || w.UserID != tc.want.user || (w.Session != nil) != tc.want.session {
					t.Errorf("%s door: welcome %+v, want %s %s session=%v", door, w, tc.want.auth, tc.want.user, tc.want.session)
				}
			}
		})
	}
}

// TestOwnOriginWithAllowedOrigins: a list of allowed origins adds to the
// server's own origin, it never shuts the server's own page out.
func TestOwnOriginWithAllowedOrigins(t *testing.T) {
	r := start(t, Config{AllowedOrigins: []string{"https://app.example.com", "https://*.example.org"}})
	_, tok := r.session("alice")
	ck := "sb_session=" + tok
	for _, o := range []string{r.url, "https://app.example.com", "https://a.example.org"} {
		if status, code, w := r.upgrade(http.Header{"Cookie": {ck}, "Origin": {o}}, ""); status != http.StatusSwitchingProtocols || w.UserID != "alice" {
			t.Errorf("cookie upgrade from %s: %d %s", o, status, code)
		}
	}
	if status, code, _ := r.upgrade(http.Header{"Cookie": {ck}, "Origin": {"https://evil.example"}}, ""); status != http.StatusForbidden || code != "origin_not_allowed" {
		t.Errorf("cookie upgrade from a foreign origin: %d %s", status, code)
	}
	// The same policy guards the state-changing cookie requests.
	for o, want := range map[string]int{r.url: http.StatusOK, "https://a.example.org": http.StatusOK, "https://evil.example": http.StatusForbidden} {
		resp, body := r.doBare("POST", "/auth/ws-ticket", "", map[string]string{"Cookie": ck, "Origin": o})
		if resp.StatusCode != want {
			t.Errorf("POST /auth/ws-ticket with the cookie from %s: %d %s, want %d", o, resp.StatusCode, body, want)
		}
	}
}

// syncBuffer collects log output written from handler goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestAPIKeys(t *testing.T) {
	var logs syncBuffer
	r := startLogged(t, Config{AdminToken: testAdminToken}, slog.New(slog.NewJSONHandler(&logs, nil)))
	ctx := context.Background()

	// On a socket: the key's user, scopes and expiry.
	key, id := r.apiKey("svc", "ws:connect", "chat.**", "!chat.admin")
	status, code, w := r.upgrade(http.Header{"Authorization": {"Bearer " + key}}, "")
	if status != http.StatusSwitchingProtocols || w.Auth != "apikey" || w.UserID != "svc" || w.Session != nil ||
		strings.Join(w.Scopes, " ") != "ws:connect chat.** !chat.admin" || w.ExpiresAt != nil {
		t.Fatalf("api key socket: %d %s %+v", status, code, w)
	}
	// On the user routes: a ticket yes, the session routes no.
	bearer := func(k string) map[string]string { return map[string]string{"Authorization": "Bearer " + k} }
	resp, body := r.doBare("POST", "/auth/ws-ticket", "", bearer(key))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ws-ticket with a key: %d %s", resp.StatusCode, body)
	}
	resp, body = r.doBare("GET", "/auth/session", "", bearer(key))
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `"session_required"`) {
		t.Fatalf("GET /auth/session with a key: %d %s", resp.StatusCode, body)
	}

	// On the admin routes: by admin scope.
	_, victim := r.session("victim")
	reader, readerID := r.apiKey("ops", "admin:read")
	writer, writerID := r.apiKey("ops", "admin:write")
	for _, c := range []struct {
		key, method, path string
		want              int
	}{
		{reader, "GET", "/api/v1/users/victim/sessions", http.StatusOK},
		{reader, "GET", "/api/v1/connections", http.StatusOK},
		{reader, "DELETE", "/api/v1/users/victim/sessions", http.StatusForbidden},
		{key, "GET", "/api/v1/connections", http.StatusForbidden},
		{writer, "GET", "/api/v1/connections", http.StatusForbidden},
		{writer, "DELETE", "/api/v1/users/victim/sessions", http.StatusOK},
		{testAdminToken, "GET", "/api/v1/connections", http.StatusOK},
	} {
		if resp, body := r.doBare(c.method, c.path, "", bearer(c.key)); resp.StatusCode != c.want {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, resp.StatusCode, body, c.want)
		}
	}
	if _, err := r.srv.Manager().Authenticate(ctx, victim); err == nil {
		t.Error("the admin:write key did not revoke the sessions")
	}
	// A session never calls the admin API, whatever its credential.
	_, tok := r.session("alice")
	if resp, _ := r.doBare("GET", "/api/v1/connections", "", map[string]string{"X-Session-Token": tok}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("session on the admin API: %d", resp.StatusCode)
	}
	out := logs.String()
	var revokedByKey, refusedByKey bool
	for line := range strings.SplitSeq(out, "\n") {
		revokedByKey = revokedByKey || strings.Contains(line, `"event":"session_revoked"`) && strings.Contains(line, `"key_id":"`+writerID+`"`) && strings.Contains(line, `"method":"apikey"`)
		refusedByKey = refusedByKey || strings.Contains(line, `"event":"authz_fail"`) && strings.Contains(line, `"key_id":"`+readerID+`"`)
	}
	if !revokedByKey || !refusedByKey {
		t.Errorf("admin actions not audited by key ID (revoked %v, refused %v):\n%s", revokedByKey, refusedByKey, out)
	}
	for _, secret := range []string{key, key[len(key)-49:], reader, reader[len(reader)-49:], writer, writer[len(writer)-49:], testAdminToken} {
		if strings.Contains(out, secret) {
			t.Fatalf("a secret reached the log")
		}
	}

	// A revoked or expired key is refused at both doors.
	if _, err := r.srv.keys.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	expiredKey, expiredID, hash, err := sessionbridge.NewAPIKey("svc")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := r.srv.manager.Backend().Keys.CreateKey(ctx, &sessionbridge.APIKey{ID: expiredID, UserID: "svc", Name: "old", SecretHash: hash,
		CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour), Version: 1}); err != nil {
		t.Fatal(err)
	}
	for name, k := range map[string]string{"revoked": key, "expired": expiredKey} {
		if status, code, _ := r.upgrade(http.Header{"Authorization": {"Bearer " + k}}, ""); status != http.StatusUnauthorized || code != "unauthorized" {
			t.Errorf("%s key on /ws: %d %s", name, status, code)
		}
		if resp, body := r.doBare("POST", "/auth/ws-ticket", "", bearer(k)); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"invalid_token"`) {
			t.Errorf("%s key on HTTP: %d %s", name, resp.StatusCode, body)
		}
	}
}

func TestJWTOnHTTPRoutes(t *testing.T) {
	r := start(t, Config{JWT: JWTConfig{Secret: testJWTSecret}})
	s, _ := r.session("alice")
	bearer := func(claims map[string]any) map[string]string {
		return map[string]string{"Authorization": "Bearer " + jwtFor(t, claims)}
	}
	bound := bearer(map[string]any{"sub": "alice", "sid": s.ID})
	resp, body := r.doBare("GET", "/auth/session", "", bound)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"id":"`+s.ID+`"`) {
		t.Fatalf("GET /auth/session with a bound JWT: %d %s", resp.StatusCode, body)
	}
	patch := map[string]string{"Content-Type": "application/merge-patch+json"}
	for k, v := range bound {
		patch[k] = v
	}
	resp, body = r.doBare("PATCH", "/auth/session", `{"theme":"dark"}`, patch)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"theme":"dark"`) {
		t.Fatalf("PATCH /auth/session with a bound JWT: %d %s", resp.StatusCode, body)
	}
	resp, body = r.doBare("GET", "/auth/sessions", "", bound)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, s.ID) {
		t.Fatalf("GET /auth/sessions with a bound JWT: %d %s", resp.StatusCode, body)
	}
	// A JWT of another user naming the session is refused.
	if resp, body := r.doBare("GET", "/auth/session", "", bearer(map[string]any{"sub": "mallory", "sid": s.ID})); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("JWT of another user for the session: %d %s", resp.StatusCode, body)
	}
	// Without sid: a ticket, but no session routes; admin routes need an
	// admin scope.
	plain := bearer(map[string]any{"sub": "carol", "scope": "chat.read"})
	if resp, body := r.doBare("POST", "/auth/ws-ticket", "", plain); resp.StatusCode != http.StatusOK {
		t.Fatalf("ws-ticket with a JWT: %d %s", resp.StatusCode, body)
	}
	if resp, body := r.doBare("GET", "/auth/session", "", plain); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "session_required") {
		t.Fatalf("GET /auth/session with a JWT without sid: %d %s", resp.StatusCode, body)
	}
	if resp, _ := r.doBare("GET", "/api/v1/connections", "", plain); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("admin route with a JWT without admin scope: %d", resp.StatusCode)
	}
	if resp, body := r.doBare("GET", "/api/v1/connections", "", bearer(map[string]any{"sub": "ops", "scope": "admin:read"})); resp.StatusCode != http.StatusOK {
		t.Fatalf("admin route with an admin:read JWT: %d %s", resp.StatusCode, body)
	}
}
