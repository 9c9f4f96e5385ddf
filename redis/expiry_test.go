package redis

import (
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

var expiredTmpl = sessionbridge.Event{NodeID: "n", Source: sessionbridge.SourceSystem}

// claimIDs runs one ClaimExpired at now and returns the IDs it claimed.
func claimIDs(t *testing.T, b *Backend, now time.Time) ([]string, error) {
	t.Helper()
	got, err := b.Store().ClaimExpired(bg, now, 0, expiredTmpl)
	ids := make([]string, len(got))
	for i, s := range got {
		ids[i] = s.ID
	}
	return ids, err
}

// mustCreateSession stores s through b.
func mustCreateSession(t *testing.T, b *Backend, s *sessionbridge.Session) {
	t.Helper()
	if err := b.Store().Create(bg, s, sessionbridge.Event{Type: sessionbridge.EventCreated, SessionID: s.ID, UserID: s.UserID, Version: 1}); err != nil {
		t.Fatal(err)
	}
}

// claimsWithin polls ClaimExpired at now until it claims id (and nothing
// else), and fails unless that happens within expiryRecheck of read, the
// claim's last full read of the indexes: the backstop must not be what
// found it.
func claimsWithin(t *testing.T, b *Backend, now, read time.Time, id string) {
	t.Helper()
	var got []string
	eventually(t, time.Until(read.Add(expiryRecheck)), "the claim of "+id, func() bool {
		ids, err := claimIDs(t, b, now)
		got = append(got, ids...)
		return err == nil && len(got) > 0
	})
	if len(got) != 1 || got[0] != id {
		t.Fatalf("claimed %q, want only %s", got, id)
	}
	if d := time.Since(read); d >= expiryRecheck {
		t.Fatalf("claimed %v after the last full read, by the backstop", d)
	}
	if ids, err := claimIDs(t, b, now); err != nil || len(ids) != 0 {
		t.Fatalf("claimed again: %q, %v", ids, err)
	}
}

// TestExpiryIdleReadsNoIndex: once the claim has read the indexes, a claim
// that finds nothing due reads none, and a session written afterwards (by
// another node) with a deadline earlier than any the claim knew is claimed
// at its deadline all the same: its write published a hint.
func TestExpiryIdleReadsNoIndex(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv, func(o *Options) { o.Prefix = "sbx:" })
	other := newBackend(t, srv, func(o *Options) { o.Prefix = "sbx:" })
	subscribe(t, a, &recorder{})
	long := newSession(t, "alice")
	mustCreateSession(t, other, long)

	now := time.Now()
	read := time.Now()
	if ids, err := claimIDs(t, a, now); err != nil || len(ids) != 0 {
		t.Fatalf("first claim = %q, %v", ids, err)
	}
	before := commandCalls(t, srv, "zrange")
	for range 5 {
		if ids, err := claimIDs(t, a, now); err != nil || len(ids) != 0 {
			t.Fatalf("idle claim = %q, %v", ids, err)
		}
	}
	if n := commandCalls(t, srv, "zrange") - before; n != 0 {
		t.Fatalf("five idle claims read %d indexes, want none", n)
	}

	short := newSession(t, "bob")
	short.ExpiresAt = now.Add(2 * time.Second)
	mustCreateSession(t, other, short)
	claimsWithin(t, a, now.Add(3*time.Second), read, short.ID)
	if ids, err := claimIDs(t, a, long.ExpiresAt); err != nil || len(ids) != 1 || ids[0] != long.ID {
		t.Fatalf("claim at the long deadline = %q, %v", ids, err)
	}
}

// TestExpiryAfterRedisRestart: Redis restarts from a snapshot that holds a
// session with an earlier deadline than the one the claim had read since (no
// hint announces it); the claim reads every index again once it reconnects
// and claims it, once.
func TestExpiryAfterRedisRestart(t *testing.T) {
	srv := redistest.Start(t, redistest.RDBSnapshots()...)
	a := newBackend(t, srv, func(o *Options) { o.Prefix = "sbx:" })
	rec := &recorder{}
	subscribe(t, a, rec)
	now := time.Now()
	s := newSession(t, "alice")
	s.ExpiresAt, s.AbsoluteExpiresAt = now.Add(time.Hour), now.Add(5*time.Hour)
	mustCreateSession(t, a, s)
	srv.MustDo("SAVE")
	if ok, err := a.Store().Touch(bg, s.ID, now, now.Add(3*time.Hour), now.Add(time.Second), sessionbridge.Event{Type: sessionbridge.EventUpdated, SessionID: s.ID, UserID: s.UserID}); !ok || err != nil {
		t.Fatalf("Touch = %v, %v", ok, err)
	}
	at := now.Add(2 * time.Hour)
	read := time.Now()
	for range 2 {
		if ids, err := claimIDs(t, a, at); err != nil || len(ids) != 0 {
			t.Fatalf("claim before the restart = %q, %v", ids, err)
		}
	}
	gaps := rec.gapCount()
	srv.RestartKeepingData()
	eventually(t, restartWait, "the subscription to come back", func() bool { return rec.gapCount() > gaps })
	claimsWithin(t, a, at, read, s.ID)
}

// TestExpiryTurnMoves: a node that did not hold the turn for a while reads
// every index when it holds it again, so that deadlines it could not hear
// of are claimed; each session is claimed once whichever node claims.
func TestExpiryTurnMoves(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv, func(o *Options) { o.Prefix, o.NodeID = "sbx:", "node-a" })
	b := newBackend(t, srv, func(o *Options) { o.Prefix, o.NodeID = "sbx:", "node-b" })
	subscribe(t, a, &recorder{})
	subscribe(t, b, &recorder{})
	now := time.Now()
	at := now.Add(2 * time.Hour)
	s1, s2 := newSession(t, "alice"), newSession(t, "bob")
	s1.ExpiresAt, s2.ExpiresAt = now.Add(3*time.Hour), now.Add(3*time.Hour)
	s1.AbsoluteExpiresAt, s2.AbsoluteExpiresAt = now.Add(4*time.Hour), now.Add(4*time.Hour)
	mustCreateSession(t, a, s1)
	mustCreateSession(t, a, s2)
	turn := func(n *Backend, want bool) {
		t.Helper()
		if mine, err := n.Store().TakeExpiryTurn(bg, time.Hour); err != nil || mine != want {
			t.Fatalf("TakeExpiryTurn = %v, %v; want %v", mine, err, want)
		}
	}
	// hideDeadline moves s's deadline to before at behind the claims' back,
	// as a write that publishes no hint would.
	hideDeadline := func(s *sessionbridge.Session) {
		t.Helper()
		early := now.Add(time.Hour)
		srv.MustDo("HSET", a.sessionKey(s.ID), fExpires, nanos(early))
		srv.MustDo("ZADD", a.expiryKey(sessionbridge.Shard(s.UserID)), millis(early), s.ID)
	}

	turn(a, true)
	if ids, err := claimIDs(t, a, at); err != nil || len(ids) != 0 {
		t.Fatalf("node a's claim = %q, %v", ids, err)
	}
	hideDeadline(s1)
	if ids, err := claimIDs(t, a, at); err != nil || len(ids) != 0 {
		t.Fatalf("node a trusted what it knew, yet claimed %q, %v", ids, err)
	}
	// The turn moves to b, which claims what a missed.
	srv.MustDo("DEL", "sbx:expiry:turn")
	turn(b, true)
	turn(a, false)
	if ids, err := claimIDs(t, b, at); err != nil || len(ids) != 1 || ids[0] != s1.ID {
		t.Fatalf("node b's claim = %q, %v; want %s", ids, err, s1.ID)
	}
	// And back to a, which heard none of b's claims: it reads every index.
	hideDeadline(s2)
	srv.MustDo("DEL", "sbx:expiry:turn")
	turn(a, true)
	if ids, err := claimIDs(t, a, at); err != nil || len(ids) != 1 || ids[0] != s2.ID {
		t.Fatalf("node a's claim after the turn came back = %q, %v; want %s", ids, err, s2.ID)
	}
	for _, n := range []*Backend{a, b} {
		if ids, err := claimIDs(t, n, at); err != nil || len(ids) != 0 {
			t.Fatalf("claimed again: %q, %v", ids, err)
		}
	}
}

// TestExpiryHintOnCluster: on a Redis Cluster, the hint a write script
// publishes on the master of its slot reaches a node whose subscription is
// on any master, so that a session written after the claim read the
// indexes is claimed at its deadline.
func TestExpiryHintOnCluster(t *testing.T) {
	c := redistest.StartMultiCluster(t, 3, 0)
	a := newClusterBackend(t, c)
	other := newClusterBackend(t, c, func(o *Options) { o.Prefix = a.prefix })
	subscribe(t, a, &recorder{})
	now := time.Now()
	read := time.Now()
	if ids, err := claimIDs(t, a, now); err != nil || len(ids) != 0 {
		t.Fatalf("first claim = %q, %v", ids, err)
	}
	var list []*sessionbridge.Session
	for _, user := range []string{"alice", "bob", "carol", "dave", "erin", "frank"} {
		s := newSession(t, user)
		s.ExpiresAt = now.Add(2 * time.Second)
		mustCreateSession(t, other, s)
		list = append(list, s)
	}
	at := now.Add(3 * time.Second)
	claimed := map[string]int{}
	eventually(t, time.Until(read.Add(expiryRecheck)), "the claims", func() bool {
		ids, err := claimIDs(t, a, at)
		for _, id := range ids {
			claimed[id]++
		}
		return err == nil && len(claimed) == len(list)
	})
	if d := time.Since(read); d >= expiryRecheck {
		t.Fatalf("claimed %v after the last full read, by the backstop", d)
	}
	for _, s := range list {
		if claimed[s.ID] != 1 {
			t.Fatalf("session %s claimed %d times, want 1", s.ID, claimed[s.ID])
		}
	}
}

// TestKeyExpiryIdleReadsNoIndex is TestExpiryIdleReadsNoIndex for the API
// key claim: idle claims read no key expiry index, and a key created later
// by another node with an earlier expiry is claimed at it, once.
func TestKeyExpiryIdleReadsNoIndex(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv, func(o *Options) { o.Prefix = "sbx:" })
	other := newBackend(t, srv, func(o *Options) { o.Prefix = "sbx:" })
	subscribe(t, a, &recorder{})
	newKey := func(user string, expires time.Time) *sessionbridge.APIKey {
		t.Helper()
		_, id, hash, err := sessionbridge.NewAPIKey(user)
		if err != nil {
			t.Fatal(err)
		}
		k := &sessionbridge.APIKey{ID: id, UserID: user, Name: "ci", SecretHash: hash, CreatedAt: time.Now(), ExpiresAt: expires, Version: 1}
		if err := other.Keys().CreateKey(bg, k); err != nil {
			t.Fatal(err)
		}
		return k
	}
	claim := func(at time.Time) []string {
		t.Helper()
		got, err := a.Keys().ClaimExpiredKeys(bg, at, 0, expiredTmpl)
		if err != nil {
			t.Fatal(err)
		}
		ids := make([]string, len(got))
		for i, k := range got {
			ids[i] = k.ID
		}
		return ids
	}
	now := time.Now()
	long := newKey("alice", now.Add(time.Hour))
	read := time.Now()
	if ids := claim(now); len(ids) != 0 {
		t.Fatalf("first claim = %q", ids)
	}
	before := commandCalls(t, srv, "zrange")
	for range 5 {
		if ids := claim(now); len(ids) != 0 {
			t.Fatalf("idle claim = %q", ids)
		}
	}
	if n := commandCalls(t, srv, "zrange") - before; n != 0 {
		t.Fatalf("five idle claims read %d indexes, want none", n)
	}
	short := newKey("bob", now.Add(2*time.Second))
	at := now.Add(3 * time.Second)
	var got []string
	eventually(t, time.Until(read.Add(expiryRecheck)), "the claim of the short key", func() bool {
		got = append(got, claim(at)...)
		return len(got) > 0
	})
	if d := time.Since(read); d >= expiryRecheck {
		t.Fatalf("claimed %v after the last full read, by the backstop", d)
	}
	if len(got) != 1 || got[0] != short.ID {
		t.Fatalf("claimed %q, want only %s", got, short.ID)
	}
	if ids := claim(at); len(ids) != 0 {
		t.Fatalf("claimed again: %q", ids)
	}
	if ids := claim(long.ExpiresAt); len(ids) != 1 || ids[0] != long.ID {
		t.Fatalf("claim at the long expiry = %q", ids)
	}
}
