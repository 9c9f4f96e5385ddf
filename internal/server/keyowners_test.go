package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/keys"
	"github.com/sessionbridge/sessionbridge/users"
)

// writeUsers saves a users file holding names, each with a throw-away
// password hashed at the cheapest bcrypt cost.
func writeUsers(t *testing.T, path string, names ...string) {
	t.Helper()
	f, err := users.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	f.BcryptCost = 4
	for _, u := range f.List() {
		if err := f.Remove(u.Username); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range names {
		if err := f.Add(n, n+"-password", users.Bcrypt); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Save(); err != nil {
		t.Fatal(err)
	}
}

// upgradeStatus tries a WebSocket upgrade with the API key and returns the
// refusal's status, or 101 and the open socket.
func (r *running) upgradeWithKey(key string) (int, *websocket.Conn) {
	r.t.Helper()
	h := http.Header{"Authorization": {"Bearer " + key}}
	c, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(r.url, "http")+"/ws", h)
	if err != nil {
		if resp == nil {
			r.t.Fatalf("upgrade: %v", err)
		}
		return resp.StatusCode, nil
	}
	r.t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var welcome struct{ Type string }
	if err := c.ReadJSON(&welcome); err != nil || welcome.Type != "welcome" {
		r.t.Fatalf("welcome: %q, %v", welcome.Type, err)
	}
	c.SetReadDeadline(time.Time{})
	return http.StatusSwitchingProtocols, c
}

// TestKeyOfRemovedUserStops: with a users file, a key whose owner is removed
// from the file is refused on HTTP and on the upgrade, and its live socket
// is closed 4401 api_key_revoked by the next re-validation; the keys of the
// users who remain keep working, and no key is issued to a stranger.
func TestKeyOfRemovedUserStops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.json")
	writeUsers(t, path, "alice", "bob")
	r := start(t, Config{AdminToken: keysAdminToken, UsersFile: path, SweepInterval: 50 * time.Millisecond},
		func(s *Server) { s.users.checkEvery = 0 })

	body := func(user string) string {
		return `{"user_id":"` + user + `","name":"ci","scopes":["ws:connect","admin:read"]}`
	}
	alice := r.issue("POST", "/api/v1/keys", body("alice"), adminAuth())
	bob := r.issue("POST", "/api/v1/keys", body("bob"), adminAuth())
	if resp, b := r.doBare("POST", "/api/v1/keys", body("mallory"), adminAuth()); resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "not a known user") {
		t.Fatalf("a key for a user not in the users file: %d %s", resp.StatusCode, b)
	}
	asKey := func(k issued) map[string]string { return map[string]string{"Authorization": "Bearer " + k.Key} }
	if st := r.status("GET", "/api/v1/users/alice/keys", "", asKey(alice)); st != http.StatusOK {
		t.Fatalf("alice's key on HTTP before the removal: %d", st)
	}
	st, live := r.upgradeWithKey(alice.Key)
	if st != http.StatusSwitchingProtocols {
		t.Fatalf("alice's key on the upgrade before the removal: %d", st)
	}
	// Verified once: the record is now in the node's cache, which must not
	// let the key through after the removal.
	if _, err := r.srv.Keys().Verify(context.Background(), alice.Key, ""); err != nil {
		t.Fatal(err)
	}

	writeUsers(t, path, "bob")

	if st := r.status("GET", "/api/v1/users/alice/keys", "", asKey(alice)); st != http.StatusUnauthorized {
		t.Errorf("alice's key on HTTP after the removal: %d, want 401", st)
	}
	if st, _ := r.upgradeWithKey(alice.Key); st != http.StatusUnauthorized {
		t.Errorf("alice's key on the upgrade after the removal: %d, want 401", st)
	}
	if _, err := r.srv.Keys().Verify(context.Background(), alice.Key, ""); !errors.Is(err, sessionbridge.ErrInvalidToken) {
		t.Errorf("Verify of alice's key after the removal: %v", err)
	}
	if _, b := r.doBare("POST", "/api/v1/keys/verify", `{"key":"`+alice.Key+`"}`, adminAuth()); !strings.Contains(b, `"valid":false`) {
		t.Errorf("the verify route after the removal: %s", b)
	}
	if resp, b := r.doBare("POST", "/api/v1/keys/"+alice.ID+"/roll", `{}`, adminAuth()); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("rolling the key of a removed user: %d %s", resp.StatusCode, b)
	}
	if code, reason := closeCode(t, live); code != 4401 || reason != "api_key_revoked" {
		t.Errorf("alice's live socket closed with %d %q, want 4401 api_key_revoked", code, reason)
	}

	if st := r.status("GET", "/api/v1/users/bob/keys", "", asKey(bob)); st != http.StatusOK {
		t.Errorf("bob's key on HTTP: %d", st)
	}
	if st, _ := r.upgradeWithKey(bob.Key); st != http.StatusSwitchingProtocols {
		t.Errorf("bob's key on the upgrade: %d", st)
	}

	// Back in the file, alice's key (never revoked) works again.
	writeUsers(t, path, "alice", "bob")
	if st := r.status("GET", "/api/v1/users/alice/keys", "", asKey(alice)); st != http.StatusOK {
		t.Errorf("alice's key once she is back: %d", st)
	}
}

// TestKeyOwnersPolicies: auto checks owners only while the users file
// exists, users checks them always (a missing file knows only the demo
// user), any never; an unknown policy stops the server at start.
func TestKeyOwnersPolicies(t *testing.T) {
	create := func(r *running, user string) int {
		return r.status("POST", "/api/v1/keys", `{"user_id":"`+user+`","name":"k"}`, adminAuth())
	}
	missing := func() string { return filepath.Join(t.TempDir(), "users.json") }

	auto := start(t, Config{AdminToken: keysAdminToken, UsersFile: missing()}, func(s *Server) { s.users.checkEvery = 0 })
	if st := create(auto, "app-user-1"); st != http.StatusCreated {
		t.Errorf("auto without a users file: %d, want 201", st)
	}
	path := auto.srv.cfg.UsersFile
	k := auto.issue("POST", "/api/v1/keys", `{"user_id":"carol","name":"k"}`, adminAuth())
	writeUsers(t, path, "alice")
	if st := create(auto, "app-user-2"); st != http.StatusBadRequest {
		t.Errorf("auto once a users file exists: %d, want 400", st)
	}
	if _, err := auto.srv.Keys().Verify(context.Background(), k.Key, ""); !errors.Is(err, sessionbridge.ErrInvalidToken) {
		t.Errorf("auto once a users file exists, a key of a stranger: %v", err)
	}

	strict := start(t, Config{AdminToken: keysAdminToken, UsersFile: missing(), KeyOwners: KeyOwnersUsers})
	if st := create(strict, "app-user-1"); st != http.StatusBadRequest {
		t.Errorf("users without a users file: %d, want 400", st)
	}
	if st := create(strict, DemoUser); st != http.StatusCreated {
		t.Errorf("users, the demo user: %d, want 201", st)
	}

	anyPath := missing()
	writeUsers(t, anyPath, "alice")
	loose := start(t, Config{AdminToken: keysAdminToken, UsersFile: anyPath, KeyOwners: KeyOwnersAny})
	if st := create(loose, "app-user-1"); st != http.StatusCreated {
		t.Errorf("any with a users file: %d, want 201", st)
	}

	if _, err := New(context.Background(), Config{KeyOwners: "everyone"}, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Error("an unknown key owner policy was accepted")
	}
	if !errors.Is(keys.ErrUnknownOwner, keys.ErrInvalid) {
		t.Error("ErrUnknownOwner does not wrap ErrInvalid")
	}
}
