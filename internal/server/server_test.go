package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/sessionbridge/sessionbridge/auth"
	"github.com/sessionbridge/sessionbridge/users"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const demoPassword = "demo-password-for-tests"

// running is a server serving on a loopback port.
type running struct {
	t      *testing.T
	srv    *Server
	url    string
	cancel context.CancelFunc
	done   chan error
	client *http.Client
}

// start builds a server from cfg, lets prepare adjust it, and runs it on a
// loopback port until the test ends.
func start(t *testing.T, cfg Config, prepare ...func(*Server)) *running {
	t.Helper()
	return startLogged(t, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), prepare...)
}

// startLogged is start with the server logging to logger.
func startLogged(t *testing.T, cfg Config, logger *slog.Logger, prepare ...func(*Server)) *running {
	t.Helper()
	if cfg.UsersFile == "" {
		cfg.UsersFile = filepath.Join(t.TempDir(), "users.json")
	}
	if cfg.DemoPassword == "" {
		cfg.DemoPassword = demoPassword
	}
	cfg.InsecureCookies = true
	srv, err := New(context.Background(), cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range prepare {
		p(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: t, srv: srv, url: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	jar, _ := cookiejar.New(nil)
	r.client = &http.Client{Jar: jar, Timeout: 10 * time.Second}
	go func() { r.done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() {
		r.stop()
		srv.Close()
		r.client.CloseIdleConnections()
	})
	r.waitHealthy()
	return r
}

// stop drains the server and returns Run's result.
func (r *running) stop() error {
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(20 * time.Second):
		r.t.Fatal("Run did not return within 20s of cancel")
		return nil
	}
}

// eventually polls cond every few milliseconds until it holds, failing the
// test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s: not within %v", what, timeout)
		}
	}
}

func (r *running) waitHealthy() {
	r.t.Helper()
	eventually(r.t, 10*time.Second, "server healthy", func() bool {
		resp, err := http.Get(r.url + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func (r *running) do(method, path, body string, header map[string]string) (*http.Response, string) {
	r.t.Helper()
	return r.doWith(r.client, method, path, body, header)
}

// doBare is do without the client's cookies, as a program calling the
// admin API sends its requests: a cookie beside a bearer credential of
// another principal is a conflict.
func (r *running) doBare(method, path, body string, header map[string]string) (*http.Response, string) {
	r.t.Helper()
	return r.doWith(&http.Client{Timeout: 10 * time.Second}, method, path, body, header)
}

func (r *running) doWith(client *http.Client, method, path, body string, header map[string]string) (*http.Response, string) {
	r.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, r.url+path, rd)
	if err != nil {
		r.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// loginDemo signs the demo user in and returns the session cookie.
func (r *running) loginDemo() *http.Cookie {
	r.t.Helper()
	resp, body := r.do("POST", "/auth/login", `{"username":"demo","password":"`+demoPassword+`"}`, nil)
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "sb_session" {
			return c
		}
	}
	r.t.Fatal("login set no cookie")
	return nil
}

// dial opens a WebSocket with the given headers and reads the welcome frame.
func (r *running) dial(h http.Header) *websocket.Conn {
	r.t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(r.url, "http")+"/ws", h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		r.t.Fatalf("dial: %v (status %d)", err, status)
	}
	r.t.Cleanup(func() { c.Close() })
	var welcome struct {
		Type string `json:"type"`
		Data struct {
			UserID string `json:"user_id"`
		} `json:"data"`
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := c.ReadJSON(&welcome); err != nil {
		r.t.Fatalf("reading welcome: %v", err)
	}
	if welcome.Type != "welcome" {
		r.t.Fatalf("first frame %q, want welcome", welcome.Type)
	}
	return c
}

// closeCode reads until the socket closes and returns the close code and text.
func closeCode(t *testing.T, c *websocket.Conn) (int, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Text
			}
			t.Fatalf("socket ended without a close frame: %v", err)
		}
	}
}

func TestServeLoginSocketLogout(t *testing.T) {
	r := start(t, Config{})
	cookie := r.loginDemo()

	resp, body := r.do("GET", "/auth/session", "", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"user_id":"demo"`) {
		t.Fatalf("session: %d %s", resp.StatusCode, body)
	}
	ws := r.dial(http.Header{"Cookie": {cookie.String()}, "Origin": {r.url}})

	// Another origin may not use the cookie.
	_, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(r.url, "http")+"/ws", http.Header{"Cookie": {cookie.String()}, "Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin upgrade: %v %v", err, resp)
	}

	resp, body = r.do("POST", "/auth/logout", "", map[string]string{"Origin": r.url})
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %d %s", resp.StatusCode, body)
	}
	if code, reason := closeCode(t, ws); code != 4401 || reason != "session_revoked" {
		t.Errorf("socket closed with %d %q, want 4401 session_revoked", code, reason)
	}
	if err := r.stop(); err != nil {
		t.Errorf("Run after drain: %v", err)
	}
}

func TestOperationalRoutes(t *testing.T) {
	r := start(t, Config{})
	var resp *http.Response
	var body string
	r.loginDemo()
	resp, body = r.do("GET", "/metrics", "", nil)
	for _, want := range []string{"go_goroutines", "process_resident_memory_bytes", `sessionbridge_session_changes_total{type="created"} 1`} {
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s (status %d)", want, resp.StatusCode)
		}
	}
	resp, _ = r.do("GET", "/readyz", "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz %d", resp.StatusCode)
	}
	resp, body = r.do("GET", "/", "", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(strings.ToLower(body), "<html") {
		t.Errorf("dashboard: %d %.100s", resp.StatusCode, body)
	}
	// Without an admin token the admin API still takes API keys with an
	// admin scope, so it answers, and refuses anything else.
	resp, _ = r.doBare("POST", "/api/v1/sessions", `{"user_id":"u"}`, map[string]string{"Authorization": "Bearer x"})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("admin API without token: %d", resp.StatusCode)
	}
}

func TestAdminSessionOverSocket(t *testing.T) {
	r := start(t, Config{AdminToken: "tok"})
	admin := map[string]string{"Authorization": "Bearer tok"}
	resp, body := r.do("POST", "/api/v1/sessions", `{"user_id":"u1","data":{"a":1}}`, admin)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	tok := between(body, `"token":"`, `"`)
	id := between(body, `"id":"`, `"`)
	ws := r.dial(http.Header{"X-Session-Token": {tok}})

	resp, body = r.do("PATCH", "/api/v1/sessions/"+id, `{"data":{"a":2}}`, admin)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("patch: %d %s", resp.StatusCode, body)
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var frame struct {
		Type string `json:"type"`
	}
	if err := ws.ReadJSON(&frame); err != nil || frame.Type != "session.updated" {
		t.Fatalf("after admin patch: %q %v", frame.Type, err)
	}

	resp, body = r.do("GET", "/api/v1/connections?user_id=u1", "", admin)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"session_id":"`+id+`"`) {
		t.Errorf("connections: %d %s", resp.StatusCode, body)
	}
	resp, body = r.do("GET", "/api/v1/users/u1/sessions", "", admin)
	if !strings.Contains(body, `"connections":1`) {
		t.Errorf("user sessions without the live count: %s", body)
	}

	resp, _ = r.do("POST", "/api/v1/publish", `{"user_id":"u1","data":{"hello":"world"}}`, admin)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("publish: %d", resp.StatusCode)
	}
	_, msg, err := ws.ReadMessage()
	if err != nil || !strings.Contains(string(msg), `"type":"message"`) || !strings.Contains(string(msg), `"hello":"world"`) {
		t.Fatalf("published message: %s %v", msg, err)
	}

	resp, _ = r.do("DELETE", "/api/v1/users/u1/sessions", "", admin)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("delete user sessions: %d", resp.StatusCode)
	}
	if code, reason := closeCode(t, ws); code != 4401 || reason != "session_revoked" {
		t.Errorf("closed %d %q", code, reason)
	}
}

func between(s, from, to string) string {
	_, rest, ok := strings.Cut(s, from)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, to)
	return v
}

func TestDrainClosesSocketsWith1001(t *testing.T) {
	r := start(t, Config{ShutdownGrace: 5 * time.Second})
	cookie := r.loginDemo()
	ws := r.dial(http.Header{"Cookie": {cookie.String()}, "Origin": {r.url}})
	got := make(chan [2]any, 1)
	go func() {
		code, reason := closeCode(t, ws)
		got <- [2]any{code, reason}
	}()
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	select {
	case c := <-got:
		if c[0] != 1001 || c[1] != "server_shutdown" {
			t.Errorf("closed with %v, want 1001 server_shutdown", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("socket not closed by the drain")
	}
	if _, err := http.Get(r.url + "/healthz"); err == nil {
		t.Error("still accepting after the drain")
	}
}

func TestExpiryClosesSocket(t *testing.T) {
	r := start(t, Config{IdleTimeout: 500 * time.Millisecond, ExpiryWarning: -1, ExpiryInterval: 50 * time.Millisecond})
	cookie := r.loginDemo()
	ws := r.dial(http.Header{"Cookie": {cookie.String()}, "Origin": {r.url}})
	if code, reason := closeCode(t, ws); code != 4401 || reason != "session_expired" {
		t.Errorf("closed %d %q, want 4401 session_expired", code, reason)
	}
	resp, _ := r.do("GET", "/auth/session", "", nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("expired session answered %d", resp.StatusCode)
	}
}

func TestUsersFilePickedUpWhileRunning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.json")
	// Look at the file on every login, so that one login shows the change.
	r := start(t, Config{UsersFile: path}, func(s *Server) { s.users.checkEvery = 0 })
	if r.srv.UserCount() != 1 {
		t.Fatalf("user count %d, want only demo", r.srv.UserCount())
	}
	f, err := users.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	f.BcryptCost = 4 // the cheapest cost keeps the race-detector build quick
	if err := f.Add("alice", "alice-password", users.Bcrypt); err != nil {
		t.Fatal(err)
	}
	if err := f.Save(); err != nil {
		t.Fatal(err)
	}
	resp, body := r.do("POST", "/auth/login", `{"username":"alice","password":"alice-password"}`, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login of a user added while running: %d %s", resp.StatusCode, body)
	}
	if r.srv.UserCount() != 2 {
		t.Errorf("user count %d after reload, want 2", r.srv.UserCount())
	}
	resp, _ = r.do("POST", "/auth/login", `{"username":"alice","password":"wrong-password"}`, nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong password: %d", resp.StatusCode)
	}
	// A file broken by hand keeps the users already loaded.
	if err := os.WriteFile(path, []byte("{broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	resp, _ = r.do("POST", "/auth/login", `{"username":"alice","password":"alice-password"}`, nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("login after the file broke: %d", resp.StatusCode)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	users := filepath.Join(t.TempDir(), "users.json")
	for name, cfg := range map[string]Config{
		"proxy":  {TrustedProxies: []string{"not-an-ip"}},
		"origin": {AllowedOrigins: []string{"app.example.com"}},
		"path":   {AllowedOrigins: []string{"https://app.example.com/path"}},
		"tls":    {TLSCertFile: "cert.pem"},
		"jwt":    {JWT: JWTConfig{Secret: "short"}},
		"admin":  {AdminToken: "an-admin-token-long-enough\n"},
	} {
		cfg.UsersFile = users
		if s, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler)); err == nil {
			s.Close()
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

// TestRedisURLNeverEchoed: a Redis URL may hold a password, so an error
// about a malformed one must not repeat it; serve prints New's error.
func TestRedisURLNeverEchoed(t *testing.T) {
	users := filepath.Join(t.TempDir(), "users.json")
	for _, u := range []string{
		"redis://:s3cret-pw%zz@127.0.0.1:1/0",
		"redis://:s3cret-pw@127.0.0.1:1 /0",
		"redis://user:s3cret-pw@[::1/0",
		"redis://:s3cret\"pw\x01%zz@127.0.0.1:1/0",
	} {
		s, err := New(context.Background(), Config{UsersFile: users, RedisURL: u}, slog.New(slog.DiscardHandler))
		if err == nil {
			s.Close()
			t.Errorf("New accepted the malformed Redis URL %q", u)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error shows the Redis password: %v", err)
		}
	}
}

// TestStalledBodyCutOff: a client that stops sending in the middle of a
// request body is cut off after the read timeout, while a WebSocket, whose
// deadline the upgrade clears, outlives it.
func TestStalledBodyCutOff(t *testing.T) {
	const timeout = 500 * time.Millisecond
	r := start(t, Config{ReadTimeout: timeout})
	ws := r.dial(http.Header{"Cookie": {r.loginDemo().String()}, "Origin": {r.url}})

	conn, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user"); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("the stalled request was not cut off: %v", err)
	}

	// The socket still answers well past the read timeout.
	for start := time.Now(); time.Since(start) < 2*timeout; {
		if err := ws.WriteJSON(map[string]string{"type": "session.get", "id": "1"}); err != nil {
			t.Fatalf("socket write after %v: %v", time.Since(start), err)
		}
		var frame struct {
			Type string `json:"type"`
		}
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := ws.ReadJSON(&frame); err != nil {
			t.Fatalf("socket read after %v: %v", time.Since(start), err)
		}
	}
}

func TestNodeIDAndCheckOrigin(t *testing.T) {
	users := filepath.Join(t.TempDir(), "users.json")
	named, err := New(context.Background(), Config{UsersFile: users, NodeID: "node-7"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer named.Close()
	if named.NodeID() != "node-7" || named.Manager().NodeID() != "node-7" {
		t.Errorf("configured node ID: server %q, manager %q", named.NodeID(), named.Manager().NodeID())
	}
	a, err := New(context.Background(), Config{UsersFile: users}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(context.Background(), Config{UsersFile: users}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// The one default: the Manager's, which every part of the node reads.
	if a.NodeID() == b.NodeID() || !strings.Contains(a.NodeID(), "-") || a.NodeID() != a.Manager().NodeID() {
		t.Errorf("default node IDs %q %q (manager %q)", a.NodeID(), b.NodeID(), a.Manager().NodeID())
	}
	for o, ok := range map[string]bool{
		"https://app.example.com": true, "http://localhost:3000": true, "https://*.example.com": true,
		"app.example.com": false, "ftp://x": false, "https://": false, "https://a/b": false, "https://u@a": false,
	} {
		if _, err := auth.ParseOrigins([]string{o}); (err == nil) != ok {
			t.Errorf("ParseOrigins(%q) = %v", o, err)
		}
	}
}

// TestSessionTokenFromAdminAPIAsCookie follows the gateway-mode flow: an app
// creates a session through the admin API and hands the token to the browser
// as the cookie, which then works for HTTP and WebSocket.
func TestSessionTokenFromAdminAPIAsCookie(t *testing.T) {
	r := start(t, Config{AdminToken: "tok"})
	_, body := r.do("POST", "/api/v1/sessions", `{"user_id":"u2"}`, map[string]string{"Authorization": "Bearer tok"})
	tok := between(body, `"token":"`, `"`)
	u, _ := url.Parse(r.url)
	r.client.Jar.SetCookies(u, []*http.Cookie{{Name: "sb_session", Value: tok, Path: "/"}})
	resp, body := r.do("GET", "/auth/session", "", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"user_id":"u2"`) {
		t.Fatalf("cookie from the admin API: %d %s", resp.StatusCode, body)
	}
	r.dial(http.Header{"Cookie": {(&http.Cookie{Name: "sb_session", Value: tok}).String()}, "Origin": {r.url}})
	if n := r.srv.Gateway().Len(); n != 1 {
		t.Errorf("gateway has %d connections, want 1", n)
	}
}

// selfSigned writes a certificate and key for 127.0.0.1 into dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sessionbridge test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	srv, err := New(context.Background(), Config{
		UsersFile: filepath.Join(dir, "users.json"), DemoPassword: demoPassword,
		TLSCertFile: certFile, TLSKeyFile: keyFile,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	base := "https://" + ln.Addr().String()
	var resp *http.Response
	eventually(t, 10*time.Second, "TLS login", func() bool {
		resp, err = client.Post(base+"/auth/login", "application/json", strings.NewReader(`{"username":"demo","password":"`+demoPassword+`"}`))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	if resp.StatusCode != http.StatusOK || len(resp.Cookies()) != 1 || !resp.Cookies()[0].Secure {
		t.Errorf("login over TLS: %d %v", resp.StatusCode, resp.Cookies())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestServeFailureStillDrains(t *testing.T) {
	dir := t.TempDir()
	srv, err := New(context.Background(), Config{
		UsersFile: filepath.Join(dir, "users.json"),
		// Files that do not exist: ServeTLS fails at once.
		TLSCertFile: filepath.Join(dir, "missing-cert.pem"), TLSKeyFile: filepath.Join(dir, "missing-key.pem"),
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background(), ln) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "serving") {
			t.Errorf("Run with a missing certificate: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after serving failed")
	}
}
