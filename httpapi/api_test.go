package httpapi

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/memory"
)

func TestGetAndPatchSession(t *testing.T) {
	f := newFixture(t)
	tok, ps := f.login("alice")
	same := map[string]string{"Origin": f.srv.URL}

	resp := f.do(req{method: "GET", path: "/auth/session", cookie: tok})
	expect(t, resp, http.StatusOK)
	if resp.Header.Get("ETag") != `"1"` || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v", resp.Header)
	}

	resp = f.do(req{method: "PATCH", path: "/auth/session", cookie: tok, body: `{"theme":"dark","cart":{"items":2}}`,
		header: map[string]string{"Origin": f.srv.URL, "Content-Type": "application/merge-patch+json", "If-Match": `"1"`}})
	expect(t, resp, http.StatusOK)
	var got sessionbridge.PublicSession
	resp.json(t, &got)
	if got.Version != 2 || string(got.Data) != `{"cart":{"items":2},"theme":"dark"}` || resp.Header.Get("ETag") != `"2"` {
		t.Fatalf("after patch: %s", resp.body)
	}
	ev := f.events.waitFor(t, "updated", func(ev sessionbridge.Event) bool {
		return ev.Type == sessionbridge.EventUpdated && ev.SessionID == ps.ID && ev.Updates != nil
	})
	if ev.Source != sessionbridge.SourceHTTP || ev.Version != 2 {
		t.Errorf("updated event %+v", ev)
	}

	// A stale If-Match is refused with 412; without If-Match the patch applies.
	resp = f.do(req{method: "PATCH", path: "/auth/session", cookie: tok, body: `{"theme":null}`,
		header: map[string]string{"Origin": f.srv.URL, "If-Match": `"1"`}})
	expect(t, resp, http.StatusPreconditionFailed)
	if code := resp.errorCode(t); code != CodeVersionConflict {
		t.Errorf("code %q", code)
	}
	resp = f.do(req{method: "PATCH", path: "/auth/session", cookie: tok, body: `{"theme":null}`, header: same})
	expect(t, resp, http.StatusOK)
	resp.json(t, &got)
	if string(got.Data) != `{"cart":{"items":2}}` || got.Version != 3 {
		t.Errorf("after second patch: %s", resp.body)
	}

	for _, c := range []struct {
		body, ifMatch, ctype string
		status               int
		code                 string
	}{
		{`[1,2]`, "", "application/json", 400, CodeInvalidPatch},
		{`"x"`, "", "application/json", 400, CodeInvalidPatch},
		{`{"a":1} {"b":2}`, "", "application/json", 400, CodeInvalidPatch},
		{`{"a":1}`, "3", "application/json", 400, CodeBadRequest},
		{`{"a":1}`, `W/"3"`, "application/json", 400, CodeBadRequest},
		{`{"a":1}`, "", "application/json-patch+json", 415, CodeUnsupportedMediaType},
		{`{"a":` + strings.Repeat(" ", MaxBodyBytes) + `1}`, "", "application/json", 413, CodeBodyTooLarge},
	} {
		h := map[string]string{"Origin": f.srv.URL, "Content-Type": c.ctype}
		if c.ifMatch != "" {
			h["If-Match"] = c.ifMatch
		}
		resp := f.do(req{method: "PATCH", path: "/auth/session", cookie: tok, body: c.body, header: h})
		expect(t, resp, c.status)
		if code := resp.errorCode(t); code != c.code {
			t.Errorf("body %.20q If-Match %q: code %q, want %q", c.body, c.ifMatch, code, c.code)
		}
	}
	expect(t, f.do(req{method: "PATCH", path: "/auth/session", body: `{}`, header: same}), http.StatusUnauthorized)
}

func TestMyDevices(t *testing.T) {
	f := newFixture(t)
	tok, me := f.login("alice")
	otherTok, other := f.login("alice")
	bobTok, bob := f.login("bob")
	f.presence.counts[me.ID] = 2
	f.presence.counts[other.ID] = 1
	same := map[string]string{"Origin": f.srv.URL}

	resp := f.do(req{method: "GET", path: "/auth/sessions", cookie: tok})
	expect(t, resp, http.StatusOK)
	var list struct {
		Sessions []struct {
			ID          string `json:"id"`
			UserID      string `json:"user_id"`
			Current     bool   `json:"current"`
			Connections int    `json:"connections"`
		} `json:"sessions"`
	}
	resp.json(t, &list)
	if len(list.Sessions) != 2 {
		t.Fatalf("device list %s", resp.body)
	}
	for _, s := range list.Sessions {
		switch {
		case s.UserID != "alice":
			t.Errorf("someone else's session in my list: %+v", s)
		case s.ID == me.ID && (!s.Current || s.Connections != 2):
			t.Errorf("current session entry %+v", s)
		case s.ID == other.ID && (s.Current || s.Connections != 1):
			t.Errorf("other session entry %+v", s)
		}
	}
	if strings.Contains(string(resp.body), otherTok) || strings.Contains(string(resp.body), tok) {
		t.Error("device list leaks a token")
	}

	// Someone else's session looks exactly like a missing one.
	for _, id := range []string{bob.ID, "nonsense", strings.Repeat("a", sessionbridge.IDLen)} {
		resp = f.do(req{method: "DELETE", path: "/auth/sessions/" + id, cookie: tok, header: same})
		expect(t, resp, http.StatusNotFound)
		if code := resp.errorCode(t); code != CodeNotFound {
			t.Errorf("code %q", code)
		}
	}
	if !f.exists(bob.ID) {
		t.Fatal("alice deleted bob's session")
	}

	expect(t, f.do(req{method: "DELETE", path: "/auth/sessions/" + other.ID, cookie: tok, header: same}), http.StatusNoContent)
	if f.exists(other.ID) {
		t.Fatal("revoked session still exists")
	}
	ev := f.events.waitFor(t, "deleted", func(ev sessionbridge.Event) bool {
		return ev.Type == sessionbridge.EventDeleted && ev.SessionID == other.ID
	})
	if ev.Reason != sessionbridge.ReasonRevoked {
		t.Errorf("reason %q", ev.Reason)
	}

	third, _ := f.create("alice")
	fourth, _ := f.create("alice")
	resp = f.do(req{method: "POST", path: "/auth/sessions/revoke-others", cookie: tok, header: same})
	expect(t, resp, http.StatusOK)
	var rev revokedList
	resp.json(t, &rev)
	if rev.Count != 2 || f.exists(third.ID) || f.exists(fourth.ID) || !f.exists(me.ID) || !f.exists(bob.ID) {
		t.Errorf("revoke-others: %s", resp.body)
	}

	// Deleting the current session signs out and clears the cookie.
	resp = f.do(req{method: "DELETE", path: "/auth/sessions/" + me.ID, cookie: tok, header: same})
	expect(t, resp, http.StatusNoContent)
	if c := resp.cookie("sb_session"); c == nil || c.MaxAge >= 0 {
		t.Error("deleting the current session kept the cookie")
	}
	expect(t, f.do(req{method: "GET", path: "/auth/sessions", cookie: tok}), http.StatusUnauthorized)
	expect(t, f.do(req{method: "GET", path: "/auth/sessions", cookie: bobTok}), http.StatusOK)
}

func TestWSTicket(t *testing.T) {
	f := newFixture(t)
	tok, ps := f.login("alice")
	resp := f.do(req{method: "POST", path: "/auth/ws-ticket", cookie: tok, header: map[string]string{"Sec-Fetch-Site": "same-origin"}})
	expect(t, resp, http.StatusOK)
	var tr ticketResponse
	resp.json(t, &tr)
	if tr.Ticket == "" || tr.ExpiresAt.IsZero() {
		t.Fatalf("ticket answer %s", resp.body)
	}
	tk, err := f.tickets.Redeem(context.Background(), tr.Ticket)
	if err != nil || tk.UserID != "alice" || tk.SessionID != ps.ID || tk.Method != sessionbridge.AuthSession {
		t.Fatalf("redeemed %+v, %v", tk, err)
	}
	if _, err := f.tickets.Redeem(context.Background(), tr.Ticket); err == nil {
		t.Error("ticket redeemed twice")
	}
	expect(t, f.do(req{method: "POST", path: "/auth/ws-ticket"}), http.StatusUnauthorized)
}

// Tickets are issued in the node's backend, where the authenticator
// redeems them: a backend without a ticket store has no ticket route.
func TestWSTicketWithoutTicketStore(t *testing.T) {
	f := newFixture(t, func(f *fixture) {
		mgr, err := sessionbridge.NewManager(sessionbridge.Backend{NodeID: "test", Store: f.store, Bus: memory.NewBus()})
		if err != nil {
			t.Fatal(err)
		}
		f.mgr, f.sessions.Manager = mgr, mgr
	})
	tok, _ := f.login("alice")
	resp := f.do(req{method: "POST", path: "/auth/ws-ticket", cookie: tok, header: map[string]string{"Sec-Fetch-Site": "same-origin"}})
	expect(t, resp, http.StatusNotFound)
}

func TestCrossOriginRefused(t *testing.T) {
	f := newFixture(t, func(f *fixture) { f.api.AllowedOrigins = []string{"https://app.example.com"} })
	tok, ps := f.login("alice")
	for _, q := range []req{
		{method: "POST", path: "/auth/logout"},
		{method: "PATCH", path: "/auth/session", body: `{"a":1}`},
		{method: "DELETE", path: "/auth/sessions/" + ps.ID},
		{method: "POST", path: "/auth/sessions/revoke-others"},
		{method: "POST", path: "/auth/ws-ticket"},
	} {
		for _, h := range []map[string]string{
			{"Origin": "https://evil.example"},
			{"Sec-Fetch-Site": "cross-site"},
			{"Sec-Fetch-Site": "same-site", "Origin": "https://sub.example.com"},
		} {
			q.cookie, q.header = tok, h
			resp := f.do(q)
			expect(t, resp, http.StatusForbidden)
			if code := resp.errorCode(t); code != CodeCrossOrigin {
				t.Errorf("code %q", code)
			}
		}
	}
	if !f.exists(ps.ID) {
		t.Fatal("a refused cross-origin request changed the session")
	}
	// A configured origin and the server's own origin pass.
	resp := f.do(req{method: "POST", path: "/auth/ws-ticket", cookie: tok, header: map[string]string{"Origin": "https://app.example.com", "Sec-Fetch-Site": "cross-site"}})
	expect(t, resp, http.StatusOK)
	resp = f.do(req{method: "POST", path: "/auth/ws-ticket", cookie: tok, header: map[string]string{"Origin": f.srv.URL}})
	expect(t, resp, http.StatusOK)
	// Reading is not a state change.
	expect(t, f.do(req{method: "GET", path: "/auth/session", cookie: tok, header: map[string]string{"Sec-Fetch-Site": "cross-site"}}), http.StatusOK)
}

func TestHealthAndReadiness(t *testing.T) {
	f := newFixture(t)
	expect(t, f.do(req{method: "GET", path: "/healthz"}), http.StatusOK)
	expect(t, f.do(req{method: "GET", path: "/readyz"}), http.StatusOK)
	f.ready.Store(false)
	resp := f.do(req{method: "GET", path: "/readyz"})
	expect(t, resp, http.StatusServiceUnavailable)
	if code := resp.errorCode(t); code != CodeNotReady {
		t.Errorf("code %q", code)
	}
	expect(t, f.do(req{method: "GET", path: "/healthz"}), http.StatusOK)
}

func TestRoutingErrors(t *testing.T) {
	f := newFixture(t)
	resp := f.do(req{method: "GET", path: "/auth/login"})
	expect(t, resp, http.StatusMethodNotAllowed)
	if resp.Header.Get("Allow") != "POST" || resp.errorCode(t) != CodeMethodNotAllowed {
		t.Errorf("405 answer: %v %s", resp.Header, resp.body)
	}
	resp = f.do(req{method: "PUT", path: "/api/v1/sessions/x", header: adminHeader()})
	expect(t, resp, http.StatusMethodNotAllowed)
	if resp.Header.Get("Allow") != "DELETE, GET, HEAD, PATCH" {
		t.Errorf("Allow %q", resp.Header.Get("Allow"))
	}
	resp = f.do(req{method: "GET", path: "/nope"})
	expect(t, resp, http.StatusNotFound)
	if resp.errorCode(t) != CodeNotFound {
		t.Error("404 without JSON code")
	}
}
