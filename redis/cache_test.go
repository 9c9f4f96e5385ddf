package redis

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

// cached reports whether the session's hash is in a's client-side cache.
func cached(a *Backend, id string) bool {
	return a.client.DoCache(bg, a.client.B().Hgetall().Key(a.sessionKey(id)).Cache(), time.Minute).IsCacheHit()
}

func TestGetCacheIsInvalidatedByAnotherClient(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv)
	other := newBackend(t, srv, func(o *Options) { o.Prefix = a.prefix })
	s := newSession(t, "cache-user")
	if err := other.Store().Create(bg, s, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Store().Get(bg, s.ID); err != nil {
		t.Fatal(err)
	}
	if !cached(a, s.ID) {
		t.Fatal("second read was not served from the client cache")
	}

	next := s.Clone()
	next.Data, next.Version = json.RawMessage(`{"n":2}`), 2
	if err := other.Store().Update(bg, next, 1, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	// a never wrote this session, so only the invalidation from Redis can
	// make it see the change.
	eventually(t, 5*time.Second, "the update to reach the cached reader", func() bool {
		got, err := a.Store().Get(bg, s.ID)
		return err == nil && got.Version == 2 && string(got.Data) == `{"n":2}`
	})

	if _, err := other.Store().Delete(bg, s.ID, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the delete to reach the cached reader", func() bool {
		_, err := a.Store().Get(bg, s.ID)
		return errors.Is(err, sessionbridge.ErrNotFound)
	})
}

func TestGetReadsOwnWrites(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv)
	s := newSession(t, "ryw-user")
	if err := a.Store().Create(bg, s, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	for v := uint64(1); v < 50; v++ {
		got, err := a.Store().Get(bg, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != v {
			t.Fatalf("Get after own update = version %d, want %d", got.Version, v)
		}
		next := got.Clone()
		next.Version = v + 1
		if err := a.Store().Update(bg, next, v, sessionbridge.Event{}); err != nil {
			t.Fatalf("Update %d: %v", v, err)
		}
	}
}

func TestCacheFlushedWhenConnectionDrops(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv)
	s := newSession(t, "flush-user")
	if err := a.Store().Create(bg, s, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	cached(a, s.ID)
	if !cached(a, s.ID) {
		t.Fatal("not cached after a read")
	}
	// Killing the connections cuts the invalidation link: nothing could tell
	// the cache about writes any more, so rueidis must drop it.
	if n, err := srv.Do("CLIENT", "KILL", "TYPE", "normal"); err != nil || n.(int64) < 1 {
		t.Fatalf("CLIENT KILL = %v, %v", n, err)
	}
	eventually(t, 5*time.Second, "the cache to be flushed", func() bool { return !cached(a, s.ID) })
	got, err := a.Store().Get(bg, s.ID)
	if err != nil || got.ID != s.ID {
		t.Fatalf("Get after reconnect = %v, %v", got, err)
	}
}

func TestUnavailableWhileRedisIsDown(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv, func(o *Options) { o.Timeout = 300 * time.Millisecond })
	s := newSession(t, "down-user")
	if err := a.Store().Create(bg, s, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	m := nodeManager(t, a)
	srv.Stop()
	eventually(t, 10*time.Second, "Ping to fail", func() bool { return a.Ping(bg) != nil })
	if err := a.Ping(bg); !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Fatalf("Ping = %v, want ErrUnavailable", err)
	}
	// The cache was flushed with the connection: a stopped Redis never
	// authenticates from memory.
	if _, err := a.Store().Get(bg, s.ID); !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Fatalf("Get = %v, want ErrUnavailable", err)
	}
	if _, err := m.Authenticate(bg, sessionbridge.FormatToken(s.ID, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")); !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Fatalf("Authenticate = %v, want ErrUnavailable", err)
	}
	if _, err := a.Store().Delete(bg, s.ID, sessionbridge.Event{}); !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Fatalf("Delete = %v, want ErrUnavailable", err)
	}
	if _, err := a.Tickets().Issue(bg, sessionbridge.Ticket{UserID: "u"}, time.Second); !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Fatalf("Issue = %v, want ErrUnavailable", err)
	}

	srv.Restart()
	eventually(t, 10*time.Second, "Ping to recover", func() bool { return a.Ping(bg) == nil })
	// Restarted empty: the session is gone, and nothing stale is served.
	if _, err := a.Store().Get(bg, s.ID); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Fatalf("Get after an empty restart = %v, want ErrNotFound", err)
	}
}

func TestGetNeverBehindReceivedEvents(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv)
	other := newBackend(t, srv, func(o *Options) { o.Prefix = a.prefix })
	rec := &recorder{}
	subscribe(t, a, rec)
	follow(t, a, rec, sessionbridge.UserTopic("event-user"))
	for i := range 20 {
		s := newSession(t, "event-user")
		followSessions(t, a, rec, s.ID)
		if err := other.Store().Create(bg, s, sessionbridge.Event{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "the created event", func() bool {
			_, ok := rec.find(func(ev sessionbridge.Event) bool {
				return ev.Type == sessionbridge.EventCreated && ev.SessionID == s.ID
			})
			return ok
		})
		// Forget the mark the created event left, and warm the cache.
		a.store.recent.reset()
		if _, err := a.Store().Get(bg, s.ID); err != nil {
			t.Fatalf("round %d: Get after the created event = %v", i, err)
		}
		if !cached(a, s.ID) {
			t.Fatalf("round %d: not cached", i)
		}
		if _, err := other.Store().Delete(bg, s.ID, sessionbridge.Event{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "the deleted event", func() bool {
			_, ok := rec.find(func(ev sessionbridge.Event) bool {
				return ev.Type == sessionbridge.EventDeleted && ev.SessionID == s.ID
			})
			return ok
		})
		// No polling: once the event is in, the read must agree with it.
		if _, err := a.Store().Get(bg, s.ID); !errors.Is(err, sessionbridge.ErrNotFound) {
			t.Fatalf("round %d: Get after the deleted event = %v, want ErrNotFound", i, err)
		}
	}
}

// reset forgets every mark.
func (r *recent) reset() {
	r.mu.Lock()
	r.cur, r.prev = nil, nil
	r.mu.Unlock()
}

func TestGetWithoutCacheKeepsNoCopy(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv)
	other := newBackend(t, srv, func(o *Options) { o.Prefix = a.prefix })
	s := newSession(t, "socket-user")
	if err := other.Store().Create(bg, s, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	got, err := a.Store().Get(sessionbridge.WithoutCache(bg), s.ID)
	if err != nil || got.ID != s.ID {
		t.Fatalf("Get without cache = %v, %v", got, err)
	}
	// cached itself reads through the cache: a miss now, a hit after.
	if cached(a, s.ID) {
		t.Fatal("a read under WithoutCache left a copy in the client cache")
	}
	if !cached(a, s.ID) {
		t.Fatal("the cache does not work here: the check above proves nothing")
	}
}
