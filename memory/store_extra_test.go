package memory_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/memory"
)

var bg = context.Background()

func session(t testing.TB, user string, now time.Time) *sessionbridge.Session {
	t.Helper()
	id, err := sessionbridge.NewSessionID(user)
	if err != nil {
		t.Fatal(err)
	}
	return &sessionbridge.Session{
		ID: id, UserID: user, Data: json.RawMessage(`{"a":1}`),
		CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(30 * time.Minute),
		AbsoluteExpiresAt: now.Add(24 * time.Hour), Version: 1,
	}
}

func mustCreate(t testing.TB, st *memory.Store, s *sessionbridge.Session) {
	t.Helper()
	if err := st.Create(bg, s, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
}

func TestStoreZeroValueWorksWithoutBus(t *testing.T) {
	var st memory.Store
	now := time.Now()
	s := session(t, "u", now)
	if err := st.Create(bg, s, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(bg, s.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := st.ClaimExpired(bg, now.Add(time.Hour), 0, sessionbridge.Event{}); err != nil || len(got) != 1 {
		t.Fatalf("ClaimExpired with limit 0 = %d, %v; want all (1)", len(got), err)
	}
	if st.Len() != 0 || st.Writes() != 2 {
		t.Fatalf("Len %d Writes %d, want 0 and 2", st.Len(), st.Writes())
	}
}

func TestStoreRejectsEmptyID(t *testing.T) {
	st := memory.NewStore(nil)
	if err := st.Create(bg, &sessionbridge.Session{}, sessionbridge.Event{}); err == nil {
		t.Fatal("Create of a session without ID succeeded")
	}
	if err := st.Create(bg, nil, sessionbridge.Event{}); err == nil {
		t.Fatal("Create(nil) succeeded")
	}
	if err := st.Update(bg, nil, 1, sessionbridge.Event{}); err == nil {
		t.Fatal("Update(nil) succeeded")
	}
}

func TestStoreTouchNeverRevivesExpired(t *testing.T) {
	st := memory.NewStore(nil)
	now := time.Now()
	s := session(t, "u", now)
	mustCreate(t, st, s)
	late := s.Deadline()
	wrote, err := st.Touch(bg, s.ID, late, late.Add(30*time.Minute), late, sessionbridge.Event{})
	if err != nil || wrote {
		t.Fatalf("Touch at the deadline = %v, %v; want no write", wrote, err)
	}
	if got, err := st.ClaimExpired(bg, late, 10, sessionbridge.Event{}); err != nil || len(got) != 1 {
		t.Fatalf("the session must still expire at its deadline: claimed %d, %v", len(got), err)
	}
}

func TestStoreUpdateKeepsLaterTouch(t *testing.T) {
	bus := memory.NewBus()
	st := memory.NewStore(bus)
	rec := newRecorder()
	subscribe(t, bus, rec)
	now := time.Now()
	s := session(t, "u", now)
	mustCreate(t, st, s)

	// An update computed from a read taken before a touch must not move the
	// deadline back.
	read := s.Clone()
	seen := now.Add(time.Minute)
	if wrote, err := st.Touch(bg, s.ID, seen, seen.Add(30*time.Minute), seen, sessionbridge.Event{}); err != nil || !wrote {
		t.Fatal(wrote, err)
	}
	read.Data, read.Version = json.RawMessage(`{"a":2}`), 2
	if err := st.Update(bg, read, 1, sessionbridge.Event{ExpiresAt: read.Deadline()}); err != nil {
		t.Fatal(err)
	}
	got, _ := st.Get(bg, s.ID)
	if !got.LastSeenAt.Equal(seen) || !got.ExpiresAt.Equal(seen.Add(30*time.Minute)) || got.Version != 2 || string(got.Data) != `{"a":2}` {
		t.Fatalf("after update: %+v", got)
	}
	rec.waitFor(t, "update event", func(r *recorder) bool { return len(r.events) == 3 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if ev := rec.events[2]; ev.Type != sessionbridge.EventUpdated || !ev.ExpiresAt.Equal(got.ExpiresAt) {
		t.Fatalf("update event %+v carries a deadline other than the stored %v", ev, got.ExpiresAt)
	}
}

func TestStoreFillsEventFields(t *testing.T) {
	bus := memory.NewBus()
	st := memory.NewStore(bus)
	rec := newRecorder()
	subscribe(t, bus, rec)
	s := session(t, "carol", time.Now())
	mustCreate(t, st, s)
	if _, err := st.Delete(bg, s.ID, sessionbridge.Event{Reason: sessionbridge.ReasonLogout}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "two events", func(r *recorder) bool { return len(r.events) == 2 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	c, d := rec.events[0], rec.events[1]
	if c.Type != sessionbridge.EventCreated || c.SessionID != s.ID || c.UserID != "carol" {
		t.Errorf("created event %+v", c)
	}
	if d.Type != sessionbridge.EventDeleted || d.SessionID != s.ID || d.UserID != "carol" || d.Reason != sessionbridge.ReasonLogout {
		t.Errorf("deleted event %+v", d)
	}
}

// Events of one session reach a subscriber in the order of its writes, even
// when the writes race.
func TestStorePublishesInWriteOrder(t *testing.T) {
	bus := memory.NewBus()
	st := memory.NewStore(bus)
	rec := newRecorder()
	subscribe(t, bus, rec)
	m, err := sessionbridge.NewManager(sessionbridge.Backend{Store: st, Bus: bus})
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := m.Create(bg, sessionbridge.NewSession{UserID: "u"}, sessionbridge.Change{})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				// Retries on conflict stay within the Manager's bound only for
				// few writers, so retry here until the write lands.
				for {
					_, err := m.Update(bg, s.ID, json.RawMessage(fmt.Sprintf(`{"w%d":%d}`, w, i)), 0, sessionbridge.Change{})
					if err == nil {
						break
					}
					if !errors.Is(err, sessionbridge.ErrVersionConflict) {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	const total = 1 + writers*each
	rec.waitFor(t, "every event", func(r *recorder) bool { return len(r.events) == total })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i, ev := range rec.events {
		if ev.Version != uint64(i+1) {
			t.Fatalf("event %d has version %d: events out of write order", i, ev.Version)
		}
	}
}

func TestSubscribeLeavesNoGoroutine(t *testing.T) {
	bus := memory.NewBus()
	st := memory.NewStore(bus)
	for range 10 {
		rec := newRecorder()
		stop := subscribe(t, bus, rec)
		mustCreate(t, st, session(t, "u", time.Now()))
		rec.waitFor(t, "event", func(r *recorder) bool { return len(r.events) == 1 })
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
	if n := bus.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers left", n)
	}
	goleak.VerifyNone(t)
}

func BenchmarkStoreGet(b *testing.B) {
	st := memory.NewStore(nil)
	now := time.Now()
	var ids []string
	for range 10000 {
		s := session(b, "u", now)
		mustCreate(b, st, s)
		ids = append(ids, s.ID)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := st.Get(bg, ids[i%len(ids)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkStoreTouch(b *testing.B) {
	st := memory.NewStore(memory.NewBus())
	now := time.Now()
	s := session(b, "u", now)
	mustCreate(b, st, s)
	for range 10000 {
		mustCreate(b, st, session(b, "v", now))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		seen := now.Add(time.Duration(i) * time.Millisecond)
		if _, err := st.Touch(bg, s.ID, seen, seen.Add(30*time.Minute), seen, sessionbridge.Event{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClaimExpired claims the 100 expired sessions among 100000 per
// operation; the claimed ones are put back between operations, untimed.
func BenchmarkClaimExpired(b *testing.B) {
	now := time.Now()
	st := memory.NewStore(nil)
	for i := range 100000 {
		s := session(b, "u", now)
		s.ExpiresAt = now.Add(time.Duration(i) * time.Millisecond)
		mustCreate(b, st, s)
	}
	b.ReportAllocs()
	for b.Loop() {
		got, err := st.ClaimExpired(bg, now.Add(99*time.Millisecond), 1000, sessionbridge.Event{})
		if err != nil || len(got) != 100 {
			b.Fatal(len(got), err)
		}
		b.StopTimer()
		for _, s := range got {
			mustCreate(b, st, s)
		}
		b.StartTimer()
	}
}

func BenchmarkBusPublish(b *testing.B) {
	bus := memory.NewBus()
	ctx, cancel := context.WithCancel(bg)
	done := make(chan struct{})
	go func() { bus.Subscribe(ctx, discard{}); close(done) }()
	defer func() { cancel(); <-done }()
	ev := sessionbridge.Event{Type: sessionbridge.EventUpdated, SessionID: "s", Source: sessionbridge.SourceHTTP}
	b.ReportAllocs()
	for b.Loop() {
		if err := bus.Publish(bg, ev); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) HandleEvent(sessionbridge.Event) {}
func (discard) HandleGap()                      {}
