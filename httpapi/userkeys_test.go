package httpapi

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/sessionbridge/sessionbridge/auth"
)

// TestAdminDeleteUserKeys: DELETE /api/v1/users/{user_id}/keys revokes every
// key of the user and no other, answers their IDs, audits each by key ID,
// and is refused as the admin routes are.
func TestAdminDeleteUserKeys(t *testing.T) {
	f := newKeyFixture(t, func(f *fixture) {
		// Admin-scoped keys authenticate through the shared authenticator.
		a, err := auth.New(auth.Config{Sessions: f.mgr, Keys: f.api.Keys, AdminToken: adminToken, Now: f.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		f.sessions.Auth, f.api.AdminToken = a, ""
	})
	a1 := f.createKey(`{"user_id":"alice","name":"one","scopes":["ws:connect"]}`)
	a2 := f.createKey(`{"user_id":"alice","name":"two","scopes":["ws:connect"]}`)
	b1 := f.createKey(`{"user_id":"bob","name":"one","scopes":["ws:connect"]}`)
	reader := f.createKey(`{"user_id":"ops","name":"reader","scopes":["admin:read"]}`)

	resp := f.do(req{method: "DELETE", path: "/api/v1/users/alice/keys", header: map[string]string{"Authorization": "Bearer " + reader.Key}})
	expect(t, resp, http.StatusForbidden)
	if n := f.count("alice"); n != 2 {
		t.Fatalf("a key with admin:read revoked keys: alice has %d left", n)
	}
	expect(t, f.do(req{method: "DELETE", path: "/api/v1/users/alice/keys"}), http.StatusUnauthorized)

	resp = f.do(req{method: "DELETE", path: "/api/v1/users/alice/keys", header: adminHeader()})
	expect(t, resp, http.StatusOK)
	var out revokedList
	resp.json(t, &out)
	slices.Sort(out.Revoked)
	want := []string{a1.ID, a2.ID}
	slices.Sort(want)
	if !slices.Equal(out.Revoked, want) || out.Count != 2 {
		t.Fatalf("revoked %+v, want %v", out, want)
	}
	if f.verify(a1.Key).Valid || f.verify(a2.Key).Valid {
		t.Error("a revoked key of alice still verifies")
	}
	if !f.verify(b1.Key).Valid {
		t.Error("bob's key was revoked with alice's")
	}
	logs := f.logs.String()
	for _, id := range want {
		if !strings.Contains(logs, `"key_id":"`+id+`"`) || !strings.Contains(logs, "all keys of the user revoked") {
			t.Errorf("no audit record of the revocation of %s in %s", id, logs)
		}
	}

	// Nothing left: an empty list, not an error.
	resp = f.do(req{method: "DELETE", path: "/api/v1/users/alice/keys", header: adminHeader()})
	expect(t, resp, http.StatusOK)
	resp.json(t, &out)
	if out.Count != 0 || out.Revoked == nil || len(out.Revoked) != 0 {
		t.Errorf("second revoke-all: %+v, want an empty list", out)
	}

	resp = f.do(req{method: "DELETE", path: "/api/v1/users/%20bad%00/keys", header: adminHeader()})
	if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusNotFound {
		t.Errorf("a malformed user ID: %d %s", resp.StatusCode, resp.body)
	}

	f.keys.down.Store(true)
	resp = f.do(req{method: "DELETE", path: "/api/v1/users/bob/keys", header: adminHeader()})
	if resp.StatusCode != http.StatusServiceUnavailable || resp.errorCode(t) != CodeUnavailable {
		t.Errorf("with the store away: %d %s", resp.StatusCode, resp.body)
	}
	f.keys.down.Store(false)
	if !f.verify(b1.Key).Valid {
		t.Error("bob's key was revoked by a failed revoke-all")
	}
}

// TestAdminDeleteUserKeysNotConfigured: without a key manager the route
// does not exist.
func TestAdminDeleteUserKeysNotConfigured(t *testing.T) {
	f := newFixture(t)
	resp := f.do(req{method: "DELETE", path: "/api/v1/users/alice/keys", header: adminHeader()})
	if resp.StatusCode != http.StatusNotFound || resp.errorCode(t) != CodeNotFound {
		t.Errorf("without keys: %d %s", resp.StatusCode, resp.body)
	}
}
