package redis

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

// fakeLocal is a LocalPresence holding a fixed list of connections.
type fakeLocal struct {
	mu    sync.Mutex
	conns []sessionbridge.ConnInfo
}

func (f *fakeLocal) set(c ...sessionbridge.ConnInfo) {
	f.mu.Lock()
	f.conns = c
	f.mu.Unlock()
}

func (f *fakeLocal) SessionCounts(_ context.Context, ids []string) (map[string]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for _, c := range f.conns {
		if slices.Contains(ids, c.SessionID) {
			out[c.SessionID]++
		}
	}
	return out, nil
}

func (f *fakeLocal) UserConnections(_ context.Context, user string) ([]sessionbridge.ConnInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []sessionbridge.ConnInfo
	for _, c := range f.conns {
		if user == "" || c.UserID == user {
			out = append(out, c)
		}
	}
	return out, nil
}

func conn(id, sid, user, node string) sessionbridge.ConnInfo {
	return sessionbridge.ConnInfo{ID: id, SessionID: sid, UserID: user, NodeID: node, Method: sessionbridge.AuthSession, ConnectedAt: time.Now().UTC()}
}

func TestPresenceAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	const interval = 100 * time.Millisecond
	a := newBackend(t, srv, func(o *Options) { o.NodeID = "a"; o.PresenceInterval = interval })
	b := newBackend(t, srv, func(o *Options) { o.NodeID = "b"; o.PresenceInterval = interval; o.Prefix = a.prefix })
	la, lb := &fakeLocal{}, &fakeLocal{}
	la.set(conn("c1", "s1", "alice", "a"), conn("c2", "s1", "alice", "a"), conn("c3", "s2", "bob", "a"))
	lb.set(conn("c4", "s1", "alice", "b"), conn("c5", "", "carol", "b"))
	pa, pb := a.Presence(la), b.Presence(lb)

	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { done <- pb.Run(ctx) }()
	eventually(t, 5*time.Second, "b's record", func() bool {
		c, err := pa.SessionCounts(bg, []string{"s1", "s2", "s3"})
		return err == nil && c["s1"] == 3
	})
	c, err := pa.SessionCounts(bg, []string{"s1", "s2", "s3"})
	if err != nil || c["s1"] != 3 || c["s2"] != 1 || len(c) != 2 {
		t.Fatalf("SessionCounts = %v, %v; want s1:3 s2:1", c, err)
	}
	alice, err := pa.UserConnections(bg, "alice")
	if err != nil || len(alice) != 3 {
		t.Fatalf("UserConnections(alice) = %v, %v; want 3", alice, err)
	}
	all, err := pa.UserConnections(bg, "")
	if err != nil || len(all) != 5 {
		t.Fatalf("UserConnections(all) = %d, %v; want 5", len(all), err)
	}

	// b's connections change: a sees it within an interval or so.
	lb.set()
	eventually(t, 5*time.Second, "b's closed connections to vanish", func() bool {
		c, err := pa.SessionCounts(bg, []string{"s1"})
		return err == nil && c["s1"] == 2
	})
	lb.set(conn("c6", "s2", "bob", "b"))
	eventually(t, 5*time.Second, "b's new connection", func() bool {
		c, err := pa.SessionCounts(bg, []string{"s2"})
		return err == nil && c["s2"] == 2
	})

	// A clean stop says goodbye at once.
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Run = %v", err)
	}
	if n := srv.MustDo("EXISTS", pb.nodeKey("b")).(int64); n != 0 {
		t.Fatal("b's record outlived its clean stop")
	}
	if c, _ := pa.SessionCounts(bg, []string{"s2"}); c["s2"] != 1 {
		t.Fatalf("after b stopped, s2 = %d, want 1", c["s2"])
	}
}

func TestPresenceForgetsDeadNode(t *testing.T) {
	srv := redistest.Start(t)
	// Long enough that a loaded machine reads the record before it
	// expires; the test then waits three intervals.
	const interval = time.Second
	a := newBackend(t, srv, func(o *Options) { o.NodeID = "a"; o.PresenceInterval = interval })
	b := newBackend(t, srv, func(o *Options) { o.NodeID = "b"; o.PresenceInterval = interval; o.Prefix = a.prefix })
	lb := &fakeLocal{}
	lb.set(conn("c1", "s1", "alice", "b"))
	pa, pb := a.Presence(&fakeLocal{}), b.Presence(lb)
	// One write, then silence, as from a node that crashed.
	if err := pb.Publish(bg); err != nil {
		t.Fatal(err)
	}
	if c, err := pa.SessionCounts(bg, []string{"s1"}); err != nil || c["s1"] != 1 {
		t.Fatalf("SessionCounts = %v, %v", c, err)
	}
	if ttl := srv.MustDo("PTTL", pb.nodeKey("b")).(int64); ttl <= 0 || ttl > int64(3*interval/time.Millisecond) {
		t.Fatalf("record PTTL = %dms, want at most 3 intervals", ttl)
	}
	eventually(t, 5*time.Second, "the dead node to be forgotten", func() bool {
		c, err := pa.SessionCounts(bg, []string{"s1"})
		return err == nil && c["s1"] == 0
	})
}

func TestPresenceRewritesAVanishedRecord(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv, func(o *Options) { o.NodeID = "a" })
	b := newBackend(t, srv, func(o *Options) { o.NodeID = "b"; o.Prefix = a.prefix })
	lb := &fakeLocal{}
	lb.set(conn("c1", "s1", "alice", "b"))
	pa, pb := a.Presence(&fakeLocal{}), b.Presence(lb)
	for range 2 { // the second write finds nothing changed: TTL only
		if err := pb.Publish(bg); err != nil {
			t.Fatal(err)
		}
	}
	if c, err := pa.SessionCounts(bg, []string{"s1"}); err != nil || c["s1"] != 1 {
		t.Fatalf("SessionCounts = %v, %v", c, err)
	}
	// The record vanishes (as on an empty Redis restart); the next write,
	// with the same connections, must put it back.
	srv.MustDo("DEL", pb.nodeKey("b"))
	if err := pb.Publish(bg); err != nil {
		t.Fatal(err)
	}
	if c, err := pa.SessionCounts(bg, []string{"s1"}); err != nil || c["s1"] != 1 {
		t.Fatalf("after the record vanished: SessionCounts = %v, %v", c, err)
	}
	// A change is written in full.
	lb.set(conn("c1", "s1", "alice", "b"), conn("c2", "s1", "alice", "b"))
	if err := pb.Publish(bg); err != nil {
		t.Fatal(err)
	}
	if c, err := pa.SessionCounts(bg, []string{"s1"}); err != nil || c["s1"] != 2 {
		t.Fatalf("after a change: SessionCounts = %v, %v", c, err)
	}
}

func TestFingerprintIgnoresOrder(t *testing.T) {
	x, y := conn("c1", "s", "u", "n"), conn("c2", "s", "u", "n")
	if fingerprint([]sessionbridge.ConnInfo{x, y}) != fingerprint([]sessionbridge.ConnInfo{y, x}) {
		t.Fatal("order changed the fingerprint")
	}
	if fingerprint([]sessionbridge.ConnInfo{x}) == fingerprint([]sessionbridge.ConnInfo{x, y}) {
		t.Fatal("an added connection kept the fingerprint")
	}
	if fingerprint(nil) != 0 || fingerprint([]sessionbridge.ConnInfo{x}) == 0 {
		t.Fatal("0 must mean exactly the empty set")
	}
}

func TestPresenceAndTicketsOnCluster(t *testing.T) {
	srv := redistest.StartCluster(t)
	a := newBackend(t, srv, func(o *Options) { o.NodeID = "a" })
	b := newBackend(t, srv, func(o *Options) { o.NodeID = "b"; o.Prefix = a.prefix })
	lb := &fakeLocal{}
	lb.set(conn("c1", "s1", "alice", "b"), conn("c2", "s2", "bob", "b"))
	if err := b.Presence(lb).Publish(bg); err != nil {
		t.Fatal(err)
	}
	pa := a.Presence(&fakeLocal{})
	if c, err := pa.SessionCounts(bg, []string{"s1", "s2"}); err != nil || c["s1"] != 1 || c["s2"] != 1 {
		t.Fatalf("SessionCounts = %v, %v", c, err)
	}
	if all, err := pa.UserConnections(bg, ""); err != nil || len(all) != 2 {
		t.Fatalf("UserConnections = %v, %v", all, err)
	}
	tk, err := a.Tickets().Issue(bg, sessionbridge.Ticket{UserID: "alice"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Tickets().Redeem(bg, tk); err != nil || got.UserID != "alice" {
		t.Fatalf("Redeem = %v, %v", got, err)
	}
}

// TestPresenceWritesOnlyWhatChanged: at 2000 sockets, a change of one
// socket rewrites two fields (its session's count and its user's list), no
// command carries more than presenceChunk fields, and the record in Redis is
// what a full rewrite would have made.
func TestPresenceWritesOnlyWhatChanged(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv)
	local := &fakeLocal{}
	var conns []sessionbridge.ConnInfo
	for i := range 2000 {
		conns = append(conns, conn(fmt.Sprintf("c%04d", i), fmt.Sprintf("s%04d", i/2), fmt.Sprintf("u%03d", i/10), b.NodeID()))
	}
	local.set(conns...)
	p := b.Presence(local)
	if err := p.Publish(bg); err != nil {
		t.Fatal(err)
	}
	// One socket goes, another comes.
	next := append(slices.Clone(conns[1:]), conn("c9999", "s9999", "u999", b.NodeID()))
	want, err := presenceFields(next)
	if err != nil {
		t.Fatal(err)
	}
	cmds := p.presenceWrites(p.nodeKey(b.NodeID()), time.Minute, want)
	var set, del int
	for _, c := range cmds {
		args := c.Commands()
		switch args[0] {
		case "HSET":
			set += (len(args) - 2) / 2
		case "HDEL":
			del += len(args) - 2
		}
		if len(args) > 2+2*presenceChunk {
			t.Fatalf("a command of %d arguments", len(args))
		}
	}
	// s0000's count and u000's list change; s9999 and u999 are new.
	if set != 4 || del != 0 {
		t.Fatalf("one socket changed: %d fields set, %d deleted; want 4 and 0", set, del)
	}
	local.set(next...)
	if err := p.Publish(bg); err != nil {
		t.Fatal(err)
	}
	got, err := b.Client().Do(bg, b.Client().B().Hgetall().Key(p.nodeKey(b.NodeID())).Build()).AsStrMap()
	if err != nil || !maps.Equal(got, want) {
		t.Fatalf("the record after a diff differs from a full one (%d fields, want %d): %v", len(got), len(want), err)
	}
	// All of a user's sockets go: its field is deleted.
	var rest []sessionbridge.ConnInfo
	for _, c := range next {
		if c.UserID != "u001" {
			rest = append(rest, c)
		}
	}
	local.set(rest...)
	if err := p.Publish(bg); err != nil {
		t.Fatal(err)
	}
	got, _ = b.Client().Do(bg, b.Client().B().Hgetall().Key(p.nodeKey(b.NodeID())).Build()).AsStrMap()
	if want, _ := presenceFields(rest); !maps.Equal(got, want) {
		t.Fatalf("after a user left: %d fields, want %d", len(got), len(want))
	}
}
