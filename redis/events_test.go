package redis

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

// TestScriptFilledEventsKeepAwkwardUserIDs checks the events whose user and
// version only Redis knows (delete, touch, expiry): user IDs with quotes,
// backslashes, slashes and non-ASCII text must arrive exactly, and data that
// looks like a placeholder must not be touched.
func TestScriptFilledEventsKeepAwkwardUserIDs(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv)
	rec := &recorder{}
	subscribe(t, b, rec)
	user := `a"b\c/é😀 @@sb:user_id@@`

	s := newSession(t, user)
	s2 := newSession(t, user)
	followSessions(t, b, rec, s.ID, s2.ID)
	s.Data = json.RawMessage(`{"x":"@@sb:user_id@@","version":18446744073709551615}`)
	s.Version = 5
	if err := b.Store().Create(bg, s, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	seen := time.Now().Add(time.Second)
	if ok, err := b.Store().Touch(bg, s.ID, seen, seen.Add(time.Hour), seen, sessionbridge.Event{Source: sessionbridge.SourceHTTP}); err != nil || !ok {
		t.Fatalf("Touch = %v, %v", ok, err)
	}
	if _, err := b.Store().Delete(bg, s.ID, sessionbridge.Event{Reason: sessionbridge.ReasonLogout}); err != nil {
		t.Fatal(err)
	}

	s2.ExpiresAt = time.Now().Add(-time.Second)
	if err := b.Store().Create(bg, s2, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	got, err := b.Store().ClaimExpired(bg, time.Now(), 10, sessionbridge.Event{NodeID: "n", Source: sessionbridge.SourceSystem})
	if err != nil || len(got) != 1 || got[0].ID != s2.ID || got[0].UserID != user {
		t.Fatalf("ClaimExpired = %v, %v", got, err)
	}

	for _, want := range []struct {
		typ     sessionbridge.EventType
		id      string
		version uint64
	}{{sessionbridge.EventUpdated, s.ID, 5}, {sessionbridge.EventDeleted, s.ID, 5}, {sessionbridge.EventExpired, s2.ID, 1}} {
		var ev sessionbridge.Event
		eventually(t, 5*time.Second, string(want.typ)+" event", func() bool {
			var ok bool
			ev, ok = rec.find(func(ev sessionbridge.Event) bool { return ev.Type == want.typ && ev.SessionID == want.id })
			return ok
		})
		if ev.UserID != user || ev.Version != want.version {
			t.Errorf("%s event: user %q version %d; want %q, %d", want.typ, ev.UserID, ev.Version, user, want.version)
		}
	}
}

// TestKeysCarryBackstopTTLs checks that a session's keys expire by
// themselves some grace after its deadline, even if no node ever claims it.
func TestKeysCarryBackstopTTLs(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv, func(o *Options) { o.KeyGrace = time.Minute })
	s := newSession(t, "ttl-user")
	if err := b.Store().Create(bg, s, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	want := s.Deadline().Add(time.Minute).UnixMilli()
	for _, key := range []string{b.sessionKey(s.ID), b.userKey(s.UserID)} {
		at := srv.MustDo("PEXPIRETIME", key).(int64)
		if at != want {
			t.Errorf("PEXPIRETIME %s = %d, want %d", key, at, want)
		}
	}
	score := srv.MustDo("ZSCORE", b.expiryKey(sessionbridge.ShardOfID(s.ID)), s.ID)
	if score != json.Number(millis(s.Deadline())).String() {
		t.Errorf("expiry score = %v, want %s", score, millis(s.Deadline()))
	}
}

// TestIndexesHealWhenASessionKeyVanishes covers a session hash that expired
// through its backstop TTL before any node claimed it: the claim still
// publishes its expiry (so its sockets close) and cleans the expiry index,
// and listing the user drops it from the user index.
func TestIndexesHealWhenASessionKeyVanishes(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv)
	rec := &recorder{}
	subscribe(t, b, rec)
	s := newSession(t, "vanish-user")
	followSessions(t, b, rec, s.ID)
	s.ExpiresAt = time.Now().Add(-time.Minute)
	if err := b.Store().Create(bg, s, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	srv.MustDo("DEL", b.sessionKey(s.ID))

	if list, err := b.Store().ListUser(bg, s.UserID); err != nil || len(list) != 0 {
		t.Fatalf("ListUser = %v, %v; want empty", list, err)
	}
	if n := srv.MustDo("SISMEMBER", b.userKey(s.UserID), s.ID).(int64); n != 0 {
		t.Fatal("the user index still lists the vanished session")
	}
	got, err := b.Store().ClaimExpired(bg, time.Now(), 10, sessionbridge.Event{Source: sessionbridge.SourceSystem})
	if err != nil || len(got) != 0 {
		t.Fatalf("ClaimExpired = %v, %v; want nothing to return", got, err)
	}
	if v := srv.MustDo("ZSCORE", b.expiryKey(sessionbridge.ShardOfID(s.ID)), s.ID); v != nil {
		t.Fatal("the expiry index still lists the vanished session")
	}
	eventually(t, 5*time.Second, "its expired event", func() bool {
		_, ok := rec.find(func(ev sessionbridge.Event) bool {
			return ev.Type == sessionbridge.EventExpired && ev.SessionID == s.ID
		})
		return ok
	})
}

func TestDamagedHashFailsClosed(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv)
	good, bad := newSession(t, "dmg-user"), newSession(t, "dmg-user")
	for _, s := range []*sessionbridge.Session{good, bad} {
		if err := b.Store().Create(bg, s, sessionbridge.Event{}); err != nil {
			t.Fatal(err)
		}
	}
	srv.MustDo("HSET", b.sessionKey(bad.ID), "version", "not-a-number")
	got, err := b.Store().GetMany(bg, []string{good.ID, bad.ID})
	if err != nil || len(got) != 1 || got[good.ID] == nil {
		t.Fatalf("GetMany = %v, %v; want only the intact session", got, err)
	}
	if _, err := b.Store().Get(bg, bad.ID); err == nil {
		t.Fatal("Get of a damaged hash: want an error")
	}
	m := nodeManager(t, b)
	if _, err := m.Get(bg, bad.ID); err == nil {
		t.Fatal("Manager.Get of a damaged hash: want an error")
	}
}
