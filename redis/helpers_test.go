package redis

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/metrics"
)

var bg = context.Background()

// countingMetrics records what a Backend reports.
type countingMetrics struct {
	mu         sync.Mutex
	published  map[string]int
	errors     map[string]int
	reconnects int
}

func newCountingMetrics() *countingMetrics {
	return &countingMetrics{published: map[string]int{}, errors: map[string]int{}}
}

func (m *countingMetrics) EventPublished(t string) {
	m.mu.Lock()
	m.published[t]++
	m.mu.Unlock()
}
func (m *countingMetrics) RedisError(op string) {
	m.mu.Lock()
	m.errors[op]++
	m.mu.Unlock()
}
func (m *countingMetrics) Reconnect() {
	m.mu.Lock()
	m.reconnects++
	m.mu.Unlock()
}

func (m *countingMetrics) get(f func(m *countingMetrics) int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return f(m)
}

// recorder is an EventHandler that keeps what it got, and a
// sessionbridge.FollowHandler that counts how often each topic was reported
// followed.
type recorder struct {
	mu       sync.Mutex
	events   []sessionbridge.Event
	gaps     int
	followed map[sessionbridge.Topic]int
	block    chan struct{} // if not nil, HandleEvent waits on it
}

var _ sessionbridge.FollowHandler = (*recorder)(nil)

func (r *recorder) HandleEvent(ev sessionbridge.Event) {
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

func (r *recorder) HandleGap() {
	r.mu.Lock()
	r.gaps++
	r.mu.Unlock()
}

func (r *recorder) HandleFollowed(topics []sessionbridge.Topic) {
	r.mu.Lock()
	if r.followed == nil {
		r.followed = map[sessionbridge.Topic]int{}
	}
	for _, tp := range topics {
		r.followed[tp]++
	}
	r.mu.Unlock()
}

// followedCount returns how many times topic was reported followed.
func (r *recorder) followedCount(tp sessionbridge.Topic) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.followed[tp]
}

// allFollowed reports whether every topic was reported followed at least
// min times.
func (r *recorder) allFollowed(min int, topics []sessionbridge.Topic) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, tp := range topics {
		if r.followed[tp] < min {
			return false
		}
	}
	return true
}

// followCounts returns how many times each topic was reported followed.
func (r *recorder) followCounts(topics []sessionbridge.Topic) map[sessionbridge.Topic]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[sessionbridge.Topic]int, len(topics))
	for _, tp := range topics {
		out[tp] = r.followed[tp]
	}
	return out
}

// refollowed reports whether every topic was reported followed again since
// before was taken by followCounts.
func (r *recorder) refollowed(before map[sessionbridge.Topic]int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for tp, n := range before {
		if r.followed[tp] <= n {
			return false
		}
	}
	return true
}

func (r *recorder) gapCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gaps
}

func (r *recorder) find(f func(sessionbridge.Event) bool) (sessionbridge.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.events {
		if f(ev) {
			return ev, true
		}
	}
	return sessionbridge.Event{}, false
}

func (r *recorder) count(f func(sessionbridge.Event) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.events {
		if f(ev) {
			n++
		}
	}
	return n
}

// subscribe runs bus.Subscribe(h) until the test ends and waits for the first
// gap, which says the subscription is in place.
func subscribe(t testing.TB, b *Backend, h *recorder) {
	t.Helper()
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { done <- b.Bus().Subscribe(ctx, h) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Subscribe did not return after cancel")
		}
	})
	eventually(t, 10*time.Second, "the first HandleGap", func() bool { return h.gapCount() >= 1 })
}

// follow has b's bus follow topics and waits until rec, subscribed to that
// bus, was told that they are: from then on their events reach it.
func follow(t testing.TB, b *Backend, rec *recorder, topics ...sessionbridge.Topic) {
	t.Helper()
	for _, tp := range topics {
		b.Bus().Follow(tp)
	}
	eventually(t, 20*time.Second, "the bus to follow the topics", func() bool { return rec.allFollowed(1, topics) })
}

// followSessions is follow for the topics of session IDs.
func followSessions(t testing.TB, b *Backend, rec *recorder, ids ...string) {
	t.Helper()
	topics := make([]sessionbridge.Topic, len(ids))
	for i, id := range ids {
		topics[i] = sessionbridge.SessionTopic(id)
	}
	follow(t, b, rec, topics...)
}

// sessionIDIn returns a fresh random session ID of shard.
func sessionIDIn(t testing.TB, shard string) string {
	t.Helper()
	var r [12]byte
	_, _ = rand.Read(r[:])
	id := shard + base64.RawURLEncoding.EncodeToString(r[:])
	if !sessionbridge.ValidID(id) {
		t.Fatalf("made an invalid session ID %q", id)
	}
	return id
}

// newSession makes a session for user with a deadline an hour away.
func newSession(t testing.TB, user string) *sessionbridge.Session {
	t.Helper()
	id, err := sessionbridge.NewSessionID(user)
	if err != nil {
		t.Fatal(err)
	}
	_, hash, err := sessionbridge.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	return &sessionbridge.Session{
		ID: id, UserID: user, SecretHash: hash, Data: []byte(`{"n":1}`),
		CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(time.Hour), AbsoluteExpiresAt: now.Add(2 * time.Hour), Version: 1,
	}
}

// The metrics package's collector plugs in as it is.
var _ Metrics = (*metrics.Metrics)(nil)

// nodeManager returns the Manager of a node on b.
func nodeManager(t testing.TB, b *Backend) *sessionbridge.Manager {
	t.Helper()
	m, err := sessionbridge.NewManager(b.Node())
	if err != nil {
		t.Fatal(err)
	}
	return m
}
