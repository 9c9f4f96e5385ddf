package redis

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

// TestThroughSentinel connects by asking a Sentinel for the master, as the
// URL option master_set does, and runs a session through store and bus.
func TestThroughSentinel(t *testing.T) {
	master := redistest.Start(t)
	sentinel := redistest.StartSentinel(t, master, "mymaster")
	b, err := New(bg, Options{URL: "redis://" + sentinel.Addr() + "/0?master_set=mymaster"})
	if err != nil {
		t.Fatalf("New through Sentinel: %v", err)
	}
	t.Cleanup(b.Close)
	rec := &recorder{}
	subscribe(t, b, rec)
	follow(t, b, rec, sessionbridge.UserTopic("sentinel-user"))
	s := newSession(t, "sentinel-user")
	if err := b.Store().Create(bg, s, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	got, err := b.Store().Get(bg, s.ID)
	if err != nil || got.ID != s.ID {
		t.Fatalf("Get = %v, %v", got, err)
	}
	// The data is on the master the Sentinel named.
	if n := master.MustDo("EXISTS", b.sessionKey(s.ID)).(int64); n != 1 {
		t.Fatal("the session is not on the master")
	}
	eventually(t, 5*time.Second, "the created event", func() bool {
		_, ok := rec.find(func(ev sessionbridge.Event) bool {
			return ev.Type == sessionbridge.EventCreated && ev.SessionID == s.ID
		})
		return ok
	})
}

// TestSentinelFailover promotes the replica while a node is subscribed: the
// node follows the Sentinel to the new master by itself, re-subscribes
// (reporting a gap) and writes there.
func TestSentinelFailover(t *testing.T) {
	master := redistest.Start(t)
	replica := redistest.Start(t, "--replicaof", "127.0.0.1", master.Addr()[len("127.0.0.1:"):])
	sentinel := redistest.StartSentinel(t, master, "mymaster")
	// Sentinel learns of replicas from the master's INFO, every few seconds.
	eventually(t, 30*time.Second, "the Sentinel to know the replica", func() bool {
		v, err := sentinel.Do("SENTINEL", "REPLICAS", "mymaster")
		list, ok := v.([]any)
		return err == nil && ok && len(list) == 1
	})
	eventually(t, 30*time.Second, "the replica to be in sync", func() bool {
		v, err := replica.Do("INFO", "replication")
		s, ok := v.(string)
		return err == nil && ok && strings.Contains(s, "master_link_status:up")
	})
	b, err := New(bg, Options{URL: "redis://" + sentinel.Addr() + "/0?master_set=mymaster"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	rec := &recorder{}
	subscribe(t, b, rec)
	before := newSession(t, "failover-user")
	if err := b.Store().Create(bg, before, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the session to reach the replica", func() bool {
		v, err := replica.Do("EXISTS", b.sessionKey(before.ID))
		return err == nil && v == int64(1)
	})

	sentinel.MustDo("SENTINEL", "FAILOVER", "mymaster")
	eventually(t, 30*time.Second, "the replica to become master", func() bool {
		v, err := replica.Do("ROLE")
		r, ok := v.([]any)
		return err == nil && ok && len(r) > 0 && r[0] == "master"
	})
	eventually(t, 30*time.Second, "a re-subscription after the switch", func() bool { return rec.gapCount() >= 2 })
	after := newSession(t, "failover-user")
	eventually(t, 30*time.Second, "a write on the new master", func() bool {
		// A try whose reply was lost in the switch may have written.
		err := b.Store().Create(bg, after, sessionbridge.Event{})
		return err == nil || errors.Is(err, sessionbridge.ErrExists)
	})
	if n := replica.MustDo("EXISTS", b.sessionKey(after.ID)).(int64); n != 1 {
		t.Fatal("the write did not land on the promoted replica")
	}
	if got, err := b.Store().Get(bg, before.ID); err != nil || got.ID != before.ID {
		t.Fatalf("session from before the failover = %v, %v", got, err)
	}
}
