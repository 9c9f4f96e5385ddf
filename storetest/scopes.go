package storetest

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/scope"
)

// testScopesRoundTrip: a session's scopes are stored beside its data and come
// back exactly, telling "none stored" (nil) from "no scope at all" (empty),
// through Get, GetMany, ListUser and Delete.
func testScopesRoundTrip(t *testing.T, h *harness) {
	ctx := t.Context()
	user := newUser(t)
	now := time.Now()
	cases := map[string][]string{
		"default": nil,
		"none":    {},
		"some":    {"ws:connect", "chat.*", "!chat.admin", "rooms.**"},
	}
	byID := map[string]*sessionbridge.Session{}
	for name, sc := range cases {
		s, _ := makeSession(t, user, now)
		s.Scopes = sc
		mustCreate(t, h.st, s)
		byID[s.ID] = s
		got := mustGet(t, h.st, s.ID)
		if !sameScopes(got.Scopes, sc) {
			t.Errorf("%s: Get returned scopes %#v, want %#v", name, got.Scopes, sc)
		}
		checkSession(t, got, s)
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	many, err := h.st.GetMany(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range byID {
		checkSession(t, many[id], want)
	}
	list, err := h.st.ListUser(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		checkSession(t, s, byID[s.ID])
	}
	for id, want := range byID {
		gone, err := h.st.Delete(ctx, id, sessionbridge.Event{Type: sessionbridge.EventDeleted, SessionID: id, Reason: sessionbridge.ReasonRevoked})
		if err != nil {
			t.Fatal(err)
		}
		if !sameScopes(gone.Scopes, want.Scopes) {
			t.Errorf("Delete returned scopes %#v, want %#v", gone.Scopes, want.Scopes)
		}
	}
}

// testScopesPatch: Manager.Patch changes scopes (alone or with data) as one
// update whose event carries them; Manager.Update (a user's own patch) never
// touches them, even when the data patch has a member named "scopes"; an
// invalid pattern changes nothing.
func testScopesPatch(t *testing.T, h *harness) {
	ctx := t.Context()
	rec := watch(t, h.bus)
	m := h.manager(nil)
	s, _, err := m.Create(ctx, sessionbridge.NewSession{UserID: newUser(t), Data: json.RawMessage(`{"a":1}`), Scopes: []string{"ws:connect", "chat.*"}}, sessionbridge.Change{})
	if err != nil {
		t.Fatal(err)
	}
	checkSession(t, mustGet(t, h.st, s.ID), s)

	// The user's own patch: lands in data, scopes unchanged.
	u, err := m.Update(ctx, s.ID, json.RawMessage(`{"scopes":["**"]}`), 0, sessionbridge.Change{Source: sessionbridge.SourceHTTP})
	if err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, h.st, s.ID)
	checkSession(t, got, u)
	if !sameScopes(got.Scopes, []string{"ws:connect", "chat.*"}) || !sameJSON(got.Data, json.RawMessage(`{"a":1,"scopes":["**"]}`)) {
		t.Fatalf("after a data patch naming scopes: scopes %#v data %s", got.Scopes, got.Data)
	}

	// Scopes alone: the data stays, the version moves, the event says so.
	only := []string{"ws:connect", "!chat.admin", "chat.**"}
	p1, err := m.Patch(ctx, s.ID, sessionbridge.SessionPatch{Scopes: &only}, 0, sessionbridge.Change{Source: sessionbridge.SourceAPI})
	if err != nil {
		t.Fatal(err)
	}
	got = mustGet(t, h.st, s.ID)
	checkSession(t, got, p1)
	if got.Version != u.Version+1 || !sameScopes(got.Scopes, only) || !sameJSON(got.Data, u.Data) {
		t.Fatalf("after a scopes patch: version %d scopes %#v data %s", got.Version, got.Scopes, got.Data)
	}

	// Data and scopes at once, with the version given; then no scope at all.
	p2, err := m.Patch(ctx, s.ID, sessionbridge.SessionPatch{Data: json.RawMessage(`{"a":null}`), Scopes: &[]string{"**"}}, p1.Version, sessionbridge.Change{Source: sessionbridge.SourceAPI})
	if err != nil {
		t.Fatal(err)
	}
	checkSession(t, mustGet(t, h.st, s.ID), p2)
	none := []string{}
	p3, err := m.Patch(ctx, s.ID, sessionbridge.SessionPatch{Scopes: &none}, 0, sessionbridge.Change{Source: sessionbridge.SourceAPI})
	if err != nil {
		t.Fatal(err)
	}
	got = mustGet(t, h.st, s.ID)
	checkSession(t, got, p3)
	if got.Scopes == nil || len(got.Scopes) != 0 {
		t.Fatalf("after setting no scopes: %#v, want an empty list", got.Scopes)
	}

	// Refused: an invalid pattern, and a stale version; nothing changes.
	bad := []string{"ws:connect", "chat.**.x"}
	if _, err := m.Patch(ctx, s.ID, sessionbridge.SessionPatch{Data: json.RawMessage(`{"b":2}`), Scopes: &bad}, 0, sessionbridge.Change{}); !errors.Is(err, scope.ErrInvalid) {
		t.Fatalf("Patch with an invalid pattern = %v, want scope.ErrInvalid", err)
	}
	if _, err := m.Patch(ctx, s.ID, sessionbridge.SessionPatch{Scopes: &only}, p1.Version, sessionbridge.Change{}); !errors.Is(err, sessionbridge.ErrVersionConflict) {
		t.Fatalf("Patch of a stale version = %v, want ErrVersionConflict", err)
	}
	checkSession(t, mustGet(t, h.st, s.ID), p3)
	if _, _, err := m.Create(ctx, sessionbridge.NewSession{UserID: newUser(t), Scopes: bad}, sessionbridge.Change{}); !errors.Is(err, scope.ErrInvalid) {
		t.Fatalf("Create with an invalid pattern = %v, want scope.ErrInvalid", err)
	}

	evs := sentinel(t, h.bus, rec)
	var ups []sessionbridge.Event
	for _, ev := range ofType(evs, sessionbridge.EventUpdated) {
		if ev.SessionID == s.ID && len(ev.Updates) > 0 {
			ups = append(ups, ev)
		}
	}
	if len(ups) != 4 {
		t.Fatalf("update events %s, want 4", describe(ups))
	}
	for i, want := range []struct {
		version uint64
		updates string
		scopes  []string
	}{
		{u.Version, `{"scopes":["**"]}`, nil},
		{p1.Version, `{}`, only},
		{p2.Version, `{"a":null}`, []string{"**"}},
		{p3.Version, `{}`, []string{}},
	} {
		ev := ups[i]
		if ev.Version != want.version || !sameJSON(ev.Updates, json.RawMessage(want.updates)) || !sameScopes(ev.Scopes, want.scopes) {
			t.Errorf("update event %d: version %d updates %s scopes %#v; want %d %s %#v", i, ev.Version, ev.Updates, ev.Scopes, want.version, want.updates, want.scopes)
		}
	}
}

// testScopesRotate: a rotation carries the session's scopes over to the new
// ID, explicit or default.
func testScopesRotate(t *testing.T, h *harness) {
	ctx := t.Context()
	m := h.manager(nil)
	for _, sc := range [][]string{nil, {}, {"ws:connect", "chat.*"}} {
		s, _, err := m.Create(ctx, sessionbridge.NewSession{UserID: newUser(t), Scopes: sc}, sessionbridge.Change{})
		if err != nil {
			t.Fatal(err)
		}
		next, _, err := m.Rotate(ctx, s.ID, sessionbridge.Change{Source: sessionbridge.SourceHTTP})
		if err != nil {
			t.Fatal(err)
		}
		got := mustGet(t, h.st, next.ID)
		checkSession(t, got, next)
		if !sameScopes(got.Scopes, sc) {
			t.Errorf("rotated session scopes %#v, want %#v", got.Scopes, sc)
		}
	}
	// Scopes set after creation ride along too.
	s, _, err := m.Create(ctx, sessionbridge.NewSession{UserID: newUser(t)}, sessionbridge.Change{})
	if err != nil {
		t.Fatal(err)
	}
	set := []string{"ws:connect", "!admin.**", "**"}
	if _, err := m.Patch(ctx, s.ID, sessionbridge.SessionPatch{Scopes: &set}, 0, sessionbridge.Change{}); err != nil {
		t.Fatal(err)
	}
	next, _, err := m.Rotate(ctx, s.ID, sessionbridge.Change{})
	if err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, h.st, next.ID); !sameScopes(got.Scopes, set) {
		t.Fatalf("rotated session scopes %#v, want %#v", got.Scopes, set)
	}
}
