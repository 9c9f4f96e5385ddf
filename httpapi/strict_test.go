package httpapi

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// A body must read one way only. A proxy or WAF that inspects "username" or
// "user_id" must see the value the API acts on: a case variant of a member
// name, a second member of the same name or invalid UTF-8 is refused, never
// resolved.
func TestAmbiguousBodiesRefused(t *testing.T) {
	f := newFixture(t)
	for _, body := range []string{
		// Signed in as alice before: the case variant won.
		`{"username":"bob","USERNAME":"alice","password":"alice-password"}`,
		`{"username":"alice","password":"bob-password","Password":"alice-password"}`,
		// Duplicates took the last value.
		`{"username":"bob","username":"alice","password":"alice-password"}`,
		`{"username":"alice","password":"x","password":"alice-password"}`,
		`{"username":"bob","\u0075sername":"alice","password":"alice-password"}`,
		"{\"username\":\"alice\xff\",\"password\":\"alice-password\"}",
	} {
		resp := f.do(req{method: "POST", path: "/auth/login", body: body})
		expect(t, resp, http.StatusBadRequest)
		if code := resp.errorCode(t); code != CodeBadRequest {
			t.Errorf("login %q: code %q, want %q", body, code, CodeBadRequest)
		}
		if resp.cookie(DefaultCookieName) != nil {
			t.Errorf("login %q set a session cookie", body)
		}
	}

	for _, c := range []struct{ body, why string }{
		// Created a session for bob before.
		{`{"user_id":"alice","USER_ID":"bob"}`, `unknown member at \"/USER_ID\"`},
		{`{"user_id":"alice","user_id":"bob"}`, `duplicate member name at \"/user_id\"`},
		{`{"user_id":"alice","data":{"role":"user","role":"admin"}}`, `duplicate member name at \"/data/role\"`},
		{"{\"user_id\":\"\xffroot\"}", "invalid UTF-8 at byte 12"},
		{`{"user_id":"alice","Device":{"ip":"::1"}}`, `unknown member at \"/Device\"`},
	} {
		resp := f.do(req{method: "POST", path: "/api/v1/sessions", header: adminHeader(), body: c.body})
		expect(t, resp, http.StatusBadRequest)
		if code := resp.errorCode(t); code != CodeBadRequest || !strings.Contains(string(resp.body), c.why) {
			t.Errorf("create %q: %s; want bad_request saying %s", c.body, resp.body, c.why)
		}
	}
	for _, user := range []string{"alice", "bob", "\ufffdroot"} {
		list, err := f.mgr.List(context.Background(), user)
		if err != nil || len(list) != 0 {
			t.Errorf("refused bodies left %d sessions for %q (%v)", len(list), user, err)
		}
	}

	for _, body := range []string{
		`{"user_id":"alice","data":{"a":1},"data":{"b":2}}`,
		`{"user_id":"alice","data":{"a":1},"Data":{"b":2}}`,
	} {
		resp := f.do(req{method: "POST", path: "/api/v1/publish", header: adminHeader(), body: body})
		expect(t, resp, http.StatusBadRequest)
	}
	if len(f.publisher.sent) != 0 {
		t.Errorf("refused publish bodies were sent: %q", f.publisher.sent)
	}
}

// Merge patches (PATCH /auth/session and the admin PATCH) are held to the
// same rules: a duplicate key must not let "role" read "user" to a proxy and
// "admin" to the store.
func TestAmbiguousPatchesRefused(t *testing.T) {
	f := newFixture(t)
	tok, ps := f.login("alice")
	for _, c := range []struct{ body, why string }{
		{`{"role":"user","role":"admin"}`, `duplicate member name at \"/role\"`},
		{`{"prefs":{"theme":"dark","theme":"light"}}`, `duplicate member name at \"/prefs/theme\"`},
		{"{\"name\":\"\xffroot\"}", "invalid UTF-8"},
		{`{"name":"\udc00"}`, "invalid UTF-8"},
		{`{"a":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`, "nested too deep"},
	} {
		// The admin PATCH carries the data patch in "data", beside
		// "scopes".
		adminWhy := strings.Replace(c.why, `\"/`, `\"/data/`, 1)
		if c.why == "nested too deep" {
			adminWhy = c.why
		}
		for _, q := range []struct {
			req
			why string
		}{
			{req{method: "PATCH", path: "/auth/session", body: c.body, cookie: tok}, c.why},
			{req{method: "PATCH", path: "/api/v1/sessions/" + ps.ID, body: `{"data":` + c.body + `}`, header: adminHeader()}, adminWhy},
		} {
			resp := f.do(q.req)
			expect(t, resp, http.StatusBadRequest)
			if code := resp.errorCode(t); code != CodeInvalidPatch || !strings.Contains(string(resp.body), q.why) {
				t.Errorf("%s %s %q: %s; want invalid_patch saying %s", q.method, q.path, q.body, resp.body, q.why)
			}
		}
	}
	// The scopes beside the data are held to the same rules.
	resp := f.do(req{method: "PATCH", path: "/api/v1/sessions/" + ps.ID, body: `{"scopes":["ws:connect"],"scopes":["**"]}`, header: adminHeader()})
	expect(t, resp, http.StatusBadRequest)
	if code := resp.errorCode(t); code != CodeInvalidPatch {
		t.Errorf("duplicate scopes: %s", resp.body)
	}
	s, err := f.mgr.Get(context.Background(), ps.ID)
	if err != nil || s.Version != ps.Version {
		t.Fatalf("refused patches changed the session: version %d -> %v, %v", ps.Version, s, err)
	}
}

// User IDs that are not UTF-8, or that a lossy decoder already collapsed
// into U+FFFD, are refused at every admin door: body, path and query.
func TestUserIDsThatCollapseRefused(t *testing.T) {
	f := newFixture(t)
	for _, c := range []req{
		{method: "POST", path: "/api/v1/sessions", body: `{"user_id":"\ufffdroot"}`},
		{method: "POST", path: "/api/v1/sessions", body: `{"user_id":"root\u0085"}`},
		{method: "POST", path: "/api/v1/sessions", body: "{\"user_id\":\"\xffroot\"}"},
		{method: "GET", path: "/api/v1/users/%FFroot/sessions"},
		{method: "GET", path: "/api/v1/users/%EF%BF%BDroot/sessions"},
		{method: "DELETE", path: "/api/v1/users/%FEroot/sessions"},
		{method: "DELETE", path: "/api/v1/users/root%C2%85/sessions"},
		{method: "GET", path: "/api/v1/connections?user_id=%FFroot"},
		{method: "POST", path: "/api/v1/publish", body: `{"user_id":"\ufffdroot","data":1}`},
	} {
		c.header = adminHeader()
		resp := f.do(c)
		expect(t, resp, http.StatusBadRequest)
		if code := resp.errorCode(t); code != CodeBadRequest {
			t.Errorf("%s %s %s: code %q", c.method, c.path, c.body, code)
		}
	}
	if len(f.publisher.sent) != 0 {
		t.Errorf("a refused publish was sent: %q", f.publisher.sent)
	}
	list, err := f.mgr.List(context.Background(), "\ufffdroot")
	if err != nil || len(list) != 0 {
		t.Fatalf("sessions for the collapsed ID: %d, %v", len(list), err)
	}
}
