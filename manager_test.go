package sessionbridge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/memory"
)

var ctx = context.Background()

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// events records what a bus delivers.
type events struct {
	mu      sync.Mutex
	list    []sessionbridge.Event
	changed chan struct{}
}

func (e *events) HandleEvent(ev sessionbridge.Event) {
	e.mu.Lock()
	e.list = append(e.list, ev)
	e.mu.Unlock()
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

func (e *events) HandleGap() {
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

// waitCount waits up to 5 s for n events that match and returns them.
func (e *events) waitCount(t *testing.T, n int, match func(sessionbridge.Event) bool) []sessionbridge.Event {
	t.Helper()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	for {
		e.mu.Lock()
		var got []sessionbridge.Event
		for _, ev := range e.list {
			if match(ev) {
				got = append(got, ev)
			}
		}
		e.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-e.changed:
		case <-timer.C:
			t.Fatalf("got %d matching events, want %d", len(got), n)
		}
	}
}

type fixture struct {
	m     *sessionbridge.Manager
	st    *memory.Store
	keys  *memory.KeyStore
	clock *clock
	ev    *events
}

// newFixture returns a Manager on a memory store with an injected clock, idle
// timeout 30m, absolute 24h (the defaults), touch interval 1m, and a recorder
// subscribed to its bus.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, nil)
}

// newFixtureWith is newFixture with change, if set, applied to the backend
// (node ID "n1", memory store, bus and key store) before the Manager is
// built on it.
func newFixtureWith(t *testing.T, change func(*sessionbridge.Backend)) *fixture {
	t.Helper()
	bus := memory.NewBus()
	st := memory.NewStore(bus)
	ks := memory.NewKeyStore(bus)
	c := newClock()
	ev := &events{changed: make(chan struct{}, 1)}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { bus.Subscribe(sctx, ev); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	// The initial HandleGap comes after the subscriber is registered.
	select {
	case <-ev.changed:
	case <-time.After(5 * time.Second):
		t.Fatal("no initial HandleGap from Subscribe")
	}
	b := sessionbridge.Backend{NodeID: "n1", Store: st, Bus: bus, Keys: ks}
	if change != nil {
		change(&b)
	}
	m, err := sessionbridge.NewManager(b)
	if err != nil {
		t.Fatal(err)
	}
	m.Now = c.Now
	return &fixture{m: m, st: st, keys: ks, clock: c, ev: ev}
}

// failLogger returns a logger that fails t for anything logged: Run's loops
// log only their failures.
func failLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(failWriter{t}, nil))
}

type failWriter struct{ t *testing.T }

func (w failWriter) Write(p []byte) (int, error) {
	w.t.Errorf("logged: %s", p)
	return len(p), nil
}

// run starts f.m.Run and returns a function that stops it and waits for it.
func (f *fixture) run(t *testing.T) (stop func()) {
	t.Helper()
	f.m.Logger = failLogger(t)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.m.Run(rctx) }()
	return func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	}
}

func (f *fixture) create(t *testing.T, user string) (*sessionbridge.Session, string) {
	t.Helper()
	s, token, err := f.m.Create(ctx, sessionbridge.NewSession{UserID: user}, sessionbridge.Change{Source: sessionbridge.SourceHTTP})
	if err != nil {
		t.Fatal(err)
	}
	return s, token
}

func TestManagerCreate(t *testing.T) {
	f := newFixture(t)
	now := f.clock.Now()
	dev := sessionbridge.Device{UserAgent: "ua", Browser: "Chrome", OS: "macOS", DeviceType: "desktop", IP: "192.0.2.1"}
	s, token, err := f.m.Create(ctx, sessionbridge.NewSession{UserID: "alice", Data: json.RawMessage(`{"role":"admin"}`), Device: dev}, sessionbridge.Change{Source: sessionbridge.SourceAPI, ConnectionID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	id, secret, err := sessionbridge.ParseToken(token)
	if err != nil || id != s.ID {
		t.Fatalf("token %q does not parse to the session ID: %v", token, err)
	}
	if s.SecretHash != sessionbridge.HashSecret(secret) {
		t.Fatal("stored hash is not the hash of the token's secret")
	}
	if sessionbridge.ShardOfID(s.ID) != sessionbridge.Shard("alice") {
		t.Fatal("session ID does not carry the user's shard")
	}
	if s.UserID != "alice" || s.Device != dev || s.Version != 1 || string(s.Data) != `{"role":"admin"}` ||
		!s.CreatedAt.Equal(now) || !s.LastSeenAt.Equal(now) ||
		!s.ExpiresAt.Equal(now.Add(sessionbridge.DefaultIdleTimeout)) ||
		!s.AbsoluteExpiresAt.Equal(now.Add(sessionbridge.DefaultAbsoluteTimeout)) {
		t.Fatalf("created %+v", s)
	}
	stored, err := f.st.Get(ctx, s.ID)
	if err != nil || stored.SecretHash != s.SecretHash || stored.Version != 1 {
		t.Fatalf("stored %+v, %v", stored, err)
	}
	evs := f.ev.waitCount(t, 1, func(ev sessionbridge.Event) bool { return ev.Type == sessionbridge.EventCreated })
	want := sessionbridge.Event{
		Type: sessionbridge.EventCreated, SessionID: s.ID, UserID: "alice", Source: sessionbridge.SourceAPI,
		ConnectionID: "c1", NodeID: "n1", Timestamp: now, Version: 1, ExpiresAt: s.ExpiresAt,
	}
	if !sameEvent(evs[0], want) {
		t.Fatalf("created event %+v, want %+v", evs[0], want)
	}

	empty, _, err := f.m.Create(ctx, sessionbridge.NewSession{UserID: "alice"}, sessionbridge.Change{})
	if err != nil || string(empty.Data) != `{}` {
		t.Fatalf("Create without data: %s, %v; want {}", empty.Data, err)
	}
}

// sameEvent compares events field by field, times with Equal.
func sameEvent(a, b sessionbridge.Event) bool {
	return a.Type == b.Type && a.SessionID == b.SessionID && a.UserID == b.UserID &&
		string(a.Updates) == string(b.Updates) && a.Source == b.Source && a.Timestamp.Equal(b.Timestamp) &&
		a.ConnectionID == b.ConnectionID && a.NodeID == b.NodeID && a.Version == b.Version &&
		a.ExpiresAt.Equal(b.ExpiresAt) && a.Reason == b.Reason && string(a.Data) == string(b.Data)
}

func TestManagerCreateCapsTTL(t *testing.T) {
	f := newFixture(t)
	f.m.IdleTimeout, f.m.AbsoluteTimeout = 30*time.Minute, 8*time.Hour
	now := f.clock.Now()
	for _, tc := range []struct {
		ttl           time.Duration
		wantAbs, idle time.Duration
	}{
		{0, 8 * time.Hour, 30 * time.Minute},
		{-time.Hour, 8 * time.Hour, 30 * time.Minute},
		{time.Hour, time.Hour, 30 * time.Minute},
		{10 * time.Minute, 10 * time.Minute, 10 * time.Minute},
		{48 * time.Hour, 8 * time.Hour, 30 * time.Minute},
	} {
		s, _, err := f.m.Create(ctx, sessionbridge.NewSession{UserID: "u", TTL: tc.ttl}, sessionbridge.Change{})
		if err != nil {
			t.Fatal(err)
		}
		if !s.AbsoluteExpiresAt.Equal(now.Add(tc.wantAbs)) || !s.ExpiresAt.Equal(now.Add(tc.idle)) {
			t.Errorf("TTL %v: absolute +%v idle +%v, want +%v and +%v", tc.ttl,
				s.AbsoluteExpiresAt.Sub(now), s.ExpiresAt.Sub(now), tc.wantAbs, tc.idle)
		}
	}
	if got := f.m.Absolute(); got != 8*time.Hour {
		t.Fatalf("Absolute() = %v", got)
	}
	if got := (&sessionbridge.Manager{}).Absolute(); got != sessionbridge.DefaultAbsoluteTimeout {
		t.Fatalf("zero Manager's Absolute() = %v", got)
	}
}

func TestManagerCreateRejects(t *testing.T) {
	f := newFixture(t)
	if _, _, err := f.m.Create(ctx, sessionbridge.NewSession{}, sessionbridge.Change{}); err == nil {
		t.Error("Create without a user ID succeeded")
	}
	for _, data := range []string{`[1]`, `"x"`, `null`, `{"a":1}x`, `{`} {
		if _, _, err := f.m.Create(ctx, sessionbridge.NewSession{UserID: "u", Data: json.RawMessage(data)}, sessionbridge.Change{}); !errors.Is(err, sessionbridge.ErrInvalidPatch) {
			t.Errorf("Create with data %s: %v, want ErrInvalidPatch", data, err)
		}
	}
	if f.st.Len() != 0 {
		t.Fatalf("refused creates stored %d sessions", f.st.Len())
	}
}

// failingStore is a store whose reads fail as if Redis were down.
type failingStore struct{ *memory.Store }

func (failingStore) Get(context.Context, string) (*sessionbridge.Session, error) {
	return nil, fmt.Errorf("dial: %w", sessionbridge.ErrUnavailable)
}

func TestManagerAuthenticate(t *testing.T) {
	f := newFixture(t)
	s, token := f.create(t, "alice")
	got, err := f.m.Authenticate(ctx, token)
	if err != nil || got.ID != s.ID {
		t.Fatalf("Authenticate(issued) = %v, %v", got, err)
	}

	neverIssued, secret := issue(t, "alice")
	bad := map[string]string{
		"never issued":  sessionbridge.FormatToken(neverIssued, secret),
		"wrong secret":  sessionbridge.FormatToken(s.ID, secret),
		"malformed":     token + "x",
		"empty":         "",
		"id only":       s.ID,
		"another shape": "Bearer " + token,
	}
	for name, tok := range bad {
		if got, err := f.m.Authenticate(ctx, tok); err != sessionbridge.ErrInvalidToken || got != nil {
			t.Errorf("Authenticate(%s) = %v, %v; want exactly ErrInvalidToken", name, got, err)
		}
	}

	f.clock.Advance(sessionbridge.DefaultIdleTimeout)
	if _, err := f.m.Authenticate(ctx, token); !errors.Is(err, sessionbridge.ErrExpired) {
		t.Fatalf("Authenticate past the idle deadline = %v, want ErrExpired", err)
	}
	// The wrong secret of an expired session is still just an invalid token.
	if _, err := f.m.Authenticate(ctx, sessionbridge.FormatToken(s.ID, secret)); !errors.Is(err, sessionbridge.ErrInvalidToken) {
		t.Fatalf("wrong secret of an expired session = %v, want ErrInvalidToken", err)
	}

	down, err := sessionbridge.NewManager(sessionbridge.Backend{Store: failingStore{f.st}, Bus: memory.NewBus()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := down.Authenticate(ctx, token); !errors.Is(err, sessionbridge.ErrUnavailable) || errors.Is(err, sessionbridge.ErrInvalidToken) {
		t.Fatalf("Authenticate with the store down = %v, want ErrUnavailable (fail closed, not a bad token)", err)
	}
}

func TestManagerGetAndDelete(t *testing.T) {
	f := newFixture(t)
	s, _ := f.create(t, "alice")
	if got, err := f.m.Get(ctx, s.ID); err != nil || got.ID != s.ID {
		t.Fatalf("Get = %v, %v", got, err)
	}
	for _, id := range []string{"", "not-an-id", s.ID + "x"} {
		if _, err := f.m.Get(ctx, id); !errors.Is(err, sessionbridge.ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", id, err)
		}
		if _, err := f.m.Delete(ctx, id, sessionbridge.ReasonRevoked, sessionbridge.Change{}); !errors.Is(err, sessionbridge.ErrNotFound) {
			t.Errorf("Delete(%q) = %v, want ErrNotFound", id, err)
		}
	}
	gone, err := f.m.Delete(ctx, s.ID, sessionbridge.ReasonLogout, sessionbridge.Change{Source: sessionbridge.SourceHTTP})
	if err != nil || gone.ID != s.ID {
		t.Fatalf("Delete = %v, %v", gone, err)
	}
	if _, err := f.m.Delete(ctx, s.ID, sessionbridge.ReasonLogout, sessionbridge.Change{}); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
	evs := f.ev.waitCount(t, 1, func(ev sessionbridge.Event) bool { return ev.Type == sessionbridge.EventDeleted })
	if evs[0].SessionID != s.ID || evs[0].Reason != sessionbridge.ReasonLogout || evs[0].Source != sessionbridge.SourceHTTP {
		t.Fatalf("deleted event %+v", evs[0])
	}

	// A session past its deadline but not yet claimed is gone for Get.
	s2, _ := f.create(t, "alice")
	f.clock.Advance(sessionbridge.DefaultIdleTimeout)
	if _, err := f.m.Get(ctx, s2.ID); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Fatalf("Get of an expired session = %v, want ErrNotFound", err)
	}
}

func TestManagerUpdate(t *testing.T) {
	f := newFixture(t)
	s, _ := f.create(t, "alice")
	patch := json.RawMessage(`{"cart":{"items":2},"x":null}`)
	got, err := f.m.Update(ctx, s.ID, patch, 0, sessionbridge.Change{Source: sessionbridge.SourceWebSocket, ConnectionID: "c7"})
	if err != nil || got.Version != 2 || string(got.Data) != `{"cart":{"items":2}}` {
		t.Fatalf("Update = %+v, %v", got, err)
	}
	evs := f.ev.waitCount(t, 1, func(ev sessionbridge.Event) bool { return ev.Type == sessionbridge.EventUpdated })
	if string(evs[0].Updates) != string(patch) || evs[0].Version != 2 || evs[0].ConnectionID != "c7" || evs[0].Source != sessionbridge.SourceWebSocket {
		t.Fatalf("updated event %+v", evs[0])
	}
	if _, err := f.m.Update(ctx, s.ID, json.RawMessage(`{"a":1}`), 1, sessionbridge.Change{}); !errors.Is(err, sessionbridge.ErrVersionConflict) {
		t.Fatalf("Update expecting an old version = %v, want ErrVersionConflict", err)
	}
	if got, err := f.m.Update(ctx, s.ID, json.RawMessage(`{"a":1}`), 2, sessionbridge.Change{}); err != nil || got.Version != 3 {
		t.Fatalf("Update expecting the current version = %v, %v", got, err)
	}
	for _, p := range []string{`[1]`, `null`, `{"a":1}]`, ``} {
		if _, err := f.m.Update(ctx, s.ID, json.RawMessage(p), 0, sessionbridge.Change{}); !errors.Is(err, sessionbridge.ErrInvalidPatch) {
			t.Errorf("Update with patch %q = %v, want ErrInvalidPatch", p, err)
		}
	}
	before := f.st.Writes()
	if _, err := f.m.Update(ctx, "0000000000000000AA", json.RawMessage(`{}`), 0, sessionbridge.Change{}); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Fatalf("Update of a missing session = %v, want ErrNotFound", err)
	}
	f.clock.Advance(sessionbridge.DefaultIdleTimeout)
	if _, err := f.m.Update(ctx, s.ID, json.RawMessage(`{"b":1}`), 0, sessionbridge.Change{}); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Fatalf("Update of an expired session = %v, want ErrNotFound", err)
	}
	if f.st.Writes() != before {
		t.Fatal("refused updates wrote to the store")
	}
}

func TestManagerTouch(t *testing.T) {
	f := newFixture(t)
	f.m.TouchInterval = time.Minute
	s, _ := f.create(t, "alice")
	writes := f.st.Writes()
	f.clock.Advance(59 * time.Second)
	if got, err := f.m.Touch(ctx, s, sessionbridge.Change{}); err != nil || got != s || f.st.Writes() != writes {
		t.Fatalf("touch within the interval: %v, %v, writes %d→%d", got, err, writes, f.st.Writes())
	}
	now := f.clock.Advance(time.Second)
	got, err := f.m.Touch(ctx, s, sessionbridge.Change{})
	if err != nil || !got.LastSeenAt.Equal(now) || !got.ExpiresAt.Equal(now.Add(sessionbridge.DefaultIdleTimeout)) || f.st.Writes() != writes+1 {
		t.Fatalf("touch after the interval = %+v, %v; writes %d→%d", got, err, writes, f.st.Writes())
	}
	if s.LastSeenAt.Equal(now) {
		t.Fatal("Touch modified the session it was given")
	}

	// Past its deadline a session is not revived by a late touch.
	f.clock.Advance(sessionbridge.DefaultIdleTimeout)
	writes = f.st.Writes()
	late, err := f.m.Touch(ctx, got, sessionbridge.Change{})
	if err != nil || late != got || f.st.Writes() != writes {
		t.Fatalf("touch past the deadline = %+v, %v; writes %d→%d; want no write", late, err, writes, f.st.Writes())
	}
	if stored, _ := f.st.Get(ctx, s.ID); !stored.ExpiresAt.Equal(got.ExpiresAt) {
		t.Fatal("a late touch moved the stored deadline")
	}

	// A deleted session: ErrNotFound.
	s2, _ := f.create(t, "alice")
	if _, err := f.m.Delete(ctx, s2.ID, sessionbridge.ReasonLogout, sessionbridge.Change{}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute)
	if _, err := f.m.Touch(ctx, s2, sessionbridge.Change{}); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Fatalf("touch of a deleted session = %v, want ErrNotFound", err)
	}
}

func TestManagerRotate(t *testing.T) {
	f := newFixture(t)
	s, oldToken, err := f.m.Create(ctx, sessionbridge.NewSession{UserID: "alice", Data: json.RawMessage(`{"k":"v"}`)}, sessionbridge.Change{})
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute)
	next, newToken, err := f.m.Rotate(ctx, s.ID, sessionbridge.Change{Source: sessionbridge.SourceHTTP})
	if err != nil {
		t.Fatal(err)
	}
	if next.ID == s.ID || next.SecretHash == s.SecretHash || next.Version != s.Version+1 ||
		string(next.Data) != `{"k":"v"}` || !next.CreatedAt.Equal(s.CreatedAt) ||
		!next.AbsoluteExpiresAt.Equal(s.AbsoluteExpiresAt) || next.UserID != "alice" ||
		sessionbridge.ShardOfID(next.ID) != sessionbridge.Shard("alice") {
		t.Fatalf("rotated %+v from %+v", next, s)
	}
	if _, err := f.m.Authenticate(ctx, oldToken); !errors.Is(err, sessionbridge.ErrInvalidToken) {
		t.Fatalf("old token = %v, want ErrInvalidToken", err)
	}
	if got, err := f.m.Authenticate(ctx, newToken); err != nil || got.ID != next.ID {
		t.Fatalf("new token = %v, %v", got, err)
	}
	list, err := f.m.List(ctx, "alice")
	if err != nil || len(list) != 1 || list[0].ID != next.ID {
		t.Fatalf("List after rotation = %v, %v", list, err)
	}
	del := f.ev.waitCount(t, 1, func(ev sessionbridge.Event) bool { return ev.Type == sessionbridge.EventDeleted })
	if del[0].SessionID != s.ID || del[0].Reason != sessionbridge.ReasonRotated {
		t.Fatalf("deleted event %+v, want old ID with reason rotated", del[0])
	}
	f.ev.waitCount(t, 1, func(ev sessionbridge.Event) bool {
		return ev.Type == sessionbridge.EventCreated && ev.SessionID == next.ID && ev.Version == next.Version
	})
	if _, _, err := f.m.Rotate(ctx, s.ID, sessionbridge.Change{}); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Fatalf("Rotate of the old ID = %v, want ErrNotFound", err)
	}
}

func TestManagerDeleteUserAndList(t *testing.T) {
	f := newFixture(t)
	a1, _ := f.create(t, "alice")
	a2, _ := f.create(t, "alice")
	a3, _ := f.create(t, "alice")
	b1, _ := f.create(t, "bob")

	gone, err := f.m.DeleteUser(ctx, "alice", a2.ID, sessionbridge.ReasonRevoked, sessionbridge.Change{Source: sessionbridge.SourceAPI})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(gone)
	want := []string{a1.ID, a3.ID}
	slices.Sort(want)
	if !slices.Equal(gone, want) {
		t.Fatalf("DeleteUser except a2 removed %v, want %v", gone, want)
	}
	evs := f.ev.waitCount(t, 2, func(ev sessionbridge.Event) bool { return ev.Type == sessionbridge.EventDeleted })
	for _, ev := range evs {
		if ev.UserID != "alice" || ev.Reason != sessionbridge.ReasonRevoked || ev.SessionID == a2.ID {
			t.Errorf("deleted event %+v", ev)
		}
	}
	if list, _ := f.m.List(ctx, "alice"); len(list) != 1 || list[0].ID != a2.ID {
		t.Fatalf("alice's sessions after DeleteUser: %v", list)
	}
	if list, _ := f.m.List(ctx, "bob"); len(list) != 1 || list[0].ID != b1.ID {
		t.Fatalf("bob's sessions changed: %v", list)
	}
	gone, err = f.m.DeleteUser(ctx, "alice", "", sessionbridge.ReasonRevoked, sessionbridge.Change{})
	if err != nil || !slices.Equal(gone, []string{a2.ID}) {
		t.Fatalf("DeleteUser without exception = %v, %v", gone, err)
	}
	if gone, err := f.m.DeleteUser(ctx, "nobody", "", sessionbridge.ReasonRevoked, sessionbridge.Change{}); err != nil || len(gone) != 0 {
		t.Fatalf("DeleteUser of a user without sessions = %v, %v", gone, err)
	}
}

func TestManagerListFiltersExpired(t *testing.T) {
	f := newFixture(t)
	f.m.IdleTimeout = 10 * time.Minute
	old, _ := f.create(t, "alice")
	f.clock.Advance(5 * time.Minute)
	fresh, _ := f.create(t, "alice")
	f.clock.Advance(5 * time.Minute) // old's idle deadline exactly
	list, err := f.m.List(ctx, "alice")
	if err != nil || len(list) != 1 || list[0].ID != fresh.ID {
		t.Fatalf("List = %v, %v; want only %s (not %s)", list, err, fresh.ID, old.ID)
	}
	if f.st.Len() != 2 {
		t.Fatal("List must not delete: expiry is claimed once, with its event")
	}
}

func TestManagerClaimExpiredAndRun(t *testing.T) {
	f := newFixture(t)
	f.m.IdleTimeout = 10 * time.Minute
	var ids []string
	for range 3 {
		s, _ := f.create(t, "alice")
		ids = append(ids, s.ID)
	}
	live, _ := f.create(t, "bob")
	if got, err := f.m.ClaimExpired(ctx, 10); err != nil || len(got) != 0 {
		t.Fatalf("ClaimExpired before the deadline = %v, %v", got, err)
	}
	f.clock.Advance(9 * time.Minute)
	f.m.Touch(ctx, live, sessionbridge.Change{}) // bob's deadline moves to +19m
	f.clock.Advance(time.Minute)

	f.m.ExpiryInterval = time.Millisecond
	stop := f.run(t)
	evs := f.ev.waitCount(t, 3, func(ev sessionbridge.Event) bool { return ev.Type == sessionbridge.EventExpired })
	stop()
	var got []string
	for _, ev := range evs {
		if ev.UserID != "alice" || ev.Source != sessionbridge.SourceSystem || ev.NodeID != "n1" || ev.Version != 1 {
			t.Errorf("expired event %+v", ev)
		}
		got = append(got, ev.SessionID)
	}
	slices.Sort(got)
	slices.Sort(ids)
	if !slices.Equal(got, ids) {
		t.Fatalf("expired %v, want %v", got, ids)
	}
	if f.st.Len() != 1 {
		t.Fatalf("store holds %d sessions, want only bob's", f.st.Len())
	}
	if _, err := f.m.Get(ctx, live.ID); err != nil {
		t.Fatalf("bob's touched session: %v", err)
	}
}

// turnStore hands the expiry turn out only while mine is set, and counts
// the asks.
type turnStore struct {
	sessionbridge.Store
	mine, asks atomic.Int64
	lastTTL    atomic.Int64
}

func (s *turnStore) TakeExpiryTurn(_ context.Context, ttl time.Duration) (bool, error) {
	s.asks.Add(1)
	s.lastTTL.Store(int64(ttl))
	return s.mine.Load() == 1, nil
}

func TestRunClaimsOnlyOnItsTurn(t *testing.T) {
	var ts *turnStore
	f := newFixtureWith(t, func(b *sessionbridge.Backend) {
		ts = &turnStore{Store: b.Store}
		b.Store = ts
	})
	f.m.IdleTimeout = time.Minute
	f.m.ExpiryInterval = time.Millisecond
	s, _ := f.create(t, "alice")
	f.clock.Advance(2 * time.Minute)

	defer f.run(t)()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for ts.asks.Load() < 5 {
		if time.Now().After(deadline) {
			t.Fatal("Run never asked for the turn")
		}
		<-tick.C
	}
	if f.st.Len() != 1 {
		t.Fatalf("store holds %d sessions after turns that were not ours, want 1", f.st.Len())
	}
	if got := time.Duration(ts.lastTTL.Load()); got <= 0 || got >= time.Millisecond {
		t.Fatalf("turn asked for %v, want less than the interval", got)
	}
	ts.mine.Store(1)
	evs := f.ev.waitCount(t, 1, func(ev sessionbridge.Event) bool { return ev.Type == sessionbridge.EventExpired })
	if evs[0].SessionID != s.ID {
		t.Fatalf("expired %s, want %s", evs[0].SessionID, s.ID)
	}
}

func TestNewManager(t *testing.T) {
	bus := memory.NewBus()
	for name, b := range map[string]sessionbridge.Backend{
		"no store": {Bus: bus},
		"no bus":   {Store: memory.NewStore(bus)},
	} {
		if m, err := sessionbridge.NewManager(b); err == nil || m != nil {
			t.Errorf("NewManager(%s) = %v, %v; want an error", name, m, err)
		}
	}
	a, err := sessionbridge.NewManager(memory.New())
	if err != nil {
		t.Fatal(err)
	}
	b, err := sessionbridge.NewManager(memory.New())
	if err != nil {
		t.Fatal(err)
	}
	// One default, chosen once: every part of the node reads the same ID.
	if a.NodeID() == "" || a.NodeID() != a.Backend().NodeID || a.NodeID() != a.NodeID() {
		t.Fatalf("NodeID() = %q, Backend().NodeID = %q", a.NodeID(), a.Backend().NodeID)
	}
	if a.NodeID() == b.NodeID() {
		t.Fatalf("two nodes were both named %q", a.NodeID())
	}
	if err := a.Ping(ctx); err != nil {
		t.Fatalf("Ping = %v", err)
	}
}

func TestManagerStoredSeesExpiredSessions(t *testing.T) {
	f := newFixture(t)
	s, _ := f.create(t, "alice")
	f.clock.Advance(sessionbridge.DefaultIdleTimeout)
	if _, err := f.m.Get(ctx, s.ID); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Fatalf("Get past the deadline = %v, want ErrNotFound", err)
	}
	// The gateway tells an expiry from a revocation by what is stored.
	got, err := f.m.Stored(ctx, s.ID)
	if err != nil || got.ID != s.ID || !got.Expired(f.clock.Now()) {
		t.Fatalf("Stored past the deadline = %v, %v; want the expired session", got, err)
	}
	many, err := f.m.StoredMany(ctx, []string{s.ID, "gone"})
	if err != nil || len(many) != 1 || many[s.ID] == nil {
		t.Fatalf("StoredMany = %v, %v; want only %s", many, err, s.ID)
	}
	if _, err := f.m.Delete(ctx, s.ID, sessionbridge.ReasonRevoked, sessionbridge.Change{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Stored(ctx, s.ID); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Fatalf("Stored after delete = %v, want ErrNotFound", err)
	}
}

// newKey stores an API key of alice's that expires at exp.
func (f *fixture) newKey(t *testing.T, exp time.Time) *sessionbridge.APIKey {
	t.Helper()
	_, id, hash, err := sessionbridge.NewAPIKey("alice")
	if err != nil {
		t.Fatal(err)
	}
	k := &sessionbridge.APIKey{ID: id, UserID: "alice", SecretHash: hash, CreatedAt: f.clock.Now(), ExpiresAt: exp, Version: 1}
	if err := f.keys.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestManagerRunClaimsExpiredKeys(t *testing.T) {
	f := newFixture(t)
	k := f.newKey(t, f.clock.Now().Add(time.Minute))
	later := f.newKey(t, f.clock.Now().Add(time.Hour))
	if got, err := f.m.ClaimExpiredKeys(ctx, 0); err != nil || len(got) != 0 {
		t.Fatalf("ClaimExpiredKeys before the expiry = %v, %v", got, err)
	}
	f.clock.Advance(time.Minute)
	// Session claims every hour: the key claim runs on its own interval.
	f.m.ExpiryInterval, f.m.KeyExpiryInterval = time.Hour, time.Millisecond
	stop := f.run(t)
	evs := f.ev.waitCount(t, 1, func(ev sessionbridge.Event) bool { return ev.Type == sessionbridge.EventKeyExpired })
	stop()
	if ev := evs[0]; ev.KeyID != k.ID || ev.UserID != "alice" || ev.NodeID != "n1" || ev.Source != sessionbridge.SourceSystem {
		t.Fatalf("expired event %+v, want key %s of alice from n1", ev, k.ID)
	}
	if got, err := f.m.ClaimExpiredKeys(ctx, 0); err != nil || len(got) != 0 {
		t.Fatalf("a second claim = %v, %v; want nothing (claimed once)", got, err)
	}
	if _, err := f.keys.GetKey(ctx, later.ID); err != nil {
		t.Fatalf("the key that expires later: %v", err)
	}
}

// turnKeys hands the key expiry turn out only while mine is set, and counts
// the asks.
type turnKeys struct {
	sessionbridge.KeyStore
	mine, asks atomic.Int64
}

func (s *turnKeys) TakeExpiryTurn(context.Context, time.Duration) (bool, error) {
	s.asks.Add(1)
	return s.mine.Load() == 1, nil
}

func TestRunClaimsKeysOnlyOnTheirTurn(t *testing.T) {
	var tk *turnKeys
	f := newFixtureWith(t, func(b *sessionbridge.Backend) {
		tk = &turnKeys{KeyStore: b.Keys}
		b.Keys = tk
	})
	k := f.newKey(t, f.clock.Now().Add(time.Minute))
	f.clock.Advance(time.Minute)
	f.m.ExpiryInterval, f.m.KeyExpiryInterval = time.Hour, time.Millisecond
	defer f.run(t)()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for tk.asks.Load() < 5 {
		if time.Now().After(deadline) {
			t.Fatal("Run never asked for the key turn")
		}
		<-tick.C
	}
	f.ev.mu.Lock()
	for _, ev := range f.ev.list {
		if ev.Type == sessionbridge.EventKeyExpired {
			t.Errorf("key claimed on turns that were not ours: %+v", ev)
		}
	}
	f.ev.mu.Unlock()
	tk.mine.Store(1)
	evs := f.ev.waitCount(t, 1, func(ev sessionbridge.Event) bool { return ev.Type == sessionbridge.EventKeyExpired })
	if evs[0].KeyID != k.ID {
		t.Fatalf("expired key %s, want %s", evs[0].KeyID, k.ID)
	}
}
