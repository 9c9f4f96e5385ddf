package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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

// Bus is a [sessionbridge.Router] on Redis pub/sub. The events of a session
// go to its shard channel "<prefix>e:{<shard>}:s:<session id>", and a user's
// messages and the creation of the user's sessions to
// "<prefix>e:{<shard>}:u:<user id>", published with SPUBLISH by the write
// scripts themselves; a node subscribes (SSUBSCRIBE) to the channels of the
// sessions and users it follows, that is it holds sockets of. API key events
// go to the broadcast channels "<prefix>apikey:updated|deleted|expired",
// which every node subscribes to: every node caches key verifications.
//
// Pub/sub is at-most-once: events published while a subscriber is cut off
// are lost to it. So Subscribe calls HandleGap after every (re)subscription
// to the broadcast channels, the first one included, whenever it drops
// events for a handler that does not keep up, and when an event cannot be
// decoded; and HandleFollowed (see [sessionbridge.FollowHandler]) after
// every (re)subscription to shard channels. The handler then re-validates
// what it holds against the store.
type Bus struct {
	b *Backend
}

var _ sessionbridge.Router = (*Bus)(nil)

// Publish sends ev, an event that changes no session (a message): to the
// channel of its session if it names one, else of its user. API key event
// types go to their broadcast channel. Store writes publish their own events.
func (bus *Bus) Publish(ctx context.Context, ev sessionbridge.Event) error {
	b := bus.b
	payload, err := marshalEvent(ev)
	if err != nil {
		return fmt.Errorf("redis: publish: %w", err)
	}
	var cmd rueidis.Completed
	switch {
	case !ev.Type.Known():
		return fmt.Errorf("redis: publish: unknown event type %q", ev.Type)
	case ev.Type.IsKey():
		cmd = b.client.B().Publish().Channel(b.channel(ev.Type)).Message(payload).Build()
	case ev.SessionID != "":
		if !sessionbridge.ValidID(ev.SessionID) {
			return fmt.Errorf("redis: publish: invalid session id")
		}
		cmd = b.client.B().Spublish().Channel(b.sessionChannel(ev.SessionID)).Message(payload).Build()
	case ev.UserID != "":
		cmd = b.client.B().Spublish().Channel(b.userChannel(ev.UserID)).Message(payload).Build()
	default:
		return fmt.Errorf("redis: publish: event names no session and no user")
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	if err := b.client.Do(ctx, cmd).Error(); err != nil {
		return b.fail("publish", err)
	}
	b.metrics.EventPublished(string(ev.Type))
	return nil
}

// Follow subscribes this node to the events of topic, in the background and
// batched with other follows; see [sessionbridge.Router].
func (bus *Bus) Follow(topic sessionbridge.Topic) { bus.b.router.follow(topic) }

// Unfollow drops one interest in topic; the channel is unsubscribed
// Options.UnfollowDelay after the last one, in a batch.
func (bus *Bus) Unfollow(topic sessionbridge.Topic) { bus.b.router.unfollow(topic) }

// Followed reports how many shard channels this node has subscribed and how
// many it wants, for diagnostics and tests.
func (bus *Bus) Followed() (subscribed, wanted int) { return bus.b.router.followedCount() }

// Subscribe delivers events to h until ctx is done, then returns ctx.Err();
// it returns ErrClosed if the Backend is closed first. It holds one
// dedicated connection for the broadcast channels and re-subscribes with
// back-off whenever that connection drops (Redis restarted, the connection
// was killed, or Redis cut a slow subscriber), calling h.HandleGap after
// each subscription is confirmed; meanwhile the shard channels of followed
// topics are subscribed on one connection per master. HandleEvent,
// HandleGap and HandleFollowed are called from one goroutine, never
// concurrently.
func (bus *Bus) Subscribe(ctx context.Context, h sessionbridge.EventHandler) error {
	b := bus.b
	d := &delivery{
		b:      b,
		h:      h,
		queue:  make(chan sessionbridge.Event, b.opts.EventBuffer),
		gap:    make(chan struct{}, 1),
		follow: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		b.router.detach(d)
		cancel()
		<-d.done
	}()
	go d.run(ctx)

	var channels []string
	d.types = map[string]sessionbridge.EventType{}
	for _, t := range sessionbridge.EventTypes {
		if t.IsKey() {
			ch := b.channel(t)
			channels = append(channels, ch)
			d.types[ch] = t
		}
	}
	// The expiry hints (see expiryWatch) ride on the same connection.
	for ch := range b.hintChannels {
		channels = append(channels, ch)
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
	b.forEachWatch((*expiryWatch).subscribed)
	defer b.forEachWatch((*expiryWatch).unsubscribed)
	if again {
		b.metrics.Reconnect()
		b.log.Info("redis: event subscription restored")
	}
	if !d.attached {
		// The shard channels: from now on this handler receives them too.
		d.attached = true
		b.router.attach(d)
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
	// attached: the router delivers to this handler (set once, by the
	// Subscribe loop).
	attached bool

	// follow signals that followedTopics has topics for HandleFollowed.
	follow         chan struct{}
	mu             sync.Mutex
	followedTopics []sessionbridge.Topic
}

// receive runs on the broadcast connection's reader goroutine: decode,
// enqueue, never block.
func (d *delivery) receive(m rueidis.PubSubMessage) {
	t, ok := d.types[m.Channel]
	if !ok {
		d.b.expiryHint(m.Channel, m.Message)
		return
	}
	var te typedEvent
	// Strict like every input: an event whose fields could be read two ways
	// (duplicate names, invalid UTF-8) is dropped, and a revocation among
	// them is caught by the re-validation the gap triggers. Unknown members
	// are skipped, so that a newer node's events still decode.
	if err := strictjson.DecodeOpen([]byte(m.Message), &te); err != nil {
		d.b.undecodable(m, err)
		d.signalGap()
		return
	}
	ev := te.Event
	ev.Type = t
	d.enqueue(ev)
}

// enqueue queues ev for the handler without blocking: when the queue is
// full the event is dropped and the handler re-validates everything.
func (d *delivery) enqueue(ev sessionbridge.Event) {
	select {
	case d.queue <- ev:
	default:
		d.b.metrics.RedisError("event_overflow")
		d.signalGap()
	}
}

// followed queues topics for HandleFollowed.
func (d *delivery) followed(topics []sessionbridge.Topic) {
	d.mu.Lock()
	d.followedTopics = append(d.followedTopics, topics...)
	d.mu.Unlock()
	select {
	case d.follow <- struct{}{}:
	default:
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
	fh, _ := d.h.(sessionbridge.FollowHandler)
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.gap:
			d.h.HandleGap()
		case <-d.follow:
			d.mu.Lock()
			topics := d.followedTopics
			d.followedTopics = nil
			d.mu.Unlock()
			if fh != nil {
				fh.HandleFollowed(topics)
			} else {
				// A handler that cannot re-validate some sessions
				// re-validates all of them.
				d.h.HandleGap()
			}
		case ev := <-d.queue:
			d.h.HandleEvent(ev)
		}
	}
}

// undecodable logs and counts an event that is dropped. Payloads carry no
// secrets by design, but only the channel is logged: application data in
// updates is not ours to copy into logs.
func (b *Backend) undecodable(m rueidis.PubSubMessage, err error) {
	b.log.Warn("redis: dropping undecodable event", "channel", m.Channel, "bytes", len(m.Message), "err", shortErr(err))
	b.metrics.RedisError("decode_event")
}

// noteReceived records what a received session event means for this node's
// reads, before any handler sees it.
func (b *Backend) noteReceived(ev sessionbridge.Event) {
	if ev.Type == sessionbridge.EventDeleted {
		// From now on this node refuses the session even if a Redis
		// restart brings it back. The event does not carry the deadline,
		// so the longest lifetime stands in for it; an entry made by this
		// node's own delete keeps its exact deadline.
		b.store.remember(ev.SessionID, time.Time{}, true)
	}
	if ev.Type != sessionbridge.EventMessage && ev.SessionID != "" {
		// The event may outrun the cache invalidation, which Redis sends on
		// another connection: read this session from Redis for a while, so
		// that this node never reads a session older than an event it has
		// received.
		b.store.recent.mark(ev.SessionID)
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
