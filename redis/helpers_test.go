package redis

import (
	"context"
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

// recorder is an EventHandler that keeps what it got.
type recorder struct {
	mu     sync.Mutex
	events []sessionbridge.Event
	gaps   int
	block  chan struct{} // if not nil, HandleEvent waits on it
}

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
func subscribe(t *testing.T, b *Backend, h *recorder) {
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
