package memory

import (
	"context"
	"fmt"
	"sync"

	"github.com/sessionbridge/sessionbridge"
)

// DefaultQueueSize is the number of events a Bus buffers per subscriber when
// its QueueSize is zero.
const DefaultQueueSize = 4096

// Bus is an in-process [sessionbridge.Bus]: Publish hands each event to every
// current subscriber, and each subscriber receives events in publish order on
// the goroutine that called Subscribe.
//
// Publish never waits for a handler. Each subscriber has a bounded queue; when a
// slow handler lets it overflow, the queued events are dropped and the handler
// gets HandleGap instead, so that it re-validates against the store exactly as
// after a reconnect of a networked bus. Memory per subscriber is therefore
// bounded by QueueSize events.
//
// The zero value is ready to use.
type Bus struct {
	// QueueSize bounds each subscriber's queue; zero means DefaultQueueSize.
	// Set it before the first Subscribe.
	QueueSize int

	mu   sync.RWMutex
	subs map[*subscriber]struct{}
}

// NewBus returns an empty bus with the default queue size.
func NewBus() *Bus { return &Bus{} }

type subscriber struct {
	max    int
	mu     sync.Mutex
	queue  []sessionbridge.Event
	gap    bool
	notify chan struct{} // capacity 1: "there is something to deliver"
}

// Publish queues ev for every current subscriber and returns without waiting
// for delivery. It rejects an event whose Type is not one of
// sessionbridge.EventTypes, as a networked bus could not route it.
func (b *Bus) Publish(ctx context.Context, ev sessionbridge.Event) error {
	if !ev.Type.Known() {
		return fmt.Errorf("memory: publish: unknown event type %q", ev.Type)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	for s := range b.subs {
		s.push(ev)
	}
	return nil
}

func (s *subscriber) push(ev sessionbridge.Event) {
	s.mu.Lock()
	if len(s.queue) >= s.max {
		// Dropping the whole queue rather than the newest event keeps the
		// handler from acting on a stale prefix: after HandleGap it reads the
		// store, then sees only events newer than that read.
		clear(s.queue)
		s.queue = s.queue[:0]
		s.gap = true
	}
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// take returns the queued events and whether a gap came before them, leaving
// the queue empty. spare is reused as the next queue to avoid allocations.
func (s *subscriber) take(spare []sessionbridge.Event) ([]sessionbridge.Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	batch, gap := s.queue, s.gap
	s.queue, s.gap = spare[:0], false
	return batch, gap
}

// Subscribe registers h and delivers events to it on the calling goroutine
// until ctx is done; then it unregisters h and returns ctx.Err(). It calls
// h.HandleGap once right after registering (events published after that call
// began are delivered) and again whenever h fell so far behind that events were
// dropped.
func (b *Bus) Subscribe(ctx context.Context, h sessionbridge.EventHandler) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	size := b.QueueSize
	if size <= 0 {
		size = DefaultQueueSize
	}
	// Start with the gap pending and signalled, so that the first round of
	// the loop delivers it. Signal before registering: once registered, a
	// concurrent Publish may fill the one-slot channel first.
	s := &subscriber{max: size, notify: make(chan struct{}, 1), gap: true}
	s.notify <- struct{}{}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = make(map[*subscriber]struct{})
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
	}()

	var spare []sessionbridge.Event
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.notify:
		}
		batch, gap := s.take(spare)
		if gap {
			h.HandleGap()
		}
		for i := range batch {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			h.HandleEvent(batch[i])
		}
		clear(batch) // drop references to event payloads
		spare = batch
	}
}

// Subscribers returns the number of handlers currently subscribed.
func (b *Bus) Subscribers() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.subs)
}

var _ sessionbridge.Bus = (*Bus)(nil)
