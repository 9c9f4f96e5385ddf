package httpapi

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
)

func TestAdminAuth(t *testing.T) {
	f := newFixture(t)
	for _, h := range []map[string]string{
		nil,
		{"Authorization": "Bearer wrong"},
		{"Authorization": "Bearer " + adminToken + "x"},
		{"Authorization": "Basic " + adminToken},
		{"Authorization": "Bearer"},
		{"Authorization": adminToken},
	} {
		resp := f.do(req{method: "GET", path: "/api/v1/connections", header: h})
		expect(t, resp, http.StatusUnauthorized)
		if code := resp.errorCode(t); code != CodeUnauthenticated || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%v: %s %v", h, code, resp.Header)
		}
	}
	expect(t, f.do(req{method: "GET", path: "/api/v1/connections", header: map[string]string{"Authorization": "bearer " + adminToken}}), http.StatusOK)

	// Without a configured token the admin API does not exist.
	g := newFixture(t, func(f *fixture) { f.api.AdminToken = "" })
	for _, h := range []map[string]string{nil, {"Authorization": "Bearer "}, {"Authorization": "Bearer " + adminToken}} {
		resp := g.do(req{method: "POST", path: "/api/v1/sessions", body: `{"user_id":"a"}`, header: h})
		expect(t, resp, http.StatusNotFound)
	}
}

func TestAdminSessionLifecycle(t *testing.T) {
	f := newFixture(t)
	resp := f.do(req{method: "POST", path: "/api/v1/sessions", header: adminHeader(),
		body: `{"user_id":"carol","data":{"plan":"pro"},"ttl_seconds":3600,"device":{"user_agent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1","ip":"203.0.113.9"}}`})
	expect(t, resp, http.StatusCreated)
	var cr createResponse
	resp.json(t, &cr)
	if cr.ID == "" || cr.Token == "" || cr.Session.ID != cr.ID || string(cr.Session.Data) != `{"plan":"pro"}` {
		t.Fatalf("create answer %s", resp.body)
	}
	if want := f.clock.Now().Add(time.Hour); !cr.Session.AbsoluteExpiresAt.Equal(want) {
		t.Errorf("absolute deadline %v, want ttl applied %v", cr.Session.AbsoluteExpiresAt, want)
	}
	if cr.Session.Device.IP != "203.0.113.9" || cr.Session.Device.DeviceType != "mobile" {
		t.Errorf("device %+v", cr.Session.Device)
	}
	if resp.Header.Get("Location") != "/api/v1/sessions/"+cr.ID {
		t.Errorf("Location %q", resp.Header.Get("Location"))
	}
	f.events.waitFor(t, "created", func(ev sessionbridge.Event) bool {
		return ev.Type == sessionbridge.EventCreated && ev.SessionID == cr.ID && ev.Source == sessionbridge.SourceAPI
	})
	// The token works as a browser cookie.
	expect(t, f.do(req{method: "GET", path: "/auth/session", cookie: cr.Token}), http.StatusOK)

	// A TTL beyond the absolute timeout is capped.
	resp = f.do(req{method: "POST", path: "/api/v1/sessions", header: adminHeader(), body: `{"user_id":"carol","ttl_seconds":9223372036854775807}`})
	expect(t, resp, http.StatusCreated)
	var capped createResponse
	resp.json(t, &capped)
	if want := f.clock.Now().Add(sessionbridge.DefaultAbsoluteTimeout); !capped.Session.AbsoluteExpiresAt.Equal(want) {
		t.Errorf("huge ttl: absolute deadline %v, want %v", capped.Session.AbsoluteExpiresAt, want)
	}

	resp = f.do(req{method: "GET", path: "/api/v1/sessions/" + cr.ID, header: adminHeader()})
	expect(t, resp, http.StatusOK)
	if strings.Contains(string(resp.body), cr.Token) || strings.Contains(string(resp.body), `"token"`) {
		t.Error("GET echoes the token")
	}

	h := adminHeader()
	h["If-Match"] = `"1"`
	resp = f.do(req{method: "PATCH", path: "/api/v1/sessions/" + cr.ID, header: h, body: `{"data":{"plan":"team","seats":5}}`})
	expect(t, resp, http.StatusOK)
	var ps sessionbridge.PublicSession
	resp.json(t, &ps)
	if ps.Version != 2 || string(ps.Data) != `{"plan":"team","seats":5}` {
		t.Errorf("patched %s", resp.body)
	}
	f.events.waitFor(t, "updated", func(ev sessionbridge.Event) bool {
		return ev.Type == sessionbridge.EventUpdated && ev.SessionID == cr.ID && ev.Source == sessionbridge.SourceAPI && string(ev.Updates) == `{"plan":"team","seats":5}`
	})
	expect(t, f.do(req{method: "PATCH", path: "/api/v1/sessions/" + cr.ID, header: h, body: `{"data":{"plan":"x"}}`}), http.StatusPreconditionFailed)

	// A body declared a merge patch is the patch of the data itself, as in
	// the original contract; a plain JSON body is the envelope, and a bare
	// patch there is refused rather than read two ways.
	mp := adminHeader()
	mp["Content-Type"] = "application/merge-patch+json"
	resp = f.do(req{method: "PATCH", path: "/api/v1/sessions/" + cr.ID, header: mp, body: `{"seats":null,"data":"kept as data"}`})
	expect(t, resp, http.StatusOK)
	resp.json(t, &ps)
	if ps.Version != 3 || string(ps.Data) != `{"data":"kept as data","plan":"team"}` {
		t.Errorf("merge-patch body: %s", resp.body)
	}
	expect(t, f.do(req{method: "PATCH", path: "/api/v1/sessions/" + cr.ID, header: adminHeader(), body: `{"plan":"bare"}`}), http.StatusBadRequest)

	resp = f.do(req{method: "GET", path: "/api/v1/users/carol/sessions", header: adminHeader()})
	expect(t, resp, http.StatusOK)
	var list sessionList
	resp.json(t, &list)
	if len(list.Sessions) != 2 {
		t.Errorf("user sessions %s", resp.body)
	}

	expect(t, f.do(req{method: "DELETE", path: "/api/v1/sessions/" + cr.ID, header: adminHeader()}), http.StatusNoContent)
	ev := f.events.waitFor(t, "deleted", func(ev sessionbridge.Event) bool {
		return ev.Type == sessionbridge.EventDeleted && ev.SessionID == cr.ID
	})
	if ev.Reason != sessionbridge.ReasonRevoked || ev.Source != sessionbridge.SourceAPI {
		t.Errorf("deleted event %+v", ev)
	}
	for _, q := range []req{
		{method: "GET", path: "/api/v1/sessions/" + cr.ID},
		{method: "PATCH", path: "/api/v1/sessions/" + cr.ID, body: `{"data":{}}`},
		{method: "DELETE", path: "/api/v1/sessions/" + cr.ID},
		{method: "GET", path: "/api/v1/sessions/not-an-id"},
	} {
		q.header = adminHeader()
		resp := f.do(q)
		expect(t, resp, http.StatusNotFound)
		if resp.errorCode(t) != CodeNotFound {
			t.Errorf("%s %s: wrong code", q.method, q.path)
		}
	}
	expect(t, f.do(req{method: "GET", path: "/auth/session", cookie: cr.Token}), http.StatusUnauthorized)

	f.create("carol")
	resp = f.do(req{method: "DELETE", path: "/api/v1/users/carol/sessions", header: adminHeader()})
	expect(t, resp, http.StatusOK)
	var rev revokedList
	resp.json(t, &rev)
	if rev.Count != 2 || f.exists(capped.ID) {
		t.Errorf("delete user sessions: %s", resp.body)
	}
	resp = f.do(req{method: "GET", path: "/api/v1/users/carol/sessions", header: adminHeader()})
	expect(t, resp, http.StatusOK)
	if string(resp.body) != "{\"sessions\":[]}\n" {
		t.Errorf("empty list %q", resp.body)
	}
}

func TestAdminPublishAndConnections(t *testing.T) {
	f := newFixture(t)
	f.presence.conns = []sessionbridge.ConnInfo{
		{ID: "c1", UserID: "alice", SessionID: "s1", Method: sessionbridge.AuthSession, NodeID: "n1"},
		{ID: "c2", UserID: "bob", Method: sessionbridge.AuthJWT, NodeID: "n2"},
	}
	expect(t, f.do(req{method: "POST", path: "/api/v1/publish", header: adminHeader(), body: `{"user_id":"alice","data":{"hello":1}}`}), http.StatusAccepted)
	expect(t, f.do(req{method: "POST", path: "/api/v1/publish", header: adminHeader(), body: `{"session_id":"s1","data":"hi"}`}), http.StatusAccepted)
	for _, body := range []string{
		`{"user_id":"alice","session_id":"s1","data":1}`,
		`{"data":1}`,
		`{"user_id":"alice"}`,
	} {
		resp := f.do(req{method: "POST", path: "/api/v1/publish", header: adminHeader(), body: body})
		expect(t, resp, http.StatusBadRequest)
	}
	f.publisher.mu.Lock()
	sent := strings.Join(f.publisher.sent, "|")
	f.publisher.mu.Unlock()
	if sent != `user:alice:{"hello":1}|session:s1:"hi"` {
		t.Errorf("published %q", sent)
	}

	resp := f.do(req{method: "GET", path: "/api/v1/connections?user_id=alice", header: adminHeader()})
	expect(t, resp, http.StatusOK)
	var cl connectionList
	resp.json(t, &cl)
	if len(cl.Connections) != 1 || cl.Connections[0].ID != "c1" {
		t.Errorf("alice's connections %s", resp.body)
	}
	resp = f.do(req{method: "GET", path: "/api/v1/connections", header: adminHeader()})
	resp.json(t, &cl)
	if len(cl.Connections) != 2 {
		t.Errorf("all connections %s", resp.body)
	}
	resp = f.do(req{method: "GET", path: "/api/v1/connections?user_id=nobody", header: adminHeader()})
	if string(resp.body) != "{\"connections\":[]}\n" {
		t.Errorf("no connections %q", resp.body)
	}
}

func TestAdminValidation(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		body, ctype string
		status      int
		code        string
	}{
		{`{"user_id":"a","ttl_seconds":-1}`, "", 400, CodeBadRequest},
		{`{"user_id":""}`, "", 400, CodeBadRequest},
		{`{"user_id":"a\u0000b"}`, "", 400, CodeBadRequest},
		{`{"user_id":"` + strings.Repeat("u", 257) + `"}`, "", 400, CodeBadRequest},
		{`{"user_id":"a","data":[1]}`, "", 400, CodeBadRequest},
		{`{"user_id":"a","data":"x"}`, "", 400, CodeBadRequest},
		{`{"user_id":"a","extra":1}`, "", 400, CodeBadRequest},
		{`{"user_id":"a"} trailing`, "", 400, CodeBadRequest},
		{`{"user_id":"a"}{}`, "", 400, CodeBadRequest},
		{`{"user_id":`, "", 400, CodeBadRequest},
		{`{"user_id":1}`, "", 400, CodeBadRequest},
		{`{"user_id":"a","ttl_seconds":1.5}`, "", 400, CodeBadRequest},
		{`{"user_id":"a","device":{"ip":"not-an-ip"}}`, "", 400, CodeBadRequest},
		{`   `, "", 400, CodeBadRequest},
		{`{"user_id":"a","data":{"big":"` + strings.Repeat("x", MaxBodyBytes) + `"}}`, "", 413, CodeBodyTooLarge},
		{`{"user_id":"a"}`, "application/x-www-form-urlencoded", 415, CodeUnsupportedMediaType},
	} {
		h := adminHeader()
		if c.ctype != "" {
			h["Content-Type"] = c.ctype
		}
		resp := f.do(req{method: "POST", path: "/api/v1/sessions", header: h, body: c.body})
		expect(t, resp, c.status)
		if code := resp.errorCode(t); code != c.code {
			t.Errorf("%.40q: code %q, want %q", c.body, code, c.code)
		}
	}
	// Nothing was created by the refused requests.
	resp := f.do(req{method: "GET", path: "/api/v1/users/a/sessions", header: adminHeader()})
	if string(resp.body) != "{\"sessions\":[]}\n" {
		t.Errorf("refused requests created sessions: %s", resp.body)
	}
	// User IDs elsewhere in the admin API are held to the same rules: a control character or an oversized ID is refused, not looked up.
	long := strings.Repeat("u", 257)
	for _, c := range []req{
		{method: "GET", path: "/api/v1/users/a%0Ab/sessions"},
		{method: "DELETE", path: "/api/v1/users/" + long + "/sessions"},
		{method: "GET", path: "/api/v1/connections?user_id=a%00b"},
		{method: "POST", path: "/api/v1/publish", body: `{"user_id":"a\nb","data":1}`},
	} {
		c.header = adminHeader()
		resp := f.do(c)
		expect(t, resp, http.StatusBadRequest)
		if code := resp.errorCode(t); code != CodeBadRequest {
			t.Errorf("%s %s: code %q", c.method, c.path, code)
		}
	}
	// data null means no data.
	resp = f.do(req{method: "POST", path: "/api/v1/sessions", header: adminHeader(), body: `{"user_id":"a","data":null}`})
	expect(t, resp, http.StatusCreated)
}
