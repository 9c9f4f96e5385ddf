package redis

import (
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
	"github.com/sessionbridge/sessionbridge/storetest"
)

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	storetest.Run(t, func(t *testing.T) (sessionbridge.Store, sessionbridge.Bus) {
		b := newBackend(t, srv)
		return b.Store(), b.Bus()
	})
}

// TestGetWithoutClientCache covers the read path used when the cache is off:
// every Get is a round trip and sees every write at once.
func TestGetWithoutClientCache(t *testing.T) {
	srv := redistest.Start(t)
	writer := newBackend(t, srv)
	reader := newBackend(t, srv, func(o *Options) { o.Prefix = writer.prefix; o.DisableClientCache = true })
	s := newSession(t, "nocache-user")
	if err := writer.Store().Create(bg, s, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	for v := uint64(1); v <= 5; v++ {
		got, err := reader.Store().Get(bg, s.ID)
		if err != nil || got.Version != v {
			t.Fatalf("Get = %v, %v; want version %d at once", got, err, v)
		}
		next := got.Clone()
		next.Version = v + 1
		if err := writer.Store().Update(bg, next, v, sessionbridge.Event{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := writer.Store().Delete(bg, s.ID, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Store().Get(bg, s.ID); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Fatalf("Get after delete = %v, want ErrNotFound at once", err)
	}
}

// TestEveryScriptOnCluster runs every write script, the expiry claim and the
// pipelined reads on a Redis Cluster node, which refuses any script or
// command that strays outside one hash slot: the key layout is cluster-ready.
// (The conformance suite runs on a standalone server; running it here too
// would double its time for the same assertions.)
func TestEveryScriptOnCluster(t *testing.T) {
	srv := redistest.StartCluster(t)
	b := newBackend(t, srv)
	if b.Client().Mode() != rueidis.ClientModeCluster {
		t.Fatalf("client mode %s, want cluster", b.Client().Mode())
	}
	rec := &recorder{}
	subscribe(t, b, rec)
	m := nodeManager(t, b)
	m.TouchInterval = time.Nanosecond
	var ids []string
	for i := range 40 { // many users: many shards, so many slots
		user := "cluster-user-" + strconv.Itoa(i)
		s, _, err := m.Create(bg, sessionbridge.NewSession{UserID: user}, sessionbridge.Change{})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if s, err = m.Update(bg, s.ID, json.RawMessage(`{"i":1}`), 0, sessionbridge.Change{}); err != nil {
			t.Fatalf("Update: %v", err)
		}
		if _, err := m.Touch(bg, s, sessionbridge.Change{}); err != nil {
			t.Fatalf("Touch: %v", err)
		}
		r, _, err := m.Rotate(bg, s.ID, sessionbridge.Change{})
		if err != nil {
			t.Fatalf("Rotate: %v", err)
		}
		if list, err := m.List(bg, user); err != nil || len(list) != 1 || list[0].ID != r.ID {
			t.Fatalf("List = %v, %v", list, err)
		}
		if i%2 == 0 {
			if _, err := m.Delete(bg, r.ID, sessionbridge.ReasonLogout, sessionbridge.Change{}); err != nil {
				t.Fatalf("Delete: %v", err)
			}
		} else {
			ids = append(ids, r.ID)
		}
	}
	got, err := b.Store().GetMany(bg, ids)
	if err != nil || len(got) != len(ids) {
		t.Fatalf("GetMany = %d, %v; want %d", len(got), err, len(ids))
	}
	followSessions(t, b, rec, ids...)
	// Claim them all as expired, a day from now.
	claimed, err := b.Store().ClaimExpired(bg, time.Now().Add(48*time.Hour), 0, sessionbridge.Event{Source: sessionbridge.SourceSystem})
	if err != nil || len(claimed) != len(ids) {
		t.Fatalf("ClaimExpired = %d, %v; want %d", len(claimed), err, len(ids))
	}
	for _, id := range ids {
		eventually(t, 5*time.Second, "expired event of "+id, func() bool {
			_, ok := rec.find(func(ev sessionbridge.Event) bool { return ev.Type == sessionbridge.EventExpired && ev.SessionID == id })
			return ok
		})
	}
}

// TestExpiryTurnGoesToOneNodeAtATime: of two nodes sharing a prefix, one
// holds the expiry turn until it lapses, then the other can take it.
func TestExpiryTurnGoesToOneNodeAtATime(t *testing.T) {
	srv := redistest.Start(t)
	bg := t.Context()
	a := newBackend(t, srv, func(o *Options) { o.NodeID = "a" })
	b := newBackend(t, srv, func(o *Options) { o.NodeID, o.Prefix = "b", a.prefix })
	const ttl = 300 * time.Millisecond
	if mine, err := a.Store().TakeExpiryTurn(bg, ttl); err != nil || !mine {
		t.Fatalf("a's first TakeExpiryTurn = %v, %v; want true", mine, err)
	}
	if mine, err := b.Store().TakeExpiryTurn(bg, ttl); err != nil || mine {
		t.Fatalf("b's TakeExpiryTurn while a holds it = %v, %v; want false", mine, err)
	}
	if mine, err := a.Store().TakeExpiryTurn(bg, ttl); err != nil || mine {
		t.Fatalf("a's second TakeExpiryTurn within the ttl = %v, %v; want false", mine, err)
	}
	eventually(t, 5*time.Second, "b to take the lapsed turn", func() bool {
		mine, err := b.Store().TakeExpiryTurn(bg, ttl)
		if err != nil {
			t.Fatalf("b's TakeExpiryTurn: %v", err)
		}
		return mine
	})
	// The key claim has a turn of its own.
	if mine, err := a.Keys().TakeExpiryTurn(bg, ttl); err != nil || !mine {
		t.Fatalf("a's key TakeExpiryTurn = %v, %v; want true", mine, err)
	}
	if mine, err := b.Keys().TakeExpiryTurn(bg, ttl); err != nil || mine {
		t.Fatalf("b's key TakeExpiryTurn while a holds it = %v, %v; want false", mine, err)
	}
	// Another prefix is another deployment with its own turn.
	c := newBackend(t, srv)
	if mine, err := c.Store().TakeExpiryTurn(bg, ttl); err != nil || !mine {
		t.Fatalf("TakeExpiryTurn under another prefix = %v, %v; want true", mine, err)
	}
}
