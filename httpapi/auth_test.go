package httpapi

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/auth"
	"github.com/sessionbridge/sessionbridge/keys"
	"github.com/sessionbridge/sessionbridge/memory"
)

// withKeys gives the fixture a shared authenticator with API keys on ks.
func withKeys(ks *flakyKeys, km **keys.Manager) func(*fixture) {
	return func(f *fixture) {
		*km = &keys.Manager{Store: ks, Now: f.clock.Now}
		a, err := auth.New(auth.Config{Sessions: f.mgr, Keys: *km, AdminToken: adminToken, Now: f.clock.Now})
		if err != nil {
			f.t.Fatal(err)
		}
		f.sessions.Auth, f.api.AdminToken = a, ""
	}
}

func TestAPIKeyOnHTTP(t *testing.T) {
	ks := &flakyKeys{KeyStore: memory.NewKeyStore(nil)}
	var km *keys.Manager
	f := newFixture(t, withKeys(ks, &km))
	ctx := context.Background()
	key, _, err := km.Create(ctx, keys.NewKey{UserID: "svc", Name: "k", Scopes: []string{"chat.**", "admin:read"}})
	if err != nil {
		t.Fatal(err)
	}
	h := map[string]string{"Authorization": "Bearer " + key}
	expect(t, f.do(req{method: "POST", path: "/auth/ws-ticket", header: h}), http.StatusOK)
	expect(t, f.do(req{method: "GET", path: "/api/v1/connections", header: h}), http.StatusOK)
	resp := f.do(req{method: "DELETE", path: "/api/v1/users/svc/sessions", header: h})
	expect(t, resp, http.StatusForbidden)
	if !strings.Contains(string(resp.body), "admin:write") {
		t.Errorf("the refusal does not name the scope: %s", resp.body)
	}
	resp = f.do(req{method: "GET", path: "/auth/session", header: h})
	expect(t, resp, http.StatusForbidden)
	if code := resp.errorCode(t); code != CodeSessionRequired {
		t.Errorf("code %q", code)
	}

	// A mistyped key is refused without a store read, at the user routes
	// and the admin routes alike.
	reads := ks.reads.Load()
	typo := map[string]string{"Authorization": "Bearer " + key[:len(key)-1] + string(key[len(key)-1]^1)}
	resp = f.do(req{method: "POST", path: "/auth/ws-ticket", header: typo})
	expect(t, resp, http.StatusUnauthorized)
	if code := resp.errorCode(t); code != CodeInvalidToken {
		t.Errorf("code %q", code)
	}
	expect(t, f.do(req{method: "GET", path: "/api/v1/connections", header: typo}), http.StatusUnauthorized)
	if n := ks.reads.Load(); n != reads {
		t.Fatalf("mistyped keys cost %d store reads", n-reads)
	}

	// The key store away: 503 at the user and admin routes, never a pass.
	ks.down.Store(true)
	resp = f.do(req{method: "POST", path: "/auth/ws-ticket", header: h})
	expect(t, resp, http.StatusServiceUnavailable)
	expect(t, f.do(req{method: "GET", path: "/api/v1/connections", header: h}), http.StatusServiceUnavailable)
	ks.down.Store(false)
	// The session store away: the same.
	_, tok := f.create("alice")
	f.store.down.Store(true)
	expect(t, f.do(req{method: "POST", path: "/auth/ws-ticket", header: map[string]string{"X-Session-Token": tok}}), http.StatusServiceUnavailable)
	f.store.down.Store(false)
}

// The ticket of a key stands for the key: its method, scopes, expiry and ID.
func TestTicketOfAKey(t *testing.T) {
	ks := &flakyKeys{KeyStore: memory.NewKeyStore(nil)}
	var km *keys.Manager
	f := newFixture(t, withKeys(ks, &km))
	tickets := f.tickets
	key, k, err := km.Create(context.Background(), keys.NewKey{UserID: "svc", Name: "k", Scopes: []string{"chat.**"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	resp := f.do(req{method: "POST", path: "/auth/ws-ticket", header: map[string]string{"Authorization": "Bearer " + key}})
	expect(t, resp, http.StatusOK)
	var tr ticketResponse
	resp.json(t, &tr)
	got, err := tickets.Redeem(context.Background(), tr.Ticket)
	if err != nil {
		t.Fatal(err)
	}
	if got.Method != sessionbridge.AuthAPIKey || got.UserID != "svc" || got.KeyID != k.ID || got.SessionID != "" ||
		len(got.Scopes) != 1 || got.Scopes[0] != "chat.**" || !got.ExpiresAt.Equal(k.ExpiresAt) {
		t.Fatalf("ticket %+v", got)
	}
}

// The admin token acts for no user: it is refused on the user routes.
func TestAdminTokenOnUserRoutes(t *testing.T) {
	f := newFixture(t)
	resp := f.do(req{method: "POST", path: "/auth/ws-ticket", header: adminHeader()})
	expect(t, resp, http.StatusForbidden)
	// Beside a cookie, an admin token is a conflict, as any two
	// credentials that differ.
	_, tok := f.create("alice")
	resp = f.do(req{method: "GET", path: "/api/v1/connections", header: adminHeader(), cookie: tok})
	expect(t, resp, http.StatusUnauthorized)
	if code := resp.errorCode(t); code != CodeConflictingTokens {
		t.Errorf("code %q", code)
	}
}

// A shared authenticator decides the admin token and origins: setting them
// on the API as well is a programming error.
func TestAPIRefusesTwoSourcesOfTruth(t *testing.T) {
	f := newFixture(t)
	a, err := auth.New(auth.Config{Sessions: f.mgr})
	if err != nil {
		t.Fatal(err)
	}
	api := &API{Sessions: &Sessions{Manager: f.mgr, Auth: a}, AdminToken: adminToken}
	defer func() {
		if recover() == nil {
			t.Error("Handler accepted an admin token beside Sessions.Auth")
		}
	}()
	api.Handler()
}
