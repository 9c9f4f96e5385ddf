package storetest

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
)

// testChangedVersions: of the sessions a caller holds, the store names
// exactly those that are gone or at another version, through its own
// VersionChecker if it has one and through the Manager either way; a touch
// moves no version.
func testChangedVersions(t *testing.T, h *harness) {
	ctx := t.Context()
	m := h.manager(nil)
	user := newUser(t)
	var list []*sessionbridge.Session
	for range 5 {
		s, _, err := m.Create(ctx, sessionbridge.NewSession{UserID: user}, sessionbridge.Change{})
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, s)
	}
	held := make([]sessionbridge.SessionVersion, 0, len(list)+2)
	for _, s := range list {
		held = append(held, sessionbridge.SessionVersion{ID: s.ID, Version: s.Version})
	}
	updated, deleted, touched, ahead := list[0], list[1], list[2], list[3]
	if _, err := m.Update(ctx, updated.ID, json.RawMessage(`{"k":1}`), 0, sessionbridge.Change{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Delete(ctx, deleted.ID, sessionbridge.ReasonRevoked, sessionbridge.Change{}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := h.st.Touch(ctx, touched.ID, now, now.Add(time.Hour), now.Add(time.Hour), sessionbridge.Event{Type: sessionbridge.EventUpdated, SessionID: touched.ID, UserID: user, Timestamp: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	// A caller holding a version the store does not have (later than the
	// stored one) holds another session than the store's.
	held[3].Version = ahead.Version + 1
	missing := newID(t, user)
	held = append(held, sessionbridge.SessionVersion{ID: missing, Version: 1}, sessionbridge.SessionVersion{ID: "not an id", Version: 1})
	want := []string{updated.ID, deleted.ID, ahead.ID, missing, "not an id"}
	slices.Sort(want)

	check := func(name string, changed func([]sessionbridge.SessionVersion) ([]string, error)) {
		t.Helper()
		got, err := changed(held)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
		// Unchanged, and touched (a touch moves no version): none.
		for _, none := range [][]sessionbridge.SessionVersion{nil, {}, held[2:3], held[4:5]} {
			if got, err := changed(none); err != nil || len(got) != 0 {
				t.Errorf("%s(%v) = %q, %v; want none", name, none, got, err)
			}
		}
	}
	check("Manager.ChangedSessions", func(held []sessionbridge.SessionVersion) ([]string, error) {
		return m.ChangedSessions(ctx, held)
	})
	if vc, ok := h.raw.(sessionbridge.VersionChecker); ok {
		check("ChangedVersions", func(held []sessionbridge.SessionVersion) ([]string, error) {
			return vc.ChangedVersions(ctx, held)
		})
	}
}

// testClaimWrittenAfterRead: a store may remember what its expiry indexes
// held when a claim last read them, but a session written afterwards with an
// earlier deadline than any it held is still claimed at that deadline,
// exactly once. Its write may reach the claimer asynchronously (a hint on
// the bus), so the claim is polled, within eventWait.
func testClaimWrittenAfterRead(t *testing.T, h *harness) {
	ctx := t.Context()
	rec := watch(t, h.bus)
	now := time.Now()
	long, _ := makeSession(t, newUser(t), now)
	mustCreate(t, h.st, long)
	tmpl := sessionbridge.Event{Type: sessionbridge.EventExpired, Source: sessionbridge.SourceSystem, NodeID: "node-x", Timestamp: now}
	for range 3 {
		if got, err := h.st.ClaimExpired(ctx, now, 100, tmpl); err != nil || len(got) != 0 {
			t.Fatalf("ClaimExpired before any deadline = %d sessions, %v; want none", len(got), err)
		}
	}
	short, _ := makeSession(t, newUser(t), now)
	short.ExpiresAt = now.Add(2 * time.Second)
	mustCreate(t, h.st, short)
	at := now.Add(3 * time.Second)
	deadline := time.Now().Add(eventWait)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var claimed []*sessionbridge.Session
	for len(claimed) == 0 {
		got, err := h.st.ClaimExpired(ctx, at, 100, tmpl)
		if err != nil {
			t.Fatalf("ClaimExpired: %v", err)
		}
		claimed = got
		if len(got) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("the session written after the claim read the indexes was not claimed within %v", eventWait)
			}
			<-tick.C
		}
	}
	if len(claimed) != 1 || claimed[0].ID != short.ID {
		t.Fatalf("claimed %d sessions, want only %s", len(claimed), short.ID)
	}
	if got, err := h.st.ClaimExpired(ctx, at, 100, tmpl); err != nil || len(got) != 0 {
		t.Fatalf("claimed again: %d sessions, %v", len(got), err)
	}
	rec.waitUntil(t, "the expired event", func(ev sessionbridge.Event) bool {
		return ev.Type == sessionbridge.EventExpired && ev.SessionID == short.ID
	})
}
