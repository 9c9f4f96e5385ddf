package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

const testAdminToken = "durability-admin-token-0123456789"

// TestRevokedSessionStaysRevokedAfterRedisRestart runs two servers on one
// Redis: a session is signed in on A and has a socket on B, the session is
// revoked (logout on A, admin delete on B, or delete-all-of-user on A), and
// Redis is killed and restarted from what is on disk, which still holds the
// session: an RDB snapshot taken before the revocation, or an AOF
// (appendfsync everysec) whose entry of the revocation was lost, as a
// machine crash loses the last second. The token must not authenticate
// again on either server, over HTTP or WebSocket.
func TestRevokedSessionStaysRevokedAfterRedisRestart(t *testing.T) {
	for _, persistence := range []string{"rdb", "aof"} {
		for _, how := range []string{"logout", "admin-delete", "delete-all-of-user"} {
			t.Run(persistence+"/"+how, func(t *testing.T) {
				testRevokedAfterRestart(t, persistence, how)
			})
		}
	}
}

func testRevokedAfterRestart(t *testing.T, persistence, how string) {
	args := redistest.RDBSnapshots()
	if persistence == "aof" {
		args = redistest.AOF("everysec")
	}
	redis := redistest.Start(t, args...)
	cfg := Config{RedisURL: redis.URL(), AdminToken: testAdminToken, SweepInterval: time.Hour}
	a, b := start(t, withNode(cfg, "node-a")), start(t, withNode(cfg, "node-b"))

	tok := a.loginDemo().Value
	ws := b.dial(http.Header{"X-Session-Token": {tok}})
	var id string
	if _, body := a.do("GET", "/auth/session", "", nil); !jsonField(body, "id", &id) {
		t.Fatalf("GET /auth/session: %s", body)
	}
	var disk redistest.Disk
	if persistence == "rdb" {
		redis.MustDo("SAVE")
	} else {
		eventually(t, 10*time.Second, "the session in the AOF", func() bool { return aofHas(redis, id) })
		disk = redis.CopyDisk()
	}

	admin := map[string]string{"Authorization": "Bearer " + testAdminToken}
	var resp *http.Response
	var body string
	switch how {
	case "logout":
		resp, body = a.do("POST", "/auth/logout", "", map[string]string{"Origin": a.url})
	case "admin-delete":
		resp, body = b.do("DELETE", "/api/v1/sessions/"+id, "", admin)
	case "delete-all-of-user":
		resp, body = a.doBare("DELETE", "/api/v1/users/demo/sessions", "", admin)
	}
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s: %d %s", how, resp.StatusCode, body)
	}
	// B closed its socket: it has seen the revocation.
	if code, reason := closeCode(t, ws); code != 4401 || reason != "session_revoked" {
		t.Fatalf("socket closed with %d %q, want 4401 session_revoked", code, reason)
	}

	if persistence == "rdb" {
		redis.RestartKeepingData()
	} else {
		redis.RestartFromDisk(disk)
	}
	for _, r := range []*running{a, b} {
		r.refusesAfterRestart(tok)
	}
	var ready struct {
		Status      string `json:"status"`
		Persistence struct {
			Mode    string `json:"mode"`
			Durable bool   `json:"durable"`
			Risk    string `json:"risk"`
		} `json:"redis_persistence"`
	}
	resp, body = a.do("GET", "/readyz", "", nil)
	durable := persistence == "aof"
	if err := json.Unmarshal([]byte(body), &ready); err != nil || resp.StatusCode != http.StatusOK || ready.Status != "ready" ||
		ready.Persistence.Mode != persistence || ready.Persistence.Durable != durable || (ready.Persistence.Risk == "") != durable {
		t.Fatalf("/readyz = %d %s", resp.StatusCode, body)
	}
}

// aofHas reports whether the server's AOF files mention s.
func aofHas(srv *redistest.Server, s string) bool {
	files, _ := filepath.Glob(filepath.Join(srv.Dir(), "appendonlydir", "*"))
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte(s)) {
			return true
		}
	}
	return false
}

func withNode(cfg Config, id string) Config {
	cfg.NodeID = id
	return cfg
}

func jsonField(body, name string, out *string) bool {
	var m map[string]any
	if json.Unmarshal([]byte(body), &m) != nil {
		return false
	}
	if s, ok := m[name].(string); ok {
		*out = s
		return true
	}
	return false
}

// refusesAfterRestart checks that tok never authenticates on r while it
// reconnects to a restarted Redis: GET /auth/session answers 503 until the
// store answers, then 401, never 200; and a WebSocket upgrade is refused
// with 401.
func (r *running) refusesAfterRestart(tok string) {
	r.t.Helper()
	h := map[string]string{"X-Session-Token": tok}
	eventually(r.t, 20*time.Second, "an answer other than 503", func() bool {
		resp, body := r.do("GET", "/auth/session", "", h)
		switch resp.StatusCode {
		case http.StatusServiceUnavailable:
			return false
		case http.StatusUnauthorized:
			return true
		}
		r.t.Fatalf("GET /auth/session with a revoked token after the Redis restart: %d %s", resp.StatusCode, body)
		return false
	})
	_, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(r.url, "http")+"/ws", http.Header{"X-Session-Token": {tok}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		r.t.Fatalf("upgrade with a revoked token after the Redis restart: %v, %v; want 401", err, resp)
	}
}
