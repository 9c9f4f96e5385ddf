package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

const keysAdminToken = "admin-token-for-key-tests"

var keyPattern = regexp.MustCompile(`^` + sessionbridge.APIKeyPattern + `$`)

func adminAuth() map[string]string {
	return map[string]string{"Authorization": "Bearer " + keysAdminToken}
}

// issued is the part of a create or roll answer the tests read.
type issued struct {
	ID        string     `json:"id"`
	Key       string     `json:"key"`
	ExpiresAt *time.Time `json:"expires_at"`
}

func (r *running) issue(method, path, body string, header map[string]string) issued {
	r.t.Helper()
	resp, b := r.doAs(method, path, body, header)
	if resp.StatusCode != http.StatusCreated {
		r.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	var k issued
	if err := json.Unmarshal([]byte(b), &k); err != nil || !keyPattern.MatchString(k.Key) {
		r.t.Fatalf("%s %s: answer %s without a key (%v)", method, path, b, err)
	}
	return k
}

func (r *running) status(method, path, body string, header map[string]string) int {
	r.t.Helper()
	resp, _ := r.doAs(method, path, body, header)
	return resp.StatusCode
}

// doAs sends a request with an Authorization header as a program calling
// the admin API does, without the client's cookies (a cookie beside a bearer
// credential of another principal is a conflict), and others as the
// signed-in browser.
func (r *running) doAs(method, path, body string, header map[string]string) (*http.Response, string) {
	r.t.Helper()
	if _, ok := header["Authorization"]; ok {
		return r.doBare(method, path, body, header)
	}
	return r.do(method, path, body, header)
}

// TestKeysWired: the server manages keys on its backend with the configured
// maximum lifetime, for the admin and the user routes alike.
func TestKeysWired(t *testing.T) {
	r := start(t, Config{AdminToken: keysAdminToken, KeyMaxTTL: time.Hour})
	before := time.Now()
	k := r.issue("POST", "/api/v1/keys", `{"user_id":"carol","name":"ci"}`, adminAuth())
	if k.ExpiresAt == nil || k.ExpiresAt.Before(before.Add(time.Hour-time.Second)) || k.ExpiresAt.After(time.Now().Add(time.Hour)) {
		t.Fatalf("key without TTL expires at %v, want capped at an hour", k.ExpiresAt)
	}
	got, err := r.srv.Keys().Verify(context.Background(), k.Key, "")
	if err != nil || got.ID != k.ID {
		t.Fatalf("the server's key manager does not know the key: %v", err)
	}
	r.loginDemo()
	own := r.issue("POST", "/auth/keys", `{"name":"mine","scopes":["ws:connect"]}`, map[string]string{"Origin": r.url})
	if st := r.status("DELETE", "/auth/keys/"+own.ID, "", map[string]string{"Origin": r.url}); st != http.StatusNoContent {
		t.Fatalf("revoking my key: %d", st)
	}

	_, err = New(context.Background(), Config{KeyMaxTTL: -time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		t.Fatal("a negative maximum key lifetime was accepted")
	}
}

// TestKeysRedisOutage: with Redis away, creating, rolling and revoking keys
// answer 503 and write nothing; once Redis is back they work again.
func TestKeysRedisOutage(t *testing.T) {
	rs := redistest.Start(t)
	r := start(t, Config{AdminToken: keysAdminToken, RedisURL: rs.URL()})
	k := r.issue("POST", "/api/v1/keys", `{"user_id":"carol","name":"ci","scopes":["ws:connect"]}`, adminAuth())
	r.loginDemo()
	mine := r.issue("POST", "/auth/keys", `{"name":"mine"}`, map[string]string{"Origin": r.url})

	rs.Stop()
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/api/v1/keys", `{"user_id":"carol","name":"during"}`},
		{"POST", "/api/v1/keys/" + k.ID + "/roll", `{"grace_seconds":60}`},
		{"DELETE", "/api/v1/keys/" + k.ID, ``},
		{"POST", "/api/v1/keys/verify", `{"key":"` + k.Key + `"}`},
	} {
		resp, body := r.doBare(c.method, c.path, c.body, adminAuth())
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s %s with Redis away: %d %s", c.method, c.path, resp.StatusCode, body)
		}
	}
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/auth/keys", `{"name":"during"}`},
		{"POST", "/auth/keys/" + mine.ID + "/roll", `{}`},
		{"DELETE", "/auth/keys/" + mine.ID, ``},
	} {
		resp, body := r.do(c.method, c.path, c.body, map[string]string{"Origin": r.url})
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s %s with Redis away: %d %s", c.method, c.path, resp.StatusCode, body)
		}
	}

	// The test Redis comes back empty: the keys made before are gone, and
	// new ones can be made, rolled and revoked.
	rs.Restart()
	eventually(t, 10*time.Second, "key creation after Redis is back", func() bool {
		return r.status("POST", "/api/v1/keys", `{"user_id":"carol","name":"probe"}`, adminAuth()) == http.StatusCreated
	})
	if st := r.status("POST", "/api/v1/keys/"+k.ID+"/roll", `{}`, adminAuth()); st != http.StatusNotFound {
		t.Errorf("rolling a key the empty Redis never held: %d", st)
	}
	after := r.issue("POST", "/api/v1/keys", `{"user_id":"carol","name":"after"}`, adminAuth())
	next := r.issue("POST", "/api/v1/keys/"+after.ID+"/roll", `{"grace_seconds":60}`, adminAuth())
	if st := r.status("DELETE", "/api/v1/keys/"+next.ID, "", adminAuth()); st != http.StatusNoContent {
		t.Errorf("revoking after the outage: %d", st)
	}
	list, err := r.srv.Keys().List(context.Background(), "carol")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	for _, k := range list {
		names[k.Name]++
	}
	if names["during"] != 0 || names["probe"] != 1 || names["after"] != 1 || len(list) != 2 {
		t.Errorf("carol's keys after the outage: %v", names)
	}

	// The user routes work again after signing in anew (sessions were in
	// the lost Redis too).
	r.loginDemo()
	own := r.issue("POST", "/auth/keys", `{"name":"again"}`, map[string]string{"Origin": r.url})
	rolled := r.issue("POST", "/auth/keys/"+own.ID+"/roll", `{}`, map[string]string{"Origin": r.url})
	if st := r.status("DELETE", "/auth/keys/"+rolled.ID, "", map[string]string{"Origin": r.url}); st != http.StatusNoContent {
		t.Errorf("revoking my key after the outage: %d", st)
	}
}
