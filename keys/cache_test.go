package keys_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/testclock"
	"github.com/sessionbridge/sessionbridge/keys"
	"github.com/sessionbridge/sessionbridge/memory"
)

// readCounter counts the reads that reach the store, and can hold one read
// until released, to let a test act in the middle of it.
type readCounter struct {
	sb.KeyStore
	mu    sync.Mutex
	reads int
	hold  chan struct{} // when set, the next GetKey signals held and waits on it
	held  chan struct{}
}

func (s *readCounter) GetKey(ctx context.Context, id string) (*sb.APIKey, error) {
	s.mu.Lock()
	s.reads++
	hold, held := s.hold, s.held
	s.hold = nil
	s.mu.Unlock()
	k, err := s.KeyStore.GetKey(ctx, id)
	if hold != nil {
		close(held)
		<-hold
	}
	return k, err
}

func (s *readCounter) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

// cachedManager returns a Manager with a Cache in front of a memory store
// that publishes on bus; reads counts what reaches the store.
func cachedManager(t *testing.T) (*keys.Manager, *testclock.Clock, *readCounter, *memory.Bus) {
	t.Helper()
	c := testclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	bus := memory.NewBus()
	rc := &readCounter{KeyStore: memory.NewKeyStore(bus)}
	return &keys.Manager{Store: rc, Cache: &keys.Cache{}, Now: c.Now, NodeID: "node-a"}, c, rc, bus
}

func TestCachedVerifyReadsTheStoreOnce(t *testing.T) {
	m, c, rc, _ := cachedManager(t)
	key, k, err := m.Create(bg, keys.NewKey{UserID: "alice", Name: "k", Scopes: []string{"ws:connect"}, TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		got, err := m.Verify(bg, key, "192.0.2.1")
		if err != nil || got.ID != k.ID {
			t.Fatalf("Verify = %v, %v", got, err)
		}
		// What Verify returns is the caller's to change.
		got.Scopes[0] = "changed"
	}
	if n := rc.count(); n != 1 {
		t.Fatalf("5 verifications read the store %d times, want 1", n)
	}
	if got, _ := m.Verify(bg, key, ""); got.Scopes[0] != "ws:connect" {
		t.Fatalf("a caller's change reached the cache: %v", got.Scopes)
	}
	// The secret is checked on every verification, cached or not.
	id, _, _ := sb.ParseAPIKey(key)
	other, _, _, _ := sb.NewAPIKey("alice")
	_, otherSecret, _ := sb.ParseAPIKey(other)
	if _, err := m.Verify(bg, forge(id, otherSecret), ""); !errors.Is(err, sb.ErrInvalidToken) {
		t.Fatalf("a wrong secret for a cached key = %v", err)
	}
	// And the expiry, on the local clock, with no event needed.
	c.Advance(30 * time.Second)
	if _, err := m.Verify(bg, key, ""); !errors.Is(err, sb.ErrInvalidToken) {
		t.Fatalf("a cached key past its expiry = %v", err)
	}
	if n := rc.count(); n != 1 {
		t.Fatalf("store reads = %d, want still 1", n)
	}
}

func TestCacheDroppedByEventsAndGaps(t *testing.T) {
	m, _, rc, _ := cachedManager(t)
	key, k, err := m.Create(bg, keys.NewKey{UserID: "alice", Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	warm := func() {
		t.Helper()
		if _, err := m.Verify(bg, key, ""); err != nil {
			t.Fatal(err)
		}
	}
	warm()
	base := rc.count()
	// Another node's write arrives as an event: the record goes.
	for _, typ := range []sb.EventType{sb.EventKeyUpdated, sb.EventKeyDeleted, sb.EventKeyExpired} {
		m.Cache.HandleEvent(sb.Event{Type: typ, KeyID: k.ID})
		warm()
		warm()
		if n := rc.count(); n != base+1 {
			t.Fatalf("after %s: %d store reads, want %d", typ, n, base+1)
		}
		base = rc.count()
	}
	// Events about sessions or other keys leave it.
	m.Cache.HandleEvent(sb.Event{Type: sb.EventDeleted, SessionID: "x"})
	m.Cache.HandleEvent(sb.Event{Type: sb.EventKeyDeleted, KeyID: "2bAAAAAAAAAAAAAA"})
	warm()
	if n := rc.count(); n != base {
		t.Fatalf("an unrelated event dropped the record: %d reads, want %d", n, base)
	}
	// A gap drops everything.
	m.Cache.HandleGap()
	if m.Cache.Len() != 0 {
		t.Fatalf("%d records left after a gap", m.Cache.Len())
	}
	warm()
	if n := rc.count(); n != base+1 {
		t.Fatalf("after a gap: %d reads, want %d", n, base+1)
	}
}

func TestCacheRevokedOnThisNodeAtOnce(t *testing.T) {
	m, _, _, _ := cachedManager(t)
	key, k, err := m.Create(bg, keys.NewKey{UserID: "alice", Name: "k", Scopes: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Verify(bg, key, ""); err != nil {
		t.Fatal(err)
	}
	scopes := []string{"b"}
	if _, err := m.Update(bg, k.ID, keys.Change{Scopes: &scopes}, 0); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Verify(bg, key, ""); err != nil || got.Scopes[0] != "b" {
		t.Fatalf("right after an update on this node: %v, %v; want the new scopes", got, err)
	}
	if _, err := m.Delete(bg, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Verify(bg, key, ""); !errors.Is(err, sb.ErrInvalidToken) {
		t.Fatalf("right after a delete on this node, Verify = %v", err)
	}
}

// TestCacheFillRacingAnEvent: a record read before a revocation and stored
// after its event must not be cached, or the cache would serve the revoked
// key until the next gap.
func TestCacheFillRacingAnEvent(t *testing.T) {
	m, _, rc, _ := cachedManager(t)
	key, k, err := m.Create(bg, keys.NewKey{UserID: "alice", Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	rc.hold, rc.held = make(chan struct{}), make(chan struct{})
	hold, held := rc.hold, rc.held
	rc.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		_, err := m.Verify(bg, key, "")
		done <- err
	}()
	<-held // the record has been read, not yet cached
	m.Cache.HandleEvent(sb.Event{Type: sb.EventKeyDeleted, KeyID: k.ID})
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err) // it read the key while it existed
	}
	if m.Cache.Len() != 0 {
		t.Fatal("a record read before an event about it was cached after it")
	}
}

func TestCacheBounds(t *testing.T) {
	m, c, rc, _ := cachedManager(t)
	m.Cache = &keys.Cache{Size: 3, MaxAge: time.Minute}
	var all []string
	for i := range 5 {
		key, _, err := m.Create(bg, keys.NewKey{UserID: fmt.Sprintf("u%d", i), Name: "k"})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, key)
		if _, err := m.Verify(bg, key, ""); err != nil {
			t.Fatal(err)
		}
	}
	if n := m.Cache.Len(); n != 3 {
		t.Fatalf("cache holds %d records, want its size 3", n)
	}
	// The most recent three are warm; the first was evicted.
	base := rc.count()
	for _, key := range all[2:] {
		if _, err := m.Verify(bg, key, ""); err != nil {
			t.Fatal(err)
		}
	}
	if rc.count() != base {
		t.Fatal("a recent record was evicted")
	}
	if _, err := m.Verify(bg, all[0], ""); err != nil || rc.count() != base+1 {
		t.Fatalf("the evicted record: %v after %d reads", err, rc.count()-base)
	}
	// MaxAge is a backstop: an old record is read again.
	c.Advance(time.Minute)
	base = rc.count()
	if _, err := m.Verify(bg, all[4], ""); err != nil || rc.count() != base+1 {
		t.Fatalf("a record past MaxAge was served from the cache (%d reads)", rc.count()-base)
	}
}

// TestCacheFedByTheBus: subscribed to the bus, the cache drops a record as
// soon as the event of another writer's revocation arrives.
func TestCacheFedByTheBus(t *testing.T) {
	m, _, _, bus := cachedManager(t)
	key, k, err := m.Create(bg, keys.NewKey{UserID: "alice", Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = bus.Subscribe(ctx, m.Cache)
	}()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the cache to subscribe", func() bool { return bus.Subscribers() == 1 })
	if _, err := m.Verify(bg, key, ""); err != nil {
		t.Fatal(err)
	}
	// Another node's manager: same store, no shared cache.
	other := &keys.Manager{Store: m.Store, NodeID: "node-b"}
	if _, err := other.Delete(bg, k.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the revoked key to be refused", func() bool {
		_, err := m.Verify(bg, key, "")
		return errors.Is(err, sb.ErrInvalidToken)
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func TestEventsOfManagerWrites(t *testing.T) {
	m, _, _, bus := cachedManager(t)
	rec := &recorder{}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = bus.Subscribe(ctx, rec)
	}()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the recorder to subscribe", func() bool { return bus.Subscribers() == 1 })
	_, k, err := m.Create(bg, keys.NewKey{UserID: "alice", Name: "k", Scopes: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	name := "renamed"
	if _, err := m.Update(keys.WithSource(bg, sb.SourceHTTP), k.ID, keys.Change{Name: &name}, 0); err != nil {
		t.Fatal(err)
	}
	none := []string{}
	if _, err := m.Update(bg, k.ID, keys.Change{Scopes: &none}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Delete(bg, k.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three events", func() bool { return len(rec.all()) == 3 })
	evs := rec.all()
	if evs[0].Type != sb.EventKeyUpdated || evs[0].Scopes != nil || evs[0].Source != sb.SourceHTTP || evs[0].NodeID != "node-a" || evs[0].Version != 2 {
		t.Fatalf("rename event %+v: want updated from http, no scopes", evs[0])
	}
	if evs[1].Scopes == nil || len(evs[1].Scopes) != 0 || evs[1].Source != sb.SourceAPI {
		t.Fatalf("scope change event %+v: want scopes [] from api", evs[1])
	}
	if evs[2].Type != sb.EventKeyDeleted || evs[2].Reason != sb.ReasonRevoked || evs[2].KeyID != k.ID || evs[2].UserID != "alice" {
		t.Fatalf("delete event %+v", evs[2])
	}
}

type recorder struct {
	mu  sync.Mutex
	evs []sb.Event
}

func (r *recorder) HandleEvent(ev sb.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
}

func (r *recorder) HandleGap() {}

func (r *recorder) all() []sb.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sb.Event(nil), r.evs...)
}

// BenchmarkVerifyWarm is the cost of verifying a key whose record is cached:
// no store round trip, one SHA-256 and a constant-time compare, and the copy
// handed to the caller.
func BenchmarkVerifyWarm(b *testing.B) {
	st := memory.NewKeyStore(nil)
	m := &keys.Manager{Store: st, Cache: &keys.Cache{}}
	key, _, err := m.Create(bg, keys.NewKey{UserID: "alice", Name: "bench", Scopes: []string{"ws:connect", "chat.**"}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := m.Verify(bg, key, "192.0.2.1"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := m.Verify(bg, key, "192.0.2.1"); err != nil {
			b.Fatal(err)
		}
	}
}
