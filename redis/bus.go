package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/strictjson"
)

// Reconnect back-off of a subscription.
const (
	minBackoff = 20 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// Bus is a [sessionbridge.Bus] on Redis pub/sub: one channel per event type,
// "<prefix>session:updates|created|deleted|expired|messages" and
// "<prefix>apikey:updated|deleted|expired", carrying the event's JSON (the
// type is the channel's).
//
// Pub/sub is at-most-once: events published while a subscriber is cut off
// are lost to it. So Subscribe calls HandleGap after every (re)subscription,
// the first one included, whenever it drops events for a handler that does
// not keep up, and when a session event cannot be decoded; the handler then
// re-validates what it holds against the store.
type Bus struct {
	b *Backend
}

var _ sessionbridge.Bus = (*Bus)(nil)

// Publish sends ev to every subscriber on every node. Store writes publish
// their own events; Publish is for events that change no session (messages).
func (bus *Bus) Publish(ctx context.Context, ev sessionbridge.Event) error {
	b := bus.b
	ch := b.channel(ev.Type)
	if ch == "" {
		return fmt.Errorf("redis: publish: unknown event type %q", ev.Type)
	}
	payload, err := marshalEvent(ev)
	if err != nil {
		return fmt.Errorf("redis: publish: %w", err)
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	if err := b.client.Do(ctx, b.client.B().Publish().Channel(ch).Message(payload).Build()).Error(); err != nil {
		return b.fail("publish", err)
	}
	b.metrics.EventPublished(string(ev.Type))
	return nil
}

// Subscribe delivers every event to h until ctx is done, then returns
// ctx.Err(); it returns ErrClosed if the Backend is closed first. It holds
// one dedicated connection and re-subscribes with back-off whenever that
// connection drops (Redis restarted, the connection was killed, or Redis cut
// a slow subscriber), calling h.HandleGap after each subscription is
// confirmed. HandleEvent and HandleGap are called from one goroutine, never
// concurrently.
func (bus *Bus) Subscribe(ctx context.Context, h sessionbridge.EventHandler) error {
	b := bus.b
	d := &delivery{
		b:     b,
		h:     h,
		queue: make(chan sessionbridge.Event, b.opts.EventBuffer),
		gap:   make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		<-d.done
	}()
	go d.run(ctx)

	channels := make([]string, len(sessionbridge.EventTypes))
	d.types = make(map[string]sessionbridge.EventType, len(channels))
	for i, t := range sessionbridge.EventTypes {
		channels[i] = b.channel(t)
		d.types[channels[i]] = t
	}
	backoff := minBackoff
	for attempt := 0; ; attempt++ {
		if b.closed.Load() {
			return ErrClosed
		}
		confirmed, err := bus.subscribeOnce(ctx, d, channels, attempt > 0)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if b.closed.Load() {
			return ErrClosed
		}
		if confirmed {
			backoff = minBackoff
		}
		b.log.Warn("redis: event subscription lost; resubscribing", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-b.done:
			t.Stop()
			return ErrClosed
		case <-t.C:
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// subscribeOnce subscribes on a fresh dedicated connection and blocks until it
// drops or ctx is done. confirmed reports whether the subscription was ever
// in place.
func (bus *Bus) subscribeOnce(ctx context.Context, d *delivery, channels []string, again bool) (confirmed bool, err error) {
	b := bus.b
	dc, release := b.client.Dedicate()
	defer func() {
		// Close, not just release: a subscribed connection must not go back
		// to the pool.
		dc.Close()
		release()
	}()
	ready := make(chan struct{})
	var subscribed atomic.Int64
	wait := dc.SetPubSubHooks(rueidis.PubSubHooks{
		OnMessage: d.receive,
		OnSubscription: func(s rueidis.PubSubSubscription) {
			if s.Kind == "subscribe" && subscribed.Add(1) == int64(len(channels)) {
				close(ready)
			}
		},
	})
	sctx, cancel := b.opCtx(ctx)
	err = dc.Do(sctx, dc.B().Subscribe().Channel(channels...).Build()).Error()
	if err == nil {
		select {
		case <-ready:
		case err = <-wait:
			if err == nil {
				err = errors.New("connection closed")
			}
		case <-sctx.Done():
			err = sctx.Err()
		}
	}
	cancel()
	if err != nil {
		return false, b.fail("subscribe", err)
	}
	if again {
		b.metrics.Reconnect()
		b.log.Info("redis: event subscription restored")
	}
	// Anything published before this point may have been missed.
	d.signalGap()
	select {
	case <-ctx.Done():
		return true, ctx.Err()
	case <-b.done:
		return true, ErrClosed
	case err = <-wait:
		if err == nil {
			err = errors.New("connection closed")
		}
		return true, b.fail("subscription", err)
	}
}

// delivery hands received events to the handler on its own goroutine, so that
// a slow handler never stalls the connection's reader, and turns overflow
// into a gap instead of unbounded memory.
type delivery struct {
	b     *Backend
	h     sessionbridge.EventHandler
	types map[string]sessionbridge.EventType
	queue chan sessionbridge.Event
	gap   chan struct{}
	done  chan struct{}
}

// receive runs on the connection's reader goroutine: decode, enqueue, never
// block.
func (d *delivery) receive(m rueidis.PubSubMessage) {
	t, ok := d.types[m.Channel]
	if !ok {
		return
	}
	var ev sessionbridge.Event
	// Strict like every input: an event whose fields could be read two ways
	// (duplicate names, invalid UTF-8) is dropped, and a revocation among
	// them is caught by the re-validation the gap triggers. Unknown members
	// are skipped, so that a newer node's events still decode.
	if err := strictjson.DecodeOpen([]byte(m.Message), &ev); err != nil {
		// Payloads carry no secrets by design, but log only the channel:
		// application data in updates is not ours to copy into logs.
		d.b.log.Warn("redis: dropping undecodable event", "channel", m.Channel, "bytes", len(m.Message), "err", shortErr(err))
		d.b.metrics.RedisError("decode_event")
		if t != sessionbridge.EventMessage {
			// It may have been a revocation: have the handler re-validate.
			d.signalGap()
		}
		return
	}
	ev.Type = t
	if t == sessionbridge.EventDeleted {
		// Before the handler sees it: from now on this node refuses the
		// session even if a Redis restart brings it back. The event does not
		// carry the deadline, so the longest lifetime stands in for it; an
		// entry made by this node's own delete keeps its exact deadline.
		d.b.store.remember(ev.SessionID, time.Time{}, true)
	}
	if t != sessionbridge.EventMessage && ev.SessionID != "" {
		// The event may outrun the cache invalidation, which Redis sends on
		// another connection: read this session from Redis for a while, so
		// that this node never reads a session older than an event it has
		// received.
		d.b.store.recent.mark(ev.SessionID)
	}
	select {
	case d.queue <- ev:
	default:
		d.b.metrics.RedisError("event_overflow")
		d.signalGap()
	}
}

func (d *delivery) signalGap() {
	select {
	case d.gap <- struct{}{}:
	default: // a gap is already pending; one re-validation covers both
	}
}

func (d *delivery) run(ctx context.Context) {
	defer close(d.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.gap:
			d.h.HandleGap()
		case ev := <-d.queue:
			d.h.HandleEvent(ev)
		}
	}
}

// shortErr keeps a decode error's message short: a JSON syntax error can
// quote the input.
func shortErr(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}
