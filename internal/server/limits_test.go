package server

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

func bearerHeader(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// The rules of the configuration hold at the upgrade; a key created with
// its own limits through the admin API gets them.
func TestRateLimitsAtTheUpgrade(t *testing.T) {
	r := start(t, Config{AdminToken: keysAdminToken, Limits: sessionbridge.Limits{ConnectsPerMinute: 100, MaxConnections: 1}})
	_, tok := r.session("alice")
	c := r.dial(bearerHeader(tok))
	if status, code, _ := r.upgrade(bearerHeader(tok), ""); status != http.StatusTooManyRequests || code != "too_many_connections" {
		t.Fatalf("second socket of a user with max_connections 1: %d %s", status, code)
	}
	c.Close()
	k := r.issue("POST", "/api/v1/keys", `{"user_id":"bob","name":"ci","scopes":["**"],"limits":{"max_connections":2}}`, adminAuth())
	var socks []interface{ Close() error }
	for range 2 {
		socks = append(socks, r.dial(bearerHeader(k.Key)))
	}
	if status, code, _ := r.upgrade(bearerHeader(k.Key), ""); status != http.StatusTooManyRequests || code != "too_many_connections" {
		t.Fatalf("third socket of a key with max_connections 2: %d %s", status, code)
	}
	for _, s := range socks {
		s.Close()
	}
	// Limits that do not validate are refused at key creation.
	if st := r.status("POST", "/api/v1/keys", `{"user_id":"bob","name":"bad","scopes":["**"],"limits":{"dry_run":["nope"]}}`, adminAuth()); st != http.StatusBadRequest {
		t.Fatalf("key with an unknown dry-run rule: %d", st)
	}
}

func TestLoginRateOfTheServer(t *testing.T) {
	r := start(t, Config{LoginPerMinute: 2})
	body := `{"username":"demo","password":"wrong"}`
	for range 2 {
		if resp, _ := r.doBare("POST", "/auth/login", body, map[string]string{"Content-Type": "application/json"}); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong password: %d", resp.StatusCode)
		}
	}
	resp, _ := r.doBare("POST", "/auth/login", body, map[string]string{"Content-Type": "application/json"})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("RateLimit-Policy") != `"login_per_minute";q=2;w=60` {
		t.Fatalf("third sign-in: %d %v", resp.StatusCode, resp.Header)
	}
	_, metrics := r.do("GET", "/metrics", "", nil)
	if !strings.Contains(metrics, `sessionbridge_rate_limited_total{result="refused",rule="login_per_minute"} 1`) {
		t.Fatal("the refusal is not in /metrics")
	}
}

// With Redis away, the cluster rules fall back to this node's share: never
// unlimited, never a refusal of everything. JWTs authenticate without
// Redis, so the upgrade reaches the limits.
func TestRateLimitsWhileRedisIsAway(t *testing.T) {
	tok := jwtFor(t, map[string]any{"sub": "alice", "scope": "**"})
	t.Run("connects_per_minute", func(t *testing.T) {
		srv := redistest.Start(t)
		r := start(t, Config{RedisURL: srv.URL(), JWT: JWTConfig{Secret: testJWTSecret}, Limits: sessionbridge.Limits{ConnectsPerMinute: 3}})
		srv.Stop()
		// The node is alone: its share is the whole limit.
		admitted, refused := 0, 0
		for range 5 {
			switch status, code, _ := r.upgrade(bearerHeader(tok), ""); {
			case status == http.StatusSwitchingProtocols:
				admitted++
			case status == http.StatusTooManyRequests && code == "rate_limited":
				refused++
			default:
				t.Fatalf("upgrade with Redis away: %d %s", status, code)
			}
		}
		if admitted != 3 || refused != 2 {
			t.Fatalf("with Redis away %d admitted and %d refused, want 3 and 2", admitted, refused)
		}
		_, metrics := r.do("GET", "/metrics", "", nil)
		if !strings.Contains(metrics, `sessionbridge_rate_limited_total{result="fallback",rule="connects_per_minute"} 5`) {
			t.Fatal("fallback decisions not counted")
		}
	})
	t.Run("max_connections", func(t *testing.T) {
		srv := redistest.Start(t)
		r := start(t, Config{RedisURL: srv.URL(), JWT: JWTConfig{Secret: testJWTSecret}, Limits: sessionbridge.Limits{MaxConnections: 2}})
		srv.Stop()
		a := r.dial(bearerHeader(tok))
		r.dial(bearerHeader(tok))
		if status, code, _ := r.upgrade(bearerHeader(tok), ""); status != http.StatusTooManyRequests || code != "too_many_connections" {
			t.Fatalf("third socket with Redis away: %d %s", status, code)
		}
		a.Close()
		eventually(t, 10*time.Second, "a slot freed locally", func() bool {
			status, _, _ := r.upgrade(bearerHeader(tok), "")
			return status == http.StatusSwitchingProtocols
		})
	})
}
