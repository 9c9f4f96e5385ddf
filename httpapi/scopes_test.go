package httpapi

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/users"
)

func sameScopes(a, b []string) bool { return (a == nil) == (b == nil) && slices.Equal(a, b) }

// TestLoginTakesUsersFileScopes: a session made by password login holds the
// scopes the users file gives its user; a user listed without any holds the
// default.
func TestLoginTakesUsersFileScopes(t *testing.T) {
	file := &users.File{Params: users.Argon2Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}}
	if err := file.AddWithScopes("carol", "carol-password", "", []string{"ws:connect", "chat.*", "!chat.admin"}); err != nil {
		t.Fatal(err)
	}
	if err := file.AddWithScopes("dave", "dave-password", "", []string{}); err != nil {
		t.Fatal(err)
	}
	if err := file.Add("erin", "erin-password", ""); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(f *fixture) { f.api.Users = file })
	for user, want := range map[string][]string{
		"carol": {"ws:connect", "chat.*", "!chat.admin"},
		"dave":  nil,
		"erin":  {"*"},
	} {
		_, ps := f.login(user)
		if !sameScopes(ps.Scopes, want) {
			t.Errorf("%s: login answered scopes %#v, want %#v", user, ps.Scopes, want)
		}
		s, err := f.mgr.Get(context.Background(), ps.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !sameScopes(s.Scopes, want) {
			t.Errorf("%s: stored scopes %#v, want %#v", user, s.Scopes, want)
		}
	}
}

// TestAdminSessionScopes: scopes beside data on the admin create and patch,
// validated, applied as one update whose event carries them.
func TestAdminSessionScopes(t *testing.T) {
	f := newFixture(t)
	resp := f.do(req{method: "POST", path: "/api/v1/sessions", header: adminHeader(),
		body: `{"user_id":"carol","data":{"plan":"pro"},"scopes":["ws:connect","chat.*","!chat.admin"]}`})
	expect(t, resp, http.StatusCreated)
	var cr createResponse
	resp.json(t, &cr)
	if want := []string{"ws:connect", "chat.*", "!chat.admin"}; !slices.Equal(cr.Session.Scopes, want) {
		t.Fatalf("created with scopes %v", cr.Session.Scopes)
	}
	// Absent or null: the default.
	for _, body := range []string{`{"user_id":"carol"}`, `{"user_id":"carol","scopes":null}`} {
		resp := f.do(req{method: "POST", path: "/api/v1/sessions", header: adminHeader(), body: body})
		expect(t, resp, http.StatusCreated)
		var d createResponse
		resp.json(t, &d)
		if d.Session.Scopes != nil || !strings.Contains(string(resp.body), `"scopes":null`) {
			t.Fatalf("%s: scopes %s", body, resp.body)
		}
	}
	// An empty list: no scope at all.
	resp = f.do(req{method: "POST", path: "/api/v1/sessions", header: adminHeader(), body: `{"user_id":"carol","scopes":[]}`})
	expect(t, resp, http.StatusCreated)
	if !strings.Contains(string(resp.body), `"scopes":[]`) {
		t.Fatalf("empty scopes: %s", resp.body)
	}
	before, err := f.mgr.List(context.Background(), "carol")
	if err != nil {
		t.Fatal(err)
	}
	tooMany := `["` + strings.Repeat(`a","`, 64) + `b"]`
	for _, body := range []string{
		`{"user_id":"carol","scopes":["ws:connect","chat.**.x"]}`,
		`{"user_id":"carol","scopes":["ws:connect",""]}`,
		`{"user_id":"carol","scopes":"**"}`,
		`{"user_id":"carol","scopes":[1]}`,
		`{"user_id":"carol","scopes":["a*"]}`,
		`{"user_id":"carol","scopes":` + tooMany + `}`,
	} {
		resp := f.do(req{method: "POST", path: "/api/v1/sessions", header: adminHeader(), body: body})
		expect(t, resp, http.StatusBadRequest)
		if code := resp.errorCode(t); code != CodeBadRequest || !strings.Contains(string(resp.body), "scopes") {
			t.Errorf("%s: %s", body, resp.body)
		}
		if strings.Contains(body, "chat.**.x") && (!strings.Contains(string(resp.body), "scopes/1") || strings.Contains(string(resp.body), "chat.**.x")) {
			t.Errorf("%s: %s; want the position, not the pattern", body, resp.body)
		}
	}
	if after, _ := f.mgr.List(context.Background(), "carol"); len(after) != len(before) {
		t.Fatalf("refused creates made sessions: %d -> %d", len(before), len(after))
	}

	// PATCH: scopes alone, then with data, then refusals.
	path := "/api/v1/sessions/" + cr.ID
	h := adminHeader()
	h["If-Match"] = `"1"`
	resp = f.do(req{method: "PATCH", path: path, header: h, body: `{"scopes":["ws:connect","chat.**"]}`})
	expect(t, resp, http.StatusOK)
	var ps sessionbridge.PublicSession
	resp.json(t, &ps)
	if ps.Version != 2 || !slices.Equal(ps.Scopes, []string{"ws:connect", "chat.**"}) || string(ps.Data) != `{"plan":"pro"}` || resp.Header.Get("ETag") != `"2"` {
		t.Fatalf("patched scopes: %s", resp.body)
	}
	f.events.waitFor(t, "the scopes update", func(ev sessionbridge.Event) bool {
		return ev.Type == sessionbridge.EventUpdated && ev.SessionID == cr.ID && ev.Version == 2 &&
			string(ev.Updates) == `{}` && slices.Equal(ev.Scopes, []string{"ws:connect", "chat.**"}) && ev.Source == sessionbridge.SourceAPI
	})
	resp = f.do(req{method: "PATCH", path: path, header: adminHeader(), body: `{"data":{"plan":"team"},"scopes":[]}`})
	expect(t, resp, http.StatusOK)
	resp.json(t, &ps)
	if ps.Version != 3 || ps.Scopes == nil || len(ps.Scopes) != 0 || string(ps.Data) != `{"plan":"team"}` {
		t.Fatalf("patched data and scopes: %s", resp.body)
	}
	for _, body := range []string{
		`{"scopes":["ws:connect","chat.**.x"]}`,
		`{"data":{"plan":"x"},"scopes":["!"]}`,
		`{"scopes":null}`,
		`{"scopes":"ws:connect"}`,
		`{}`,
		`{"data":null}`,
		`{"data":[1]}`,
		`{"plan":"x"}`,
		`{"data":{},"extra":1}`,
	} {
		resp := f.do(req{method: "PATCH", path: path, header: adminHeader(), body: body})
		expect(t, resp, http.StatusBadRequest)
	}
	s, err := f.mgr.Get(context.Background(), cr.ID)
	if err != nil || s.Version != 3 || len(s.Scopes) != 0 || string(s.Data) != `{"plan":"team"}` {
		t.Fatalf("refused patches changed the session: %+v, %v", s, err)
	}
	// Conditional on a stale version: 412, nothing changed.
	h["If-Match"] = `"2"`
	expect(t, f.do(req{method: "PATCH", path: path, header: h, body: `{"scopes":["**"]}`}), http.StatusPreconditionFailed)
	expect(t, f.do(req{method: "PATCH", path: "/api/v1/sessions/" + cr.ID + "x", header: adminHeader(), body: `{"scopes":["**"]}`}), http.StatusNotFound)
}

// TestUserPatchCannotSetScopes: PATCH /auth/session patches data only; a
// member named "scopes" is data.
func TestUserPatchCannotSetScopes(t *testing.T) {
	f := newFixture(t)
	tok, ps := f.login("alice")
	resp := f.do(req{method: "PATCH", path: "/auth/session", cookie: tok, body: `{"scopes":["**"]}`})
	expect(t, resp, http.StatusOK)
	var got sessionbridge.PublicSession
	resp.json(t, &got)
	if got.Scopes != nil || string(got.Data) != `{"scopes":["**"]}` {
		t.Fatalf("user patch: %s", resp.body)
	}
	s, err := f.mgr.Get(context.Background(), ps.ID)
	if err != nil || s.Scopes != nil {
		t.Fatalf("stored scopes %#v, %v", s.Scopes, err)
	}
}
