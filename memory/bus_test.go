package memory_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/memory"
)

// recorder is an EventHandler that records what it gets and lets a test block
// it to play a slow subscriber.
type recorder struct {
	mu     sync.Mutex
	events []sessionbridge.Event
	gaps   int
	// log interleaves events and gaps: "gap" or the event's SessionID.
	log     []string
	changed chan struct{}
	block   chan struct{} // if non-nil, HandleEvent waits until release
	once    sync.Once
}

func (r *recorder) release() {
	if r.block != nil {
		r.once.Do(func() { close(r.block) })
	}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) HandleEvent(ev sessionbridge.Event) {
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.log = append(r.log, ev.SessionID)
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) HandleGap() {
	r.mu.Lock()
	r.gaps++
	r.log = append(r.log, "gap")
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) signal() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// waitFor polls cond under r's lock each time r changes, failing after 5 s.
func (r *recorder) waitFor(t *testing.T, what string, cond func(*recorder) bool) {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok := cond(r)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-deadline.C:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("timed out waiting for %s; gaps=%d events=%d", what, r.gaps, len(r.events))
		}
	}
}

// subscribe runs bus.Subscribe for h in a goroutine until the test ends, and
// waits for the initial gap that says the subscription is live.
func subscribe(t *testing.T, bus *memory.Bus, r *recorder) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bus.Subscribe(ctx, r) }()
	r.waitFor(t, "initial gap", func(r *recorder) bool { return r.gaps >= 1 })
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			r.release()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func msg(i int) sessionbridge.Event {
	return sessionbridge.Event{Type: sessionbridge.EventMessage, SessionID: fmt.Sprint(i), Source: sessionbridge.SourceAPI}
}

func TestBusDeliversInPublishOrderToEverySubscriber(t *testing.T) {
	bus := memory.NewBus()
	ctx := context.Background()
	a, b := newRecorder(), newRecorder()
	subscribe(t, bus, a)
	subscribe(t, bus, b)
	if got := bus.Subscribers(); got != 2 {
		t.Fatalf("Subscribers() = %d, want 2", got)
	}
	const n = 1000
	for i := range n {
		if err := bus.Publish(ctx, msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []*recorder{a, b} {
		r.waitFor(t, "all events", func(r *recorder) bool { return len(r.events) == n })
		r.mu.Lock()
		for i, ev := range r.events {
			if ev.SessionID != fmt.Sprint(i) {
				t.Fatalf("event %d has SessionID %s: out of order", i, ev.SessionID)
			}
		}
		if r.gaps != 1 {
			t.Errorf("gaps = %d, want exactly the initial one", r.gaps)
		}
		r.mu.Unlock()
	}
}

func TestBusSubscribeReturnsContextErrorAndUnregisters(t *testing.T) {
	bus := memory.NewBus()
	r := newRecorder()
	stop := subscribe(t, bus, r)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe returned %v, want context.Canceled", err)
	}
	if got := bus.Subscribers(); got != 0 {
		t.Fatalf("Subscribers() after stop = %d, want 0", got)
	}
	// Publishing to nobody is fine.
	if err := bus.Publish(context.Background(), msg(1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := bus.Subscribe(ctx, r); !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe with done ctx = %v, want context.Canceled", err)
	}
}

func TestBusRejectsUnknownEventType(t *testing.T) {
	var bus memory.Bus // the zero value works
	if err := bus.Publish(context.Background(), sessionbridge.Event{Type: "bogus"}); err == nil {
		t.Fatal("Publish accepted an event without a channel")
	}
}

func TestBusSlowSubscriberOverflowBecomesGap(t *testing.T) {
	bus := &memory.Bus{QueueSize: 8}
	ctx := context.Background()
	slow := newRecorder()
	slow.block = make(chan struct{})
	subscribe(t, bus, slow)

	// The slow handler blocks in the first event it gets; everything after
	// overflows its queue of 8. Publish must not wait for the handler (the test
	// would hang if it did).
	const n = 100
	for i := range n {
		if err := bus.Publish(ctx, msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	slow.release()
	slow.waitFor(t, "last event after the gap", func(r *recorder) bool {
		return len(r.log) > 0 && r.log[len(r.log)-1] == fmt.Sprint(n-1)
	})
	slow.mu.Lock()
	defer slow.mu.Unlock()
	if slow.gaps < 2 {
		t.Fatalf("slow subscriber got %d gaps, want the initial one and at least one for the overflow", slow.gaps)
	}
	if len(slow.events) >= n {
		t.Fatalf("slow subscriber got all %d events; the queue bound did not apply", len(slow.events))
	}
	// Events after the last gap are in order and end with the newest one, so the
	// handler re-validated and then saw only newer events.
	last := 0
	for i, s := range slow.log {
		if s == "gap" {
			last = i
		}
	}
	prev := -1
	for _, s := range slow.log[last+1:] {
		var i int
		fmt.Sscan(s, &i)
		if i <= prev {
			t.Fatalf("events after gap out of order: %v", slow.log[last+1:])
		}
		prev = i
	}
	if len(slow.log[last+1:]) > 8 {
		t.Fatalf("%d events after the gap, more than the queue holds", len(slow.log[last+1:]))
	}
}

// Subscribing while events are being published must not deadlock the new
// subscriber: its first signal and a publisher's race for the same slot. The
// window is narrow, so this catches a regression only now and then.
func TestBusSubscribeDuringPublishing(t *testing.T) {
	bus := &memory.Bus{QueueSize: 16}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				bus.Publish(ctx, msg(1))
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()
	for range 30 {
		r := newRecorder()
		stop := subscribe(t, bus, r)
		r.waitFor(t, "an event", func(r *recorder) bool { return len(r.events) > 0 })
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
}
