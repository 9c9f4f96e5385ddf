package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
)

// testLateTouchSurvivesUpdate: an update prepared from a read made before a
// touch keeps the touch's LastSeenAt and deadline (in the session, the expiry
// index and the event), so that a page's activity is never undone by a
// concurrent data change.
func testLateTouchSurvivesUpdate(t *testing.T, h *harness) {
	ctx := t.Context()
	rec := watch(t, h.bus)
	now := time.Now()
	s, _ := makeSession(t, newUser(t), now)
	mustCreate(t, h.st, s)
	read := s.Clone() // the updater's read, before the touch

	seen := now.Add(time.Minute)
	touched := seen.Add(30 * time.Minute)
	touchEv := sessionbridge.Event{
		Type: sessionbridge.EventUpdated, SessionID: s.ID, UserID: s.UserID, Source: sessionbridge.SourceHTTP,
		NodeID: "node-a", Timestamp: seen, Version: 1, ExpiresAt: touched,
	}
	if wrote, err := h.st.Touch(ctx, s.ID, seen, touched, seen, touchEv); err != nil || !wrote {
		t.Fatalf("Touch = %v, %v; want true, nil", wrote, err)
	}

	next := read.Clone()
	next.Data = json.RawMessage(`{"theme":"light"}`)
	next.Version = 2
	upd := sessionbridge.Event{
		Type: sessionbridge.EventUpdated, SessionID: s.ID, UserID: s.UserID, Source: sessionbridge.SourceWebSocket,
		NodeID: "node-b", Timestamp: now, Version: 2, ExpiresAt: read.Deadline(),
		Updates: json.RawMessage(`{"theme":"light"}`),
	}
	if err := h.st.Update(ctx, next, 1, upd); err != nil {
		t.Fatalf("Update from a read older than a touch: %v", err)
	}
	want := next.Clone()
	want.LastSeenAt, want.ExpiresAt = seen, touched
	checkSession(t, mustGet(t, h.st, s.ID), want)

	// The expiry index keeps the touched deadline too.
	tmpl := sessionbridge.Event{Type: sessionbridge.EventExpired, Source: sessionbridge.SourceSystem, NodeID: "node-a", Timestamp: read.Deadline()}
	if got, err := h.st.ClaimExpired(ctx, read.Deadline().Add(time.Millisecond), 10, tmpl); err != nil || len(got) != 0 {
		t.Fatalf("ClaimExpired past the deadline the update was read with = %d sessions, %v; want none", len(got), err)
	}

	evs := ofType(sentinel(t, h.bus, rec), sessionbridge.EventUpdated)
	if len(evs) != 2 {
		t.Fatalf("updated events %s, want the touch and the update", describe(evs))
	}
	checkEvent(t, evs[0], touchEv)
	wantUpd := upd
	wantUpd.ExpiresAt = touched
	checkEvent(t, evs[1], wantUpd)
}

// testExpiredNotTouched: activity that arrives at or after a session's idle
// or absolute deadline does not extend it: the touch writes nothing,
// publishes nothing, and the session is claimed at its old deadline.
func testExpiredNotTouched(t *testing.T, h *harness) {
	ctx := t.Context()
	rec := watch(t, h.bus)
	now := time.Now()
	user := newUser(t)
	idle, _ := makeSession(t, user, now) // idle deadline now+30m
	abs, _ := makeSession(t, user, now)
	abs.AbsoluteExpiresAt = now.Add(20 * time.Minute) // before its idle deadline
	for _, s := range []*sessionbridge.Session{idle, abs} {
		mustCreate(t, h.st, s)
	}
	for _, s := range []*sessionbridge.Session{idle, abs} {
		for _, seen := range []time.Time{s.Deadline(), s.Deadline().Add(time.Minute)} {
			ev := sessionbridge.Event{
				Type: sessionbridge.EventUpdated, SessionID: s.ID, UserID: s.UserID, Source: sessionbridge.SourceHTTP,
				NodeID: "node-a", Timestamp: seen, Version: 1, ExpiresAt: seen.Add(30 * time.Minute),
			}
			wrote, err := h.st.Touch(ctx, s.ID, seen, seen.Add(30*time.Minute), seen, ev)
			if err != nil || wrote {
				t.Fatalf("Touch at deadline+%v = %v, %v; want false, nil", seen.Sub(s.Deadline()), wrote, err)
			}
			checkSession(t, mustGet(t, h.st, s.ID), s)
		}
	}
	tmpl := sessionbridge.Event{Type: sessionbridge.EventExpired, Source: sessionbridge.SourceSystem, NodeID: "node-a", Timestamp: idle.Deadline()}
	got, err := h.st.ClaimExpired(ctx, idle.Deadline(), 10, tmpl)
	if err != nil || len(got) != 2 {
		t.Fatalf("ClaimExpired at the old deadlines = %d sessions, %v; want both", len(got), err)
	}
	if u := ofType(sentinel(t, h.bus, rec), sessionbridge.EventUpdated); len(u) != 0 {
		t.Fatalf("touches of expired sessions published %s, want nothing", describe(u))
	}
}

// testDeletedEventNamesUser: a deleted event names the session's user and
// the version it had even when the write did not (the Manager deletes by ID
// alone), so that nodes can route it by user.
func testDeletedEventNamesUser(t *testing.T, h *harness) {
	ctx := t.Context()
	rec := watch(t, h.bus)
	m := h.manager(nil)
	user := newUser(t)
	s, _, err := m.Create(ctx, sessionbridge.NewSession{UserID: user}, sessionbridge.Change{Source: sessionbridge.SourceAPI})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Delete(ctx, s.ID, sessionbridge.ReasonRevoked, sessionbridge.Change{Source: sessionbridge.SourceAPI}); err != nil {
		t.Fatal(err)
	}
	raw, _ := makeSession(t, user, time.Now())
	raw.Version = 3
	mustCreate(t, h.st, raw)
	if _, err := h.st.Delete(ctx, raw.ID, sessionbridge.Event{Type: sessionbridge.EventDeleted, Source: sessionbridge.SourceHTTP, NodeID: "node-a", Reason: sessionbridge.ReasonLogout}); err != nil {
		t.Fatal(err)
	}
	del := ofType(sentinel(t, h.bus, rec), sessionbridge.EventDeleted)
	if len(del) != 2 {
		t.Fatalf("deleted events %s, want two", describe(del))
	}
	for i, want := range []*sessionbridge.Session{s, raw} {
		if del[i].SessionID != want.ID || del[i].UserID != user || del[i].Version != want.Version {
			t.Errorf("deleted event %d names session %q of user %q at version %d, want %q of %q at %d",
				i, del[i].SessionID, del[i].UserID, del[i].Version, want.ID, user, want.Version)
		}
	}
	if del[0].Reason != sessionbridge.ReasonRevoked || del[1].Reason != sessionbridge.ReasonLogout {
		t.Errorf("deleted reasons %q, %q; want %q, %q", del[0].Reason, del[1].Reason, sessionbridge.ReasonRevoked, sessionbridge.ReasonLogout)
	}
}

// testRotateVersion: a rotation prepared from a read applies only if the
// session did not change since (its Version is still one below the rotated
// session's and no later touch was recorded); otherwise it changes nothing
// and reports ErrVersionConflict, so that an update or touch landing between
// the read and the rotation is never lost. The Manager re-reads and retries.
func testRotateVersion(t *testing.T, h *harness) {
	ctx := t.Context()
	rec := watch(t, h.bus)
	now := time.Now()
	s, _ := makeSession(t, newUser(t), now)
	mustCreate(t, h.st, s)
	stale := s.Clone()

	next := s.Clone()
	next.Data = json.RawMessage(`{"cart":[1]}`)
	next.Version = 2
	if err := h.st.Update(ctx, next, 1, sessionbridge.Event{Type: sessionbridge.EventUpdated, Version: 2, Updates: json.RawMessage(`{"cart":[1]}`)}); err != nil {
		t.Fatal(err)
	}
	lost := rotated(t, stale)
	del, cre := rotatedEvents(stale, lost)
	if err := h.st.Rotate(ctx, s.ID, lost, del, cre); !errors.Is(err, sessionbridge.ErrVersionConflict) {
		t.Fatalf("Rotate from a read older than an update = %v, want ErrVersionConflict", err)
	}
	checkSession(t, mustGet(t, h.st, s.ID), next)
	wantNotFound(t, h.st, lost.ID)

	// A touch after the read also makes the rotation stale.
	cur := mustGet(t, h.st, s.ID)
	seen := now.Add(time.Minute)
	touchEv := sessionbridge.Event{Type: sessionbridge.EventUpdated, SessionID: s.ID, UserID: s.UserID, Timestamp: seen, Version: 2, ExpiresAt: seen.Add(30 * time.Minute)}
	if wrote, err := h.st.Touch(ctx, s.ID, seen, seen.Add(30*time.Minute), seen, touchEv); err != nil || !wrote {
		t.Fatalf("Touch = %v, %v", wrote, err)
	}
	lost = rotated(t, cur)
	del, cre = rotatedEvents(cur, lost)
	if err := h.st.Rotate(ctx, s.ID, lost, del, cre); !errors.Is(err, sessionbridge.ErrVersionConflict) {
		t.Fatalf("Rotate from a read older than a touch = %v, want ErrVersionConflict", err)
	}
	wantNotFound(t, h.st, lost.ID)

	cur = mustGet(t, h.st, s.ID)
	r := rotated(t, cur)
	del, cre = rotatedEvents(cur, r)
	if err := h.st.Rotate(ctx, s.ID, r, del, cre); err != nil {
		t.Fatalf("Rotate from a fresh read: %v", err)
	}
	wantNotFound(t, h.st, s.ID)
	checkSession(t, mustGet(t, h.st, r.ID), r)
	if r.Version != 3 || !sameTime(r.LastSeenAt, seen) || !sameJSON(r.Data, next.Data) {
		t.Fatalf("rotated session: version %d last seen %v data %s; want 3, the touch, %s", r.Version, r.LastSeenAt, r.Data, next.Data)
	}
	evs := sentinel(t, h.bus, rec)
	if d := ofType(evs, sessionbridge.EventDeleted); len(d) != 1 || d[0].SessionID != s.ID {
		t.Errorf("deleted events %s, want only the successful rotation's", describe(d))
	}
	if c := ofType(evs, sessionbridge.EventCreated); len(c) != 2 || c[1].SessionID != r.ID {
		t.Errorf("created events %s, want the session's and the successful rotation's", describe(c))
	}

	// Through the Manager: updates racing a rotation are either in the
	// rotated session or reported as failed (the old ID is gone), never
	// silently lost.
	m := h.manager(nil)
	for round := range 10 {
		ms, _, err := m.Create(ctx, sessionbridge.NewSession{UserID: s.UserID}, sessionbridge.Change{})
		if err != nil {
			t.Fatal(err)
		}
		var applied []string
		start := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			<-start
			for i := range 100 {
				key := fmt.Sprintf("k%d", i)
				_, err := m.Update(ctx, ms.ID, json.RawMessage(fmt.Sprintf(`{%q:true}`, key)), 0, sessionbridge.Change{})
				if errors.Is(err, sessionbridge.ErrNotFound) {
					return
				}
				if err != nil {
					t.Errorf("round %d: Update = %v, want nil or ErrNotFound", round, err)
					return
				}
				applied = append(applied, key)
			}
		}()
		close(start)
		rs, _, err := m.Rotate(ctx, ms.ID, sessionbridge.Change{})
		<-done
		if err != nil {
			t.Fatalf("round %d: Manager.Rotate: %v", round, err)
		}
		var data map[string]any
		if err := json.Unmarshal(mustGet(t, h.st, rs.ID).Data, &data); err != nil {
			t.Fatal(err)
		}
		for _, k := range applied {
			if data[k] != true {
				t.Fatalf("round %d: update %s succeeded before the rotation but is not in the rotated session: %v", round, k, data)
			}
		}
	}
}
