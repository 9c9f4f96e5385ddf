package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
)

// eventWait bounds every wait for a published event. Generous, because the
// suite must pass against networked buses on a loaded machine.
const eventWait = 5 * time.Second

// timePrecision is the least precision a store must keep for times.
const timePrecision = time.Millisecond

// recorder is an EventHandler that records every event and gap.
type recorder struct {
	mu       sync.Mutex
	events   []sessionbridge.Event
	gaps     int
	followed map[sessionbridge.Topic]bool
	changed  chan struct{}
}

func (r *recorder) HandleEvent(ev sessionbridge.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) HandleGap() {
	r.mu.Lock()
	r.gaps++
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) signal() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// wait polls cond each time something arrives, failing the test after
// eventWait. It returns a copy of the events seen so far.
func (r *recorder) wait(t *testing.T, what string, cond func(evs []sessionbridge.Event, gaps int) bool) []sessionbridge.Event {
	t.Helper()
	timer := time.NewTimer(eventWait)
	defer timer.Stop()
	for {
		r.mu.Lock()
		ok := cond(r.events, r.gaps)
		evs := append([]sessionbridge.Event(nil), r.events...)
		r.mu.Unlock()
		if ok {
			return evs
		}
		select {
		case <-r.changed:
		case <-timer.C:
			t.Fatalf("no %s within %v; got %d events: %s", what, eventWait, len(evs), describe(evs))
		}
	}
}

// waitUntil waits until the recorder holds an event that match accepts and
// returns all events recorded so far.
func (r *recorder) waitUntil(t *testing.T, what string, match func(sessionbridge.Event) bool) []sessionbridge.Event {
	t.Helper()
	return r.wait(t, what, func(evs []sessionbridge.Event, _ int) bool {
		for _, ev := range evs {
			if match(ev) {
				return true
			}
		}
		return false
	})
}

func describe(evs []sessionbridge.Event) string {
	var b bytes.Buffer
	for i, ev := range evs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(ev.Type) + ":" + ev.SessionID)
		if ev.Reason != "" {
			b.WriteString("(" + ev.Reason + ")")
		}
	}
	return b.String()
}

// watch subscribes a recorder to bus until the test ends and returns once the
// subscription is live (its first HandleGap arrived).
func watch(t *testing.T, bus sessionbridge.Bus) *recorder {
	t.Helper()
	if bus == nil {
		t.Fatal("storetest: newStore returned a nil Bus; the suite needs the bus the store publishes on")
	}
	r := &recorder{changed: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bus.Subscribe(ctx, r) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Subscribe returned %v after cancel, want context.Canceled", err)
			}
		case <-time.After(eventWait):
			t.Errorf("Subscribe did not return within %v of its context's cancel", eventWait)
		}
	})
	r.wait(t, "initial HandleGap from Subscribe", func(_ []sessionbridge.Event, gaps int) bool { return gaps >= 1 })
	if fb, ok := bus.(*followingBus); ok {
		fb.f.mu.Lock()
		fb.f.rec = r
		fb.f.mu.Unlock()
		t.Cleanup(func() {
			fb.f.mu.Lock()
			fb.f.rec = nil
			fb.f.mu.Unlock()
		})
		r.awaitFollowed(t, fb.f.all())
	}
	return r
}

const sentinelPrefix = "storetest-sentinel-"

// sentinel publishes, through the bus, one marker event on every channel and
// waits until all of them arrive. Buses keep publish order per channel, so
// every event published before the call has been delivered by then. It
// returns the recorded events without the markers.
func sentinel(t *testing.T, bus sessionbridge.Bus, r *recorder) []sessionbridge.Event {
	t.Helper()
	marker := sentinelPrefix + randomHex(t)
	if fb, ok := bus.(*followingBus); ok {
		return routedSentinel(t, fb, r, marker)
	}
	for _, typ := range sessionbridge.EventTypes {
		err := bus.Publish(context.Background(), sessionbridge.Event{
			Type: typ, SessionID: marker, UserID: marker, Source: sessionbridge.SourceSystem,
			Timestamp: time.Now(), NodeID: "storetest",
		})
		if err != nil {
			t.Fatalf("Publish %s sentinel: %v", typ, err)
		}
	}
	evs := r.wait(t, "sentinel on every channel", func(evs []sessionbridge.Event, _ int) bool {
		return countWhere(evs, func(ev sessionbridge.Event) bool { return ev.SessionID == marker }) == len(sessionbridge.EventTypes)
	})
	out := evs[:0]
	for _, ev := range evs {
		if !strings.HasPrefix(ev.SessionID, sentinelPrefix) {
			out = append(out, ev)
		}
	}
	return out
}

// routedSentinel is sentinel on a routing bus, which keeps publish order per
// session and per user: one marker message on every followed topic.
func routedSentinel(t *testing.T, fb *followingBus, r *recorder, marker string) []sessionbridge.Event {
	t.Helper()
	topics := fb.f.all()
	r.awaitFollowed(t, topics)
	for _, tp := range topics {
		ev := sessionbridge.Event{
			Type: sessionbridge.EventMessage, Source: sessionbridge.SourceSystem,
			Timestamp: time.Now(), NodeID: marker,
		}
		if tp.Kind == sessionbridge.TopicSession {
			ev.SessionID = tp.ID
		} else {
			ev.UserID = tp.ID
		}
		if err := fb.Publish(context.Background(), ev); err != nil {
			t.Fatalf("Publish sentinel: %v", err)
		}
	}
	evs := r.wait(t, "sentinel on every followed topic", func(evs []sessionbridge.Event, _ int) bool {
		return countWhere(evs, func(ev sessionbridge.Event) bool { return ev.NodeID == marker }) == len(topics)
	})
	out := evs[:0]
	for _, ev := range evs {
		if ev.NodeID != marker {
			out = append(out, ev)
		}
	}
	return out
}

// ofType returns the events of type typ, in order.
func ofType(evs []sessionbridge.Event, typ sessionbridge.EventType) []sessionbridge.Event {
	var out []sessionbridge.Event
	for _, ev := range evs {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

func countWhere(evs []sessionbridge.Event, f func(sessionbridge.Event) bool) int {
	n := 0
	for _, ev := range evs {
		if f(ev) {
			n++
		}
	}
	return n
}

func sameTime(a, b time.Time) bool {
	d := a.Sub(b)
	return d > -timePrecision && d < timePrecision
}

// sameJSON reports whether a and b are the same JSON value.
func sameJSON(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// checkSession fails the test unless got equals want in every field, times to
// timePrecision and Data as JSON.
func checkSession(t *testing.T, got, want *sessionbridge.Session) {
	t.Helper()
	if got == nil {
		t.Fatalf("session %s: got nil", want.ID)
	}
	if got.ID != want.ID || got.UserID != want.UserID || got.SecretHash != want.SecretHash ||
		got.Device != want.Device || got.Version != want.Version {
		t.Errorf("session %s:\n got  %+v\n want %+v", want.ID, got, want)
	}
	if !sameJSON(got.Data, want.Data) {
		t.Errorf("session %s: Data = %s, want %s", want.ID, got.Data, want.Data)
	}
	if !sameScopes(got.Scopes, want.Scopes) {
		t.Errorf("session %s: Scopes = %#v, want %#v", want.ID, got.Scopes, want.Scopes)
	}
	for _, tm := range []struct {
		name      string
		got, want time.Time
	}{
		{"CreatedAt", got.CreatedAt, want.CreatedAt},
		{"LastSeenAt", got.LastSeenAt, want.LastSeenAt},
		{"ExpiresAt", got.ExpiresAt, want.ExpiresAt},
		{"AbsoluteExpiresAt", got.AbsoluteExpiresAt, want.AbsoluteExpiresAt},
	} {
		if !sameTime(tm.got, tm.want) {
			t.Errorf("session %s: %s = %v, want %v (within %v)", want.ID, tm.name, tm.got, tm.want, timePrecision)
		}
	}
}

// checkEvent fails the test unless got carries want's type and fields.
func checkEvent(t *testing.T, got, want sessionbridge.Event) {
	t.Helper()
	if got.Type != want.Type || got.SessionID != want.SessionID || got.UserID != want.UserID ||
		got.Source != want.Source || got.NodeID != want.NodeID || got.ConnectionID != want.ConnectionID ||
		got.Version != want.Version || got.Reason != want.Reason ||
		!sameTime(got.Timestamp, want.Timestamp) || !sameTime(got.ExpiresAt, want.ExpiresAt) ||
		!sameJSON(got.Updates, want.Updates) || !sameJSON(got.Data, want.Data) ||
		!sameScopes(got.Scopes, want.Scopes) {
		t.Errorf("event:\n got  %+v\n want %+v", got, want)
	}
}

// sameScopes reports whether a and b are the same scopes, telling "none
// stored" (nil) from "no scope at all" (empty).
func sameScopes(a, b []string) bool {
	return (a == nil) == (b == nil) && slices.Equal(a, b)
}
