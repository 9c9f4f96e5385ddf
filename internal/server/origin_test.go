package server

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestAllowedOriginsKeepOwnOrigin: with --allowed-origins set, the server's
// own page (the dashboard at /) still opens its socket with the cookie and
// asks for tickets, besides the listed origins; other origins are refused.
func TestAllowedOriginsKeepOwnOrigin(t *testing.T) {
	r := start(t, Config{AllowedOrigins: []string{"https://app.example.com", "https://*.example.org"}})
	cookie := r.loginDemo()
	withCookie := func(origin string) http.Header {
		return http.Header{"Cookie": {cookie.String()}, "Origin": {origin}}
	}
	r.dial(withCookie(r.url))
	r.dial(withCookie("https://app.example.com"))
	r.dial(withCookie("https://a.example.org"))
	for _, o := range []string{"https://evil.example", "http://app.example.com", "http://127.0.0.1:1"} {
		if status := r.dialStatus(withCookie(o)); status != http.StatusForbidden {
			t.Errorf("cookie upgrade from %s: status %d, want 403", o, status)
		}
	}

	// The page's other way in: a ticket, asked for over HTTP from the own
	// origin and redeemed with the own origin present.
	resp, body := r.do("POST", "/auth/ws-ticket", "", map[string]string{"Origin": r.url})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ticket from the own origin: %d %s", resp.StatusCode, body)
	}
	ticket := strings.Split(strings.Split(body, `"ticket":"`)[1], `"`)[0]
	c, resp2, err := websocket.DefaultDialer.Dial(r.wsURL()+"?ticket="+ticket, http.Header{"Origin": {r.url}})
	if err != nil {
		t.Fatalf("ticket upgrade from the own origin: %v %v", err, resp2)
	}
	c.Close()
	if resp, _ := r.do("POST", "/auth/ws-ticket", "", map[string]string{"Origin": "https://evil.example"}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("ticket from a foreign origin: %d, want 403", resp.StatusCode)
	}
}

// TestOwnOriginSchemeOverTLS: over TLS the server's own origin is https; a
// page claiming the same host over plain http is not it.
func TestOwnOriginSchemeOverTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	srv, err := New(context.Background(), Config{
		UsersFile: filepath.Join(dir, "users.json"), DemoPassword: demoPassword,
		TLSCertFile: certFile, TLSKeyFile: keyFile, AllowedOrigins: []string{"https://app.example.com"},
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
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	host := ln.Addr().String()
	var resp *http.Response
	eventually(t, 10*time.Second, "TLS login", func() bool {
		resp, err = client.Post("https://"+host+"/auth/login", "application/json", strings.NewReader(`{"username":"demo","password":"`+demoPassword+`"}`))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	if resp.StatusCode != http.StatusOK || len(resp.Cookies()) != 1 {
		t.Fatalf("login over TLS: %d", resp.StatusCode)
	}
	cookie := resp.Cookies()[0]
	dialer := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 10 * time.Second}
	dial := func(origin string) int {
		c, resp, err := dialer.Dial("wss://"+host+"/ws", http.Header{"Cookie": {cookie.Name + "=" + cookie.Value}, "Origin": {origin}})
		if err == nil {
			c.Close()
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			t.Fatalf("dial from %s: %v", origin, err)
		}
		return resp.StatusCode
	}
	if status := dial("https://" + host); status != http.StatusSwitchingProtocols {
		t.Errorf("own https origin: status %d, want 101", status)
	}
	if status := dial("http://" + host); status != http.StatusForbidden {
		t.Errorf("same host over plain http: status %d, want 403", status)
	}
}

// wsURL is the server's /ws address.
func (r *running) wsURL() string { return "ws" + strings.TrimPrefix(r.url, "http") + "/ws" }

// dialStatus tries an upgrade with h and returns the HTTP status: 101 when it
// succeeded.
func (r *running) dialStatus(h http.Header) int {
	r.t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(r.wsURL(), h)
	if err == nil {
		c.Close()
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		r.t.Fatalf("dial: %v", err)
	}
	return resp.StatusCode
}
