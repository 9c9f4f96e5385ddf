// Package storetest is the conformance suite for [sessionbridge.Store]
// implementations. Every store runs the same suite from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) (sessionbridge.Store, sessionbridge.Bus) {
//			bus := memory.NewBus()
//			return memory.NewStore(bus), bus
//		})
//	}
//
// The suite uses only the Store and Bus interfaces and the
// [sessionbridge.Manager] on top of them. It never sleeps: published events are
// awaited with a deadline, and session deadlines are chosen in the future and
// crossed by passing times to the store or an injected Manager clock, so it
// runs unchanged against networked stores.
package storetest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
)

// NewStoreFunc returns a new, empty store and the bus it publishes its events
// on. Each call must return a store isolated from every other one it returned
// (for a networked store, e.g. its own database or key and channel prefix), and
// register any cleanup with t.Cleanup.
type NewStoreFunc func(t *testing.T) (sessionbridge.Store, sessionbridge.Bus)

// Run runs the conformance suite against the stores newStore makes, one fresh
// store per subtest.
func Run(t *testing.T, newStore NewStoreFunc) {
	tests := []struct {
		name string
		run  func(t *testing.T, h *harness)
	}{
		{"CreateGetRoundTrip", testCreateGet},
		{"CreateExisting", testCreateExisting},
		{"NotFound", testNotFound},
		{"UpdateVersion", testUpdateVersion},
		{"ManagerConcurrentUpdatesLoseNothing", testConcurrentUpdates},
		{"ManagerExpectVersionOneWins", testExpectVersion},
		{"DeleteWinsOverUpdate", testDeleteRacesUpdate},
		{"TouchThrottling", testTouchThrottling},
		{"IdleAndAbsoluteTimeout", testTimeouts},
		{"ListUserIndex", testListUser},
		{"Rotate", testRotate},
		{"RotateVersion", testRotateVersion},
		{"LateTouchSurvivesUpdate", testLateTouchSurvivesUpdate},
		{"ExpiredNotTouched", testExpiredNotTouched},
		{"DeletedEventNamesUser", testDeletedEventNamesUser},
		{"ClaimExpiredExactlyOnce", testClaimExpired},
		{"ClaimExpiredWrittenAfterRead", testClaimWrittenAfterRead},
		{"TouchMovesExpiry", testTouchMovesExpiry},
		{"Events", testEvents},
		{"Ping", testPing},
		{"Tokens", testTokens},
		{"ScopesRoundTrip", testScopesRoundTrip},
		{"ScopesPatch", testScopesPatch},
		{"ScopesRotate", testScopesRotate},
		{"ChangedVersions", testChangedVersions},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, bus := newStore(t)
			if st == nil || bus == nil {
				t.Fatal("storetest: newStore returned a nil Store or Bus")
			}
			h := &harness{st: st, bus: bus, raw: st}
			if r, ok := bus.(sessionbridge.Router); ok {
				f := &follower{t: t, router: r, topics: map[sessionbridge.Topic]bool{}}
				h.st, h.bus = &followingStore{Store: st, f: f}, &followingBus{Router: r, f: f}
			}
			tc.run(t, h)
		})
	}
}

type harness struct {
	st  sessionbridge.Store
	bus sessionbridge.Bus
	// raw is the store as newStore returned it, st perhaps wrapped.
	raw sessionbridge.Store
}

func (h *harness) manager(c *clock) *sessionbridge.Manager {
	m, err := sessionbridge.NewManager(sessionbridge.Backend{NodeID: "node-a", Store: h.st, Bus: h.bus})
	if err != nil {
		panic("storetest: " + err.Error())
	}
	m.IdleTimeout, m.AbsoluteTimeout, m.TouchInterval = 30*time.Minute, time.Hour, time.Minute
	if c != nil {
		m.Now = c.Now
	}
	return m
}

// clock is an injectable Manager clock that starts at the real time, so that
// deadlines it makes lie in the real future, as a networked store may expect.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Millisecond)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) time.Time {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
	return t
}

func (c *clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

func randomHex(t *testing.T) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

func newUser(t *testing.T) string { return "user-" + randomHex(t) }

func newID(t *testing.T, userID string) string {
	id, err := sessionbridge.NewSessionID(userID)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// makeSession returns a session of userID whose times are around now and whose
// deadline is 30 minutes after it, and its token.
func makeSession(t *testing.T, userID string, now time.Time) (*sessionbridge.Session, string) {
	t.Helper()
	id := newID(t, userID)
	secret, hash, err := sessionbridge.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return &sessionbridge.Session{
		ID: id, UserID: userID, SecretHash: hash,
		Data: json.RawMessage(`{"theme":"dark","n":42,"nested":{"list":[1,2.5,"x"],"t":true},"s":"ünï \"q\" <b>"}`),
		Device: sessionbridge.Device{
			UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0", Browser: "Firefox",
			OS: "Linux", DeviceType: "desktop", IP: "203.0.113.7",
		},
		CreatedAt:         now.Add(-time.Hour),
		LastSeenAt:        now,
		ExpiresAt:         now.Add(30 * time.Minute),
		AbsoluteExpiresAt: now.Add(23 * time.Hour),
		Version:           1,
	}, sessionbridge.FormatToken(id, secret)
}

// created is the event of s's creation. Its timestamp is the session's own
// creation time, so that building it twice (once to write, once to compare
// with what the bus delivered) yields the same event.
func created(s *sessionbridge.Session) sessionbridge.Event {
	return sessionbridge.Event{
		Type: sessionbridge.EventCreated, SessionID: s.ID, UserID: s.UserID,
		Source: sessionbridge.SourceAPI, Timestamp: s.CreatedAt, NodeID: "node-a",
		Version: s.Version, ExpiresAt: s.Deadline(),
	}
}

func mustCreate(t *testing.T, st sessionbridge.Store, s *sessionbridge.Session) {
	ctx := t.Context()
	t.Helper()
	if err := st.Create(ctx, s.Clone(), created(s)); err != nil {
		t.Fatalf("Create(%s): %v", s.ID, err)
	}
}

func mustGet(t *testing.T, st sessionbridge.Store, id string) *sessionbridge.Session {
	ctx := t.Context()
	t.Helper()
	s, err := st.Get(ctx, id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return s
}

func wantNotFound(t *testing.T, st sessionbridge.Store, id string) {
	ctx := t.Context()
	t.Helper()
	if s, err := st.Get(ctx, id); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Fatalf("Get(%s) = %+v, %v; want ErrNotFound", id, s, err)
	}
}

func listIDs(t *testing.T, st sessionbridge.Store, userID string) []string {
	ctx := t.Context()
	t.Helper()
	list, err := st.ListUser(ctx, userID)
	if err != nil {
		t.Fatalf("ListUser(%s): %v", userID, err)
	}
	ids := make([]string, 0, len(list))
	for _, s := range list {
		if s.UserID != userID {
			t.Errorf("ListUser(%s) returned session %s of user %s", userID, s.ID, s.UserID)
		}
		ids = append(ids, s.ID)
	}
	slices.Sort(ids)
	return ids
}

func sorted(ids ...string) []string {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	return ids
}

func testCreateGet(t *testing.T, h *harness) {
	ctx := t.Context()
	user := newUser(t)
	now := time.Now()
	var want []*sessionbridge.Session
	for i := range 3 {
		s, _ := makeSession(t, user, now.Add(time.Duration(i)*time.Second))
		s.Version = uint64(1 + i)
		in := s.Clone()
		if err := h.st.Create(ctx, in, created(s)); err != nil {
			t.Fatalf("Create: %v", err)
		}
		// The store must have kept its own copy.
		in.Data[2] = 'X'
		in.Device.IP = "changed"
		want = append(want, s)
	}
	for _, s := range want {
		got := mustGet(t, h.st, s.ID)
		checkSession(t, got, s)
		// What Get returns belongs to the caller.
		got.Data[2] = 'X'
		got.Version = 99
		checkSession(t, mustGet(t, h.st, s.ID), s)
	}

	missing := newID(t, user)
	m, err := h.st.GetMany(ctx, []string{want[0].ID, missing, want[1].ID, want[2].ID})
	if err != nil {
		t.Fatalf("GetMany: %v", err)
	}
	if len(m) != 3 {
		t.Fatalf("GetMany returned %d sessions, want 3", len(m))
	}
	if _, ok := m[missing]; ok {
		t.Errorf("GetMany returned the missing ID %s", missing)
	}
	for _, s := range want {
		checkSession(t, m[s.ID], s)
	}
	for _, ids := range [][]string{nil, {}, {missing}} {
		m, err := h.st.GetMany(ctx, ids)
		if err != nil || len(m) != 0 {
			t.Errorf("GetMany(%q) = %d sessions, %v; want none, nil", ids, len(m), err)
		}
	}
}

func testCreateExisting(t *testing.T, h *harness) {
	ctx := t.Context()
	s, _ := makeSession(t, newUser(t), time.Now())
	mustCreate(t, h.st, s)
	dup := s.Clone()
	dup.Data = json.RawMessage(`{"other":true}`)
	dup.Version = 7
	if err := h.st.Create(ctx, dup, created(dup)); !errors.Is(err, sessionbridge.ErrExists) {
		t.Fatalf("Create of a taken ID = %v, want ErrExists", err)
	}
	checkSession(t, mustGet(t, h.st, s.ID), s)
}

func testNotFound(t *testing.T, h *harness) {
	ctx := t.Context()
	user := newUser(t)
	now := time.Now()
	s, _ := makeSession(t, user, now)
	wantNotFound(t, h.st, s.ID)
	if err := h.st.Update(ctx, s, 1, sessionbridge.Event{Type: sessionbridge.EventUpdated, SessionID: s.ID}); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Errorf("Update of missing = %v, want ErrNotFound", err)
	}
	if _, err := h.st.Touch(ctx, s.ID, now, now.Add(time.Hour), now.Add(time.Hour), sessionbridge.Event{Type: sessionbridge.EventUpdated, SessionID: s.ID}); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Errorf("Touch of missing = %v, want ErrNotFound", err)
	}
	if _, err := h.st.Delete(ctx, s.ID, sessionbridge.Event{Type: sessionbridge.EventDeleted, SessionID: s.ID}); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Errorf("Delete of missing = %v, want ErrNotFound", err)
	}
	r := s.Clone()
	r.ID = newID(t, user)
	err := h.st.Rotate(ctx, s.ID, r, sessionbridge.Event{Type: sessionbridge.EventDeleted}, sessionbridge.Event{Type: sessionbridge.EventCreated})
	if !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Errorf("Rotate of missing = %v, want ErrNotFound", err)
	}
	wantNotFound(t, h.st, r.ID)
	if ids := listIDs(t, h.st, user); len(ids) != 0 {
		t.Errorf("ListUser of unknown user = %v, want none", ids)
	}
}

func testUpdateVersion(t *testing.T, h *harness) {
	ctx := t.Context()
	s, _ := makeSession(t, newUser(t), time.Now())
	mustCreate(t, h.st, s)

	next := s.Clone()
	next.Data = json.RawMessage(`{"theme":"light"}`)
	next.Version = 2
	ev := sessionbridge.Event{Type: sessionbridge.EventUpdated, SessionID: s.ID, UserID: s.UserID, Updates: json.RawMessage(`{"theme":"light"}`), Version: 2}
	if err := h.st.Update(ctx, next, 1, ev); err != nil {
		t.Fatalf("Update: %v", err)
	}
	checkSession(t, mustGet(t, h.st, s.ID), next)

	stale := s.Clone()
	stale.Data = json.RawMessage(`{"theme":"stale"}`)
	stale.Version = 2
	if err := h.st.Update(ctx, stale, 1, ev); !errors.Is(err, sessionbridge.ErrVersionConflict) {
		t.Fatalf("Update with an old version = %v, want ErrVersionConflict", err)
	}
	checkSession(t, mustGet(t, h.st, s.ID), next)

	// A session never changes hands: an update naming another user fails and
	// leaves the session and both users' indexes as they were.
	moved := next.Clone()
	moved.UserID = newUser(t)
	moved.Version = 3
	if err := h.st.Update(ctx, moved, 2, ev); err == nil {
		t.Fatal("Update that changes the user succeeded, want an error")
	}
	checkSession(t, mustGet(t, h.st, s.ID), next)
	if ids := listIDs(t, h.st, moved.UserID); len(ids) != 0 {
		t.Fatalf("ListUser of the other user = %v, want none", ids)
	}
	if ids := listIDs(t, h.st, s.UserID); !slices.Equal(ids, []string{s.ID}) {
		t.Fatalf("ListUser of the owner = %v, want [%s]", ids, s.ID)
	}

	if _, err := h.st.Delete(ctx, s.ID, sessionbridge.Event{Type: sessionbridge.EventDeleted, SessionID: s.ID}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	third := next.Clone()
	third.Version = 3
	if err := h.st.Update(ctx, third, 2, ev); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Fatalf("Update after Delete = %v, want ErrNotFound", err)
	}
	wantNotFound(t, h.st, s.ID)
}

func testConcurrentUpdates(t *testing.T, h *harness) {
	ctx := t.Context()
	// 16 writers: the Manager retries a conflict up to 16 times, and each of a
	// writer's conflicts means one of the 15 others committed, so none may fail.
	const n = 16
	m := h.manager(nil)
	s, _, err := m.Create(ctx, sessionbridge.NewSession{UserID: newUser(t), Data: json.RawMessage(`{"base":true}`)}, sessionbridge.Change{Source: sessionbridge.SourceAPI})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			patch := json.RawMessage(fmt.Sprintf(`{"k%d":%d}`, i, i))
			if _, err := m.Update(ctx, s.ID, patch, 0, sessionbridge.Change{Source: sessionbridge.SourceWebSocket}); err != nil {
				t.Errorf("Update %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	got := mustGet(t, h.st, s.ID)
	if got.Version != 1+n {
		t.Errorf("Version = %d after %d updates, want %d", got.Version, n, 1+n)
	}
	var data map[string]any
	if err := json.Unmarshal(got.Data, &data); err != nil {
		t.Fatal(err)
	}
	if data["base"] != true {
		t.Errorf("initial key lost: %s", got.Data)
	}
	for i := range n {
		if v, ok := data[fmt.Sprintf("k%d", i)]; !ok || v != float64(i) {
			t.Errorf("key k%d lost or wrong (%v): %s", i, v, got.Data)
		}
	}
}

func testExpectVersion(t *testing.T, h *harness) {
	ctx := t.Context()
	const n = 8
	m := h.manager(nil)
	s, _, err := m.Create(ctx, sessionbridge.NewSession{UserID: newUser(t)}, sessionbridge.Change{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Update(ctx, s.ID, json.RawMessage(`{"step":1}`), 1, sessionbridge.Change{}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var winners []int
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := m.Update(ctx, s.ID, json.RawMessage(fmt.Sprintf(`{"winner":%d}`, i)), 2, sessionbridge.Change{})
			switch {
			case err == nil:
				mu.Lock()
				winners = append(winners, i)
				mu.Unlock()
			case !errors.Is(err, sessionbridge.ErrVersionConflict):
				t.Errorf("Update %d = %v, want nil or ErrVersionConflict", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("%d updates with expectVersion 2 succeeded (%v), want exactly 1", len(winners), winners)
	}
	got := mustGet(t, h.st, s.ID)
	want := fmt.Sprintf(`{"step":1,"winner":%d}`, winners[0])
	if got.Version != 3 || !sameJSON(got.Data, json.RawMessage(want)) {
		t.Fatalf("after the race: version %d data %s, want 3 and %s", got.Version, got.Data, want)
	}
}

func testDeleteRacesUpdate(t *testing.T, h *harness) {
	ctx := t.Context()
	m := h.manager(nil)
	user := newUser(t)
	for round := range 20 {
		s, _, err := m.Create(ctx, sessionbridge.NewSession{UserID: user}, sessionbridge.Change{})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			for i := range 50 {
				_, err := m.Update(ctx, s.ID, json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), 0, sessionbridge.Change{})
				if errors.Is(err, sessionbridge.ErrNotFound) {
					return
				}
				if err != nil {
					t.Errorf("round %d: Update = %v, want nil or ErrNotFound", round, err)
					return
				}
			}
		})
		wg.Go(func() {
			<-start
			if _, err := m.Delete(ctx, s.ID, sessionbridge.ReasonRevoked, sessionbridge.Change{}); err != nil {
				t.Errorf("round %d: Delete: %v", round, err)
			}
		})
		close(start)
		wg.Wait()
		wantNotFound(t, h.st, s.ID)
		if ids := listIDs(t, h.st, user); slices.Contains(ids, s.ID) {
			t.Fatalf("round %d: deleted session %s is back in ListUser", round, s.ID)
		}
	}
}

func isTouch(ev sessionbridge.Event) bool {
	return ev.Type == sessionbridge.EventUpdated && len(ev.Updates) == 0
}

func testTouchThrottling(t *testing.T, h *harness) {
	ctx := t.Context()
	rec := watch(t, h.bus)
	c := newClock()
	m := h.manager(c) // idle 30m, absolute 1h, touch interval 1m
	t0 := c.Now()
	ch := sessionbridge.Change{Source: sessionbridge.SourceWebSocket, ConnectionID: "conn-1"}
	s, _, err := m.Create(ctx, sessionbridge.NewSession{UserID: newUser(t)}, ch)
	if err != nil {
		t.Fatal(err)
	}
	touch := func(s *sessionbridge.Session) *sessionbridge.Session {
		t.Helper()
		got, err := m.Touch(ctx, s, ch)
		if err != nil {
			t.Fatalf("Touch: %v", err)
		}
		return got
	}
	var wantTouches []sessionbridge.Event
	recorded := func(at, deadline time.Time) {
		t.Helper()
		got := mustGet(t, h.st, s.ID)
		if !sameTime(got.LastSeenAt, at) || !sameTime(got.ExpiresAt, deadline) || got.Version != 1 {
			t.Fatalf("after touch at +%v: LastSeenAt +%v ExpiresAt +%v Version %d; want +%v, +%v, 1",
				at.Sub(t0), got.LastSeenAt.Sub(t0), got.ExpiresAt.Sub(t0), got.Version, at.Sub(t0), deadline.Sub(t0))
		}
		wantTouches = append(wantTouches, sessionbridge.Event{
			Type: sessionbridge.EventUpdated, SessionID: s.ID, UserID: s.UserID, Source: ch.Source,
			ConnectionID: ch.ConnectionID, NodeID: "node-a", Timestamp: at, Version: 1, ExpiresAt: deadline,
		})
	}

	// Within the interval nothing is written.
	c.Advance(30 * time.Second)
	for range 10 {
		if got := touch(s); !got.LastSeenAt.Equal(t0) {
			t.Fatalf("touch within the interval moved LastSeenAt to +%v", got.LastSeenAt.Sub(t0))
		}
	}
	// At the interval, many concurrent requests holding the same read of the
	// session touch it: exactly one write.
	at := c.Advance(30 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wrote := 0
	for range 16 {
		wg.Go(func() {
			got, err := m.Touch(ctx, s, ch)
			if err != nil {
				t.Errorf("Touch: %v", err)
				return
			}
			if got.LastSeenAt.Equal(at) {
				mu.Lock()
				wrote++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if wrote != 1 {
		t.Fatalf("%d of 16 concurrent touches wrote, want 1", wrote)
	}
	recorded(at, at.Add(30*time.Minute))

	// Stale and fresh reads alike cost nothing until the interval passed again.
	c.Advance(59 * time.Second)
	touch(s)
	touch(mustGet(t, h.st, s.ID))
	recorded(at, at.Add(30*time.Minute))
	wantTouches = wantTouches[:1]

	at = c.Advance(time.Second)
	if got := touch(mustGet(t, h.st, s.ID)); !got.LastSeenAt.Equal(at) {
		t.Fatalf("touch after the interval did not write")
	}
	recorded(at, at.Add(30*time.Minute))

	// Near the absolute deadline a touch extends only up to it.
	at = c.Advance(29 * time.Minute) // t0 + 31m
	touch(mustGet(t, h.st, s.ID))
	recorded(at, s.AbsoluteExpiresAt)
	at = c.Set(t0.Add(59 * time.Minute))
	touch(mustGet(t, h.st, s.ID))
	recorded(at, s.AbsoluteExpiresAt)

	evs := ofType(sentinel(t, h.bus, rec), sessionbridge.EventUpdated)
	if len(evs) != len(wantTouches) {
		t.Fatalf("%d updated events, want %d touches: %s", len(evs), len(wantTouches), describe(evs))
	}
	for i, ev := range evs {
		if !isTouch(ev) {
			t.Errorf("touch event %d carries updates %s", i, ev.Updates)
		}
		checkEvent(t, ev, wantTouches[i])
	}
}

func testTimeouts(t *testing.T, h *harness) {
	ctx := t.Context()
	c := newClock()
	m := h.manager(c)
	m.IdleTimeout = 10 * time.Minute
	t0 := c.Now()
	idle, idleToken, err := m.Create(ctx, sessionbridge.NewSession{UserID: newUser(t)}, sessionbridge.Change{})
	if err != nil {
		t.Fatal(err)
	}
	c.Set(t0.Add(10*time.Minute - time.Millisecond))
	if _, err := m.Authenticate(ctx, idleToken); err != nil {
		t.Fatalf("Authenticate just before the idle deadline: %v", err)
	}
	c.Set(t0.Add(10 * time.Minute))
	if _, err := m.Authenticate(ctx, idleToken); !errors.Is(err, sessionbridge.ErrExpired) {
		t.Fatalf("Authenticate at the idle deadline = %v, want ErrExpired", err)
	}
	if _, err := m.Get(ctx, idle.ID); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Fatalf("Manager.Get of an idle-expired session = %v, want ErrNotFound", err)
	}

	tb := c.Now()
	busy, busyToken, err := m.Create(ctx, sessionbridge.NewSession{UserID: newUser(t)}, sessionbridge.Change{})
	if err != nil {
		t.Fatal(err)
	}
	if !sameTime(busy.AbsoluteExpiresAt, tb.Add(time.Hour)) {
		t.Fatalf("AbsoluteExpiresAt = +%v, want +1h", busy.AbsoluteExpiresAt.Sub(tb))
	}
	// Activity every five minutes keeps the session alive up to, never past,
	// its absolute deadline.
	for k := 1; k <= 11; k++ {
		c.Set(tb.Add(time.Duration(k) * 5 * time.Minute))
		s, err := m.Authenticate(ctx, busyToken)
		if err != nil {
			t.Fatalf("Authenticate at +%dm with activity: %v", 5*k, err)
		}
		if _, err := m.Touch(ctx, s, sessionbridge.Change{}); err != nil {
			t.Fatal(err)
		}
	}
	c.Set(tb.Add(time.Hour - time.Millisecond))
	if _, err := m.Authenticate(ctx, busyToken); err != nil {
		t.Fatalf("Authenticate just before the absolute deadline: %v", err)
	}
	c.Set(tb.Add(time.Hour))
	if _, err := m.Authenticate(ctx, busyToken); !errors.Is(err, sessionbridge.ErrExpired) {
		t.Fatalf("Authenticate at the absolute deadline, touched 5 minutes ago = %v, want ErrExpired", err)
	}
}

func testListUser(t *testing.T, h *harness) {
	ctx := t.Context()
	now := time.Now()
	u, v := newUser(t), newUser(t)
	s1, _ := makeSession(t, u, now)
	s2, _ := makeSession(t, u, now.Add(time.Second))
	s3, _ := makeSession(t, u, now.Add(2*time.Second))
	s3.ExpiresAt = now.Add(10 * time.Minute)
	other, _ := makeSession(t, v, now)
	for _, s := range []*sessionbridge.Session{s1, s2, s3, other} {
		mustCreate(t, h.st, s)
	}
	if got, want := listIDs(t, h.st, u), sorted(s1.ID, s2.ID, s3.ID); !slices.Equal(got, want) {
		t.Fatalf("ListUser = %v, want %v", got, want)
	}
	list, err := h.st.ListUser(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*sessionbridge.Session{s1.ID: s1, s2.ID: s2, s3.ID: s3}
	for _, s := range list {
		checkSession(t, s, byID[s.ID])
	}
	if got := listIDs(t, h.st, v); !slices.Equal(got, []string{other.ID}) {
		t.Fatalf("ListUser(other user) = %v, want [%s]", got, other.ID)
	}

	if _, err := h.st.Delete(ctx, s1.ID, sessionbridge.Event{Type: sessionbridge.EventDeleted, SessionID: s1.ID, Reason: sessionbridge.ReasonLogout}); err != nil {
		t.Fatal(err)
	}
	if got, want := listIDs(t, h.st, u), sorted(s2.ID, s3.ID); !slices.Equal(got, want) {
		t.Fatalf("after Delete: ListUser = %v, want %v", got, want)
	}

	r := rotated(t, s2)
	rdel, rcre := rotatedEvents(s2, r)
	if err := h.st.Rotate(ctx, s2.ID, r, rdel, rcre); err != nil {
		t.Fatal(err)
	}
	if got, want := listIDs(t, h.st, u), sorted(r.ID, s3.ID); !slices.Equal(got, want) {
		t.Fatalf("after Rotate: ListUser = %v, want %v", got, want)
	}

	claimed, err := h.st.ClaimExpired(ctx, now.Add(20*time.Minute), 100, sessionbridge.Event{Type: sessionbridge.EventExpired, Source: sessionbridge.SourceSystem})
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed) != 1 || claimed[0].ID != s3.ID {
		t.Fatalf("ClaimExpired claimed %d sessions, want only %s", len(claimed), s3.ID)
	}
	if got := listIDs(t, h.st, u); !slices.Equal(got, []string{r.ID}) {
		t.Fatalf("after ClaimExpired: ListUser = %v, want [%s]", got, r.ID)
	}
	if got := listIDs(t, h.st, v); !slices.Equal(got, []string{other.ID}) {
		t.Fatalf("other user's index changed: %v", got)
	}
}

// rotated returns s under a new ID and secret, one version on.
func rotated(t *testing.T, s *sessionbridge.Session) *sessionbridge.Session {
	t.Helper()
	r := s.Clone()
	r.ID = newID(t, s.UserID)
	_, r.SecretHash, _ = sessionbridge.NewSecret()
	r.Version = s.Version + 1
	return r
}

func rotatedEvents(old, r *sessionbridge.Session) (deleted, created sessionbridge.Event) {
	now := time.Now()
	deleted = sessionbridge.Event{
		Type: sessionbridge.EventDeleted, SessionID: old.ID, UserID: old.UserID, Source: sessionbridge.SourceHTTP,
		Timestamp: now, NodeID: "node-a", Version: old.Version, Reason: sessionbridge.ReasonRotated,
	}
	created = sessionbridge.Event{
		Type: sessionbridge.EventCreated, SessionID: r.ID, UserID: r.UserID, Source: sessionbridge.SourceHTTP,
		Timestamp: now, NodeID: "node-a", Version: r.Version, ExpiresAt: r.Deadline(),
	}
	return deleted, created
}

func testRotate(t *testing.T, h *harness) {
	ctx := t.Context()
	rec := watch(t, h.bus)
	user := newUser(t)
	s, _ := makeSession(t, user, time.Now())
	x, _ := makeSession(t, user, time.Now())
	mustCreate(t, h.st, s)
	mustCreate(t, h.st, x)
	r := rotated(t, s)
	del, cre := rotatedEvents(s, r)
	if err := h.st.Rotate(ctx, s.ID, r, del, cre); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	wantNotFound(t, h.st, s.ID)
	checkSession(t, mustGet(t, h.st, r.ID), r)
	if err := h.st.Rotate(ctx, s.ID, rotated(t, s), del, cre); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Fatalf("second Rotate of the old ID = %v, want ErrNotFound", err)
	}
	// Rotating onto a taken ID changes nothing.
	clash := rotated(t, r)
	clash.ID = x.ID
	if err := h.st.Rotate(ctx, r.ID, clash, del, cre); !errors.Is(err, sessionbridge.ErrExists) {
		t.Fatalf("Rotate onto a taken ID = %v, want ErrExists", err)
	}
	checkSession(t, mustGet(t, h.st, r.ID), r)
	checkSession(t, mustGet(t, h.st, x.ID), x)
	// A rotation cannot hand the session to another user.
	other := rotated(t, r)
	other.UserID = newUser(t)
	other.ID = newID(t, other.UserID)
	if err := h.st.Rotate(ctx, r.ID, other, del, cre); err == nil {
		t.Fatal("Rotate to another user succeeded, want an error")
	}
	checkSession(t, mustGet(t, h.st, r.ID), r)
	wantNotFound(t, h.st, other.ID)

	evs := sentinel(t, h.bus, rec)
	if d := ofType(evs, sessionbridge.EventDeleted); len(d) != 1 {
		t.Errorf("deleted events: %s; want one for %s", describe(d), s.ID)
	} else {
		checkEvent(t, d[0], del)
	}
	if c := ofType(evs, sessionbridge.EventCreated); len(c) != 3 {
		t.Errorf("created events: %s; want %s, %s, then %s", describe(c), s.ID, x.ID, r.ID)
	} else {
		checkEvent(t, c[2], cre)
	}

	// Through the Manager: the old token dies, the new one works, data stays.
	m := h.manager(nil)
	ms, oldToken, err := m.Create(ctx, sessionbridge.NewSession{UserID: user, Data: json.RawMessage(`{"cart":[1,2]}`)}, sessionbridge.Change{})
	if err != nil {
		t.Fatal(err)
	}
	next, newToken, err := m.Rotate(ctx, ms.ID, sessionbridge.Change{Source: sessionbridge.SourceHTTP})
	if err != nil {
		t.Fatalf("Manager.Rotate: %v", err)
	}
	if next.ID == ms.ID || newToken == oldToken {
		t.Fatal("Manager.Rotate kept the ID or token")
	}
	if _, err := m.Authenticate(ctx, oldToken); !errors.Is(err, sessionbridge.ErrInvalidToken) {
		t.Fatalf("old token after rotation = %v, want ErrInvalidToken", err)
	}
	got, err := m.Authenticate(ctx, newToken)
	if err != nil {
		t.Fatalf("new token after rotation: %v", err)
	}
	if got.ID != next.ID || !sameJSON(got.Data, ms.Data) || !sameTime(got.CreatedAt, ms.CreatedAt) ||
		!sameTime(got.AbsoluteExpiresAt, ms.AbsoluteExpiresAt) {
		t.Fatalf("rotated session %+v does not keep %+v", got, ms)
	}
}

func testClaimExpired(t *testing.T, h *harness) {
	ctx := t.Context()
	rec := watch(t, h.bus)
	user := newUser(t)
	now := time.Now()
	base := now.Add(time.Hour)
	claimAt := base.Add(time.Second)
	expired := map[string]*sessionbridge.Session{}
	var live []*sessionbridge.Session
	for i := range 40 {
		s, _ := makeSession(t, user, now)
		s.ExpiresAt = base.Add(time.Duration(i) * time.Millisecond)
		s.AbsoluteExpiresAt = base.Add(time.Hour)
		expired[s.ID] = s
	}
	// The absolute deadline counts even when the idle one is far.
	abs, _ := makeSession(t, user, now)
	abs.ExpiresAt, abs.AbsoluteExpiresAt = base.Add(30*time.Minute), base.Add(10*time.Millisecond)
	expired[abs.ID] = abs
	// A deadline exactly at now is expired.
	edge, _ := makeSession(t, user, now)
	edge.ExpiresAt = claimAt
	expired[edge.ID] = edge
	for range 5 {
		s, _ := makeSession(t, user, now)
		s.ExpiresAt = claimAt.Add(time.Millisecond * 5)
		live = append(live, s)
	}
	for _, s := range expired {
		mustCreate(t, h.st, s)
	}
	for _, s := range live {
		mustCreate(t, h.st, s)
	}

	tmpl := sessionbridge.Event{Type: sessionbridge.EventExpired, Source: sessionbridge.SourceSystem, NodeID: "node-x", Timestamp: claimAt}
	if got, err := h.st.ClaimExpired(ctx, now, 100, tmpl); err != nil || len(got) != 0 {
		t.Fatalf("ClaimExpired before any deadline = %d sessions, %v; want none", len(got), err)
	}

	const claimers, limit = 8, 3
	var mu sync.Mutex
	claims := map[string]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range claimers {
		wg.Go(func() {
			<-start
			for {
				got, err := h.st.ClaimExpired(ctx, claimAt, limit, tmpl)
				if err != nil {
					t.Errorf("ClaimExpired: %v", err)
					return
				}
				if len(got) > limit {
					t.Errorf("ClaimExpired returned %d sessions, limit %d", len(got), limit)
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, s := range got {
					claims[s.ID]++
					if want, ok := expired[s.ID]; ok && s.UserID != want.UserID {
						t.Errorf("claimed session %s has user %q, want %q", s.ID, s.UserID, want.UserID)
					}
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	for id := range expired {
		if claims[id] != 1 {
			t.Errorf("expired session %s claimed %d times, want 1", id, claims[id])
		}
		wantNotFound(t, h.st, id)
	}
	if len(claims) != len(expired) {
		t.Errorf("claimed %d sessions, want %d", len(claims), len(expired))
	}
	for _, s := range live {
		checkSession(t, mustGet(t, h.st, s.ID), s)
	}
	if got := listIDs(t, h.st, user); len(got) != len(live) {
		t.Errorf("ListUser after claims lists %d sessions, want the %d live ones", len(got), len(live))
	}

	evs := ofType(sentinel(t, h.bus, rec), sessionbridge.EventExpired)
	seen := map[string]int{}
	for _, ev := range evs {
		seen[ev.SessionID]++
		s, ok := expired[ev.SessionID]
		if !ok {
			t.Errorf("expired event for %s, which was not expired", ev.SessionID)
			continue
		}
		want := tmpl
		want.SessionID, want.UserID, want.Version = s.ID, s.UserID, s.Version
		checkEvent(t, ev, want)
	}
	for id := range expired {
		if seen[id] != 1 {
			t.Errorf("session %s: %d expired events, want 1", id, seen[id])
		}
	}
}

func testTouchMovesExpiry(t *testing.T, h *harness) {
	ctx := t.Context()
	rec := watch(t, h.bus)
	now := time.Now()
	base := now.Add(time.Hour)
	user := newUser(t)
	s, _ := makeSession(t, user, now)
	s.ExpiresAt, s.AbsoluteExpiresAt = base, base.Add(2*time.Hour)
	// Neighbours in the expiry index: the touched session must move past mid.
	mid, _ := makeSession(t, user, now)
	mid.ExpiresAt = base.Add(30 * time.Minute)
	late, _ := makeSession(t, user, now)
	late.ExpiresAt = base.Add(2 * time.Hour)
	for _, x := range []*sessionbridge.Session{s, mid, late} {
		mustCreate(t, h.st, x)
	}

	seen := base.Add(-time.Minute)
	ev := sessionbridge.Event{
		Type: sessionbridge.EventUpdated, SessionID: s.ID, UserID: s.UserID, Source: sessionbridge.SourceHTTP,
		Timestamp: seen, NodeID: "node-a", Version: 1, ExpiresAt: base.Add(time.Hour),
	}
	// Not written: the stored LastSeenAt is not before ifSeenBefore.
	if wrote, err := h.st.Touch(ctx, s.ID, seen, base.Add(time.Hour), now, ev); err != nil || wrote {
		t.Fatalf("Touch with ifSeenBefore = LastSeenAt: wrote %v, err %v; want false, nil", wrote, err)
	}
	checkSession(t, mustGet(t, h.st, s.ID), s)
	if wrote, err := h.st.Touch(ctx, s.ID, seen, base.Add(time.Hour), seen, ev); err != nil || !wrote {
		t.Fatalf("Touch: wrote %v, err %v; want true, nil", wrote, err)
	}
	want := s.Clone()
	want.LastSeenAt, want.ExpiresAt = seen, base.Add(time.Hour)
	checkSession(t, mustGet(t, h.st, s.ID), want)

	tmpl := sessionbridge.Event{Type: sessionbridge.EventExpired, Source: sessionbridge.SourceSystem, NodeID: "node-a", Timestamp: base}
	claim := func(at time.Time, want ...string) {
		t.Helper()
		got, err := h.st.ClaimExpired(ctx, at, 10, tmpl)
		if err != nil {
			t.Fatalf("ClaimExpired(+%v): %v", at.Sub(base), err)
		}
		var ids []string
		for _, x := range got {
			ids = append(ids, x.ID)
		}
		if !slices.Equal(sorted(ids...), sorted(want...)) {
			t.Fatalf("ClaimExpired(base+%v) claimed %v, want %v", at.Sub(base), ids, want)
		}
	}
	claim(base.Add(time.Minute))            // past the old deadline: the touch moved it
	claim(base.Add(40*time.Minute), mid.ID) // the touched one is now after mid
	claim(base.Add(time.Hour), s.ID)        // and expires at its new deadline
	claim(base.Add(90 * time.Minute))       // late is still live
	checkSession(t, mustGet(t, h.st, late.ID), late)

	evs := sentinel(t, h.bus, rec)
	if u := ofType(evs, sessionbridge.EventUpdated); len(u) != 1 {
		t.Fatalf("updated events %s, want the one touch that wrote", describe(u))
	} else {
		checkEvent(t, u[0], ev)
	}
}

func testEvents(t *testing.T, h *harness) {
	ctx := t.Context()
	rec := watch(t, h.bus)
	user := newUser(t)
	now := time.Now()
	s, _ := makeSession(t, user, now)
	var want []sessionbridge.Event
	cre := created(s)
	cre.ConnectionID = "conn-9"
	if err := h.st.Create(ctx, s.Clone(), cre); err != nil {
		t.Fatal(err)
	}
	want = append(want, cre)
	if err := h.st.Create(ctx, s.Clone(), created(s)); !errors.Is(err, sessionbridge.ErrExists) {
		t.Fatalf("duplicate Create = %v", err)
	}

	next := s.Clone()
	next.Data = json.RawMessage(`{"theme":"light","n":42}`)
	next.Version = 2
	upd := sessionbridge.Event{
		Type: sessionbridge.EventUpdated, SessionID: s.ID, UserID: user, Source: sessionbridge.SourceWebSocket,
		ConnectionID: "conn-9", NodeID: "node-b", Timestamp: now, Version: 2, ExpiresAt: next.Deadline(),
		Updates: json.RawMessage(`{"theme":"light","nested":null,"s":null}`),
	}
	if err := h.st.Update(ctx, next, 1, upd); err != nil {
		t.Fatal(err)
	}
	want = append(want, upd)
	if err := h.st.Update(ctx, next, 1, upd); !errors.Is(err, sessionbridge.ErrVersionConflict) {
		t.Fatalf("conflicting Update = %v", err)
	}

	seen := now.Add(time.Minute)
	touch := sessionbridge.Event{
		Type: sessionbridge.EventUpdated, SessionID: s.ID, UserID: user, Source: sessionbridge.SourceHTTP,
		NodeID: "node-a", Timestamp: seen, Version: 2, ExpiresAt: seen.Add(30 * time.Minute),
	}
	if wrote, err := h.st.Touch(ctx, s.ID, seen, seen.Add(30*time.Minute), seen, touch); err != nil || !wrote {
		t.Fatalf("Touch = %v, %v", wrote, err)
	}
	want = append(want, touch)
	if wrote, err := h.st.Touch(ctx, s.ID, seen, seen.Add(30*time.Minute), seen, touch); err != nil || wrote {
		t.Fatalf("throttled Touch = %v, %v", wrote, err)
	}

	del := sessionbridge.Event{
		Type: sessionbridge.EventDeleted, SessionID: s.ID, UserID: user, Source: sessionbridge.SourceHTTP,
		NodeID: "node-a", Timestamp: now, Reason: sessionbridge.ReasonLogout,
	}
	gone, err := h.st.Delete(ctx, s.ID, del)
	if err != nil {
		t.Fatal(err)
	}
	if gone == nil || gone.ID != s.ID || gone.UserID != user {
		t.Fatalf("Delete returned %+v, want the deleted session", gone)
	}
	delivered := del
	delivered.Version = 2 // filled in by the store: the version the session had
	want = append(want, delivered)
	// A second delete finds nothing and publishes nothing.
	if _, err := h.st.Delete(ctx, s.ID, del); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Fatalf("second Delete = %v", err)
	}

	s2, _ := makeSession(t, user, now)
	mustCreate(t, h.st, s2)
	want = append(want, created(s2))
	r := rotated(t, s2)
	rdel, rcre := rotatedEvents(s2, r)
	if err := h.st.Rotate(ctx, s2.ID, r, rdel, rcre); err != nil {
		t.Fatal(err)
	}
	want = append(want, rdel, rcre)

	s4, _ := makeSession(t, user, now)
	s4.ExpiresAt = now.Add(20 * time.Minute) // the only one expired at its deadline
	mustCreate(t, h.st, s4)
	want = append(want, created(s4))
	tmpl := sessionbridge.Event{Type: sessionbridge.EventExpired, Source: sessionbridge.SourceSystem, NodeID: "node-c", Timestamp: s4.Deadline()}
	if got, err := h.st.ClaimExpired(ctx, s4.Deadline(), 10, tmpl); err != nil || len(got) != 1 || got[0].ID != s4.ID {
		t.Fatalf("ClaimExpired = %d, %v; want %s", len(got), err, s4.ID)
	} else {
		exp := tmpl
		exp.SessionID, exp.UserID, exp.Version = got[0].ID, got[0].UserID, got[0].Version
		want = append(want, exp)
	}

	msg := sessionbridge.Event{
		Type: sessionbridge.EventMessage, UserID: user, Source: sessionbridge.SourceAPI, NodeID: "node-a",
		Timestamp: now, Data: json.RawMessage(`{"hello":"world"}`),
	}
	if err := h.bus.Publish(ctx, msg); err != nil {
		t.Fatalf("Publish message: %v", err)
	}
	want = append(want, msg)

	got := sentinel(t, h.bus, rec)
	for _, typ := range sessionbridge.EventTypes {
		g, w := ofType(got, typ), ofType(want, typ)
		if len(g) != len(w) {
			t.Errorf("%s events: got %s, want %s", typ, describe(g), describe(w))
			continue
		}
		for i := range g {
			checkEvent(t, g[i], w[i])
		}
	}
}

func testPing(t *testing.T, h *harness) {
	ctx := t.Context()
	if err := h.st.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testTokens(t *testing.T, h *harness) {
	ctx := t.Context()
	m := h.manager(nil)
	s, token, err := m.Create(ctx, sessionbridge.NewSession{UserID: newUser(t)}, sessionbridge.Change{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Authenticate(ctx, token)
	if err != nil || got.ID != s.ID || got.SecretHash != s.SecretHash {
		t.Fatalf("Authenticate(issued token) = %+v, %v", got, err)
	}
	otherSecret, _, err := sessionbridge.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	unknown, _ := makeSession(t, s.UserID, time.Now())
	bad := map[string]string{
		"right id, wrong secret": sessionbridge.FormatToken(s.ID, otherSecret),
		"unknown id":             sessionbridge.FormatToken(unknown.ID, otherSecret),
		"malformed":              token[:len(token)-1],
		"empty":                  "",
	}
	for name, tok := range bad {
		if _, err := m.Authenticate(ctx, tok); !errors.Is(err, sessionbridge.ErrInvalidToken) {
			t.Errorf("Authenticate(%s) = %v, want ErrInvalidToken", name, err)
		}
	}
	if _, err := m.Delete(ctx, s.ID, sessionbridge.ReasonLogout, sessionbridge.Change{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Authenticate(ctx, token); !errors.Is(err, sessionbridge.ErrInvalidToken) {
		t.Fatalf("Authenticate after logout = %v, want ErrInvalidToken", err)
	}
}
