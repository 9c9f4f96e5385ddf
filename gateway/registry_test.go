package gateway

import (
	"slices"
	"testing"

	sb "github.com/sessionbridge/sessionbridge"
)

func TestRegistryIndexes(t *testing.T) {
	r := newRegistry()
	mk := func(id, user, sess string) *Conn {
		return &Conn{id: id, p: connPrincipal{UserID: user, SessionID: sess}}
	}
	a1, a2, a3 := mk("a1", "alice", "s1"), mk("a2", "alice", "s1"), mk("a3", "alice", "s2")
	b1 := mk("b1", "bob", "")
	s1 := &sb.Session{ID: "s1", UserID: "alice", Version: 1, SecretHash: [32]byte{1}}
	e, created := r.add(a1, s1)
	if !created || e.sess != s1 || e.sess.SecretHash != [32]byte{} {
		t.Fatalf("first add: created=%v entry session %+v", created, e.sess)
	}
	if e2, created := r.add(a2, &sb.Session{ID: "s1", Version: 9}); created || e2 != e || e.sess.Version != 1 {
		t.Fatal("second connection of s1 must join the entry and keep its session")
	}
	r.add(a3, &sb.Session{ID: "s2", Version: 1})
	r.add(b1, nil)

	users := func(u string) []string {
		var ids []string
		r.forUser(u, func(c *Conn) { ids = append(ids, c.id) })
		slices.Sort(ids)
		return ids
	}
	sessionConns := func(id string) []string {
		e := r.session(id)
		if e == nil {
			return nil
		}
		var ids []string
		e.mu.Lock()
		e.forEachConnLocked(func(c *Conn) { ids = append(ids, c.id) })
		e.mu.Unlock()
		slices.Sort(ids)
		return ids
	}
	if got := users("alice"); !slices.Equal(got, []string{"a1", "a2", "a3"}) {
		t.Fatalf("alice: %v", got)
	}
	if got := sessionConns("s1"); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Fatalf("s1: %v", got)
	}
	if r.len() != 4 || r.conn("b1") != b1 || r.session("nope") != nil {
		t.Fatal("lookups")
	}

	// Removing from the middle, the head and the tail keeps the lists whole.
	r.remove(a2)
	r.remove(a2) // twice is a no-op
	if got := users("alice"); !slices.Equal(got, []string{"a1", "a3"}) {
		t.Fatalf("alice after remove: %v", got)
	}
	if got := sessionConns("s1"); !slices.Equal(got, []string{"a1"}) {
		t.Fatalf("s1 after remove: %v", got)
	}
	r.remove(a1)
	if r.session("s1") != nil || !e.removed {
		t.Fatal("the last connection's removal drops the entry")
	}
	r.remove(a3)
	r.remove(b1)
	if r.len() != 0 || len(r.users) != 0 || len(r.sessions) != 0 {
		t.Fatalf("registry not empty: %d conns, %d users, %d sessions", r.len(), len(r.users), len(r.sessions))
	}
}

func TestNewValidatesConfig(t *testing.T) {
	ok := newEnv(t, nil)
	base := Config{Manager: ok.mgr}
	for _, bad := range []Config{
		{},
		{Manager: &sb.Manager{}},
		{Manager: ok.mgr, AllowedOrigins: []string{"https://*.com"}},
		{Manager: ok.mgr, AllowedOrigins: []string{"https://a.*.example.com"}},
		{Manager: ok.mgr, AllowedOrigins: []string{"null"}},
		{Manager: ok.mgr, AllowedOrigins: []string{"https://app.example.com/path"}},
	} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
	g, err := New(base)
	if err != nil {
		t.Fatal(err)
	}
	if g.pingInterval != DefaultPingInterval || g.pongTimeout != 2*DefaultPingInterval || g.readLimit != DefaultReadLimit ||
		g.sendQueue != DefaultSendQueue || g.warning != DefaultExpiryWarning ||
		g.maxPerSession != DefaultMaxConnsPerSession || g.maxPerUser != DefaultMaxConnsPerUser {
		t.Fatalf("defaults: %+v", g)
	}
	base.MaxConnsPerSession, base.MaxConnsPerUser = -1, 7
	if g, err := New(base); err != nil || g.maxPerSession != 0 || g.maxPerUser != 7 {
		t.Fatalf("caps: %v %+v", err, g)
	}
}
