package clustertest

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/gateway"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

// TestScopesChangeOnAReachesB: an administrator's change of a session's
// scopes on one node reaches the session's sockets on every node from the
// updated event, with no reconnect; losing ws:connect
// closes them 4403 everywhere.
func TestScopesChangeOnAReachesB(t *testing.T) {
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, nodeOpts{})
	s, tok, err := a.manager.Create(bg, sb.NewSession{UserID: "carol", Scopes: []string{"ws:connect", "chat.*"}}, sb.Change{Source: sb.SourceAPI})
	if err != nil {
		t.Fatal(err)
	}
	ca, cb := dial(t, a, tok), dial(t, b, tok)
	for _, c := range []*client{ca, cb} {
		c.send(gateway.TypeSessionGet, "g0", nil)
		if d := errorData(t, c.expect(gateway.TypeError, eventWait)); d.Code != gateway.CodeForbidden || d.ID != "g0" {
			t.Fatalf("session.get before the change: %+v", d)
		}
	}

	scopes := []string{"ws:connect", "session.*"}
	if _, err := a.manager.Patch(bg, s.ID, sb.SessionPatch{Scopes: &scopes}, 0, sb.Change{Source: sb.SourceAPI}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{ca, cb} {
		if got := scopesUpdated(t, c.expect(gateway.TypeScopesUpdated, eventWait)); !slices.Equal(got, scopes) {
			t.Fatalf("scopes.updated %v, want %v", got, scopes)
		}
		c.send(gateway.TypeSessionGet, "g1", nil)
		if f := c.expect(gateway.TypeSession, eventWait); f.ID != "g1" {
			t.Fatalf("session.get after the change: %+v", f)
		}
		c.send("chat.send", "c1", nil)
		if d := errorData(t, c.expect(gateway.TypeError, eventWait)); d.Code != gateway.CodeForbidden || d.ID != "c1" {
			t.Fatalf("chat.send after the change: %+v", d)
		}
	}

	// Changed on B this time, without ws:connect: closed on both nodes.
	lost := []string{"session.*"}
	if _, err := b.manager.Patch(bg, s.ID, sb.SessionPatch{Scopes: &lost}, 0, sb.Change{Source: sb.SourceAPI}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{ca, cb} {
		c.expectClose(gateway.CloseForbidden, gateway.ReasonForbidden, eventWait)
	}
	for _, n := range []*node{a, b} {
		if _, resp, err := tryDial(n.srv.URL, tok); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("dial %s without ws:connect: %v; want 403", n.name, err)
		}
	}
}

func scopesUpdated(t *testing.T, f frame) []string {
	t.Helper()
	var d struct {
		Scopes []string `json:"scopes"`
	}
	if err := json.Unmarshal(f.Data, &d); err != nil {
		t.Fatal(err)
	}
	return d.Scopes
}

type errorFrame struct {
	ID   string `json:"id"`
	Code string `json:"code"`
}

func errorData(t *testing.T, f frame) errorFrame {
	t.Helper()
	var d errorFrame
	if err := json.Unmarshal(f.Data, &d); err != nil {
		t.Fatal(err)
	}
	return d
}
