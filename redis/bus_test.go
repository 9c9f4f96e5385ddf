package redis

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

func TestBusDeliversEveryTypeWithGapFirst(t *testing.T) {
	srv := redistest.Start(t)
	m := newCountingMetrics()
	b := newBackend(t, srv, func(o *Options) { o.Metrics = m })
	rec := &recorder{}
	subscribe(t, b, rec)
	if got := rec.gapCount(); got != 1 {
		t.Fatalf("gaps after the first subscription = %d, want 1", got)
	}
	// Session events reach a node that follows the session; API key events
	// every node.
	const sid = "00AAAAAAAAAAAAAAAA"
	followSessions(t, b, rec, sid)
	for _, typ := range sessionbridge.EventTypes {
		ev := sessionbridge.Event{Type: typ, SessionID: sid, UserID: "u-" + string(typ), NodeID: "n1", Source: sessionbridge.SourceAPI, Timestamp: time.Now()}
		if typ == sessionbridge.EventMessage {
			ev.Data = json.RawMessage(`{"hello":"world"}`)
		}
		if err := b.Bus().Publish(bg, ev); err != nil {
			t.Fatalf("Publish %s: %v", typ, err)
		}
	}
	if got := m.get(func(m *countingMetrics) int { return m.published["message"] + m.published["deleted"] }); got != 2 {
		t.Fatalf("published counts = %d, want 2", got)
	}
	for _, typ := range sessionbridge.EventTypes {
		eventually(t, 5*time.Second, "event "+string(typ), func() bool {
			_, ok := rec.find(func(ev sessionbridge.Event) bool { return ev.Type == typ && ev.UserID == "u-"+string(typ) })
			return ok
		})
	}
	msg, _ := rec.find(func(ev sessionbridge.Event) bool { return ev.Type == sessionbridge.EventMessage })
	if string(msg.Data) != `{"hello":"world"}` {
		t.Fatalf("message data = %s", msg.Data)
	}
	if err := b.Bus().Publish(bg, sessionbridge.Event{Type: "bogus"}); err == nil {
		t.Fatal("Publish of an unknown type: want an error")
	}
}

func TestBusPrefixIsolates(t *testing.T) {
	srv := redistest.Start(t)
	a, other := newBackend(t, srv), newBackend(t, srv)
	rec := &recorder{}
	subscribe(t, a, rec)
	// a follows both users under its prefix; the other prefix's channels
	// are others.
	follow(t, a, rec, sessionbridge.UserTopic("x"), sessionbridge.UserTopic("mine"))
	if err := other.Bus().Publish(bg, sessionbridge.Event{Type: sessionbridge.EventMessage, UserID: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Bus().Publish(bg, sessionbridge.Event{Type: sessionbridge.EventMessage, UserID: "mine"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "own event", func() bool {
		_, ok := rec.find(func(ev sessionbridge.Event) bool { return ev.UserID == "mine" })
		return ok
	})
	// Redis delivers in publish order on one connection: the foreign event,
	// published first, would have arrived before ours.
	if n := rec.count(func(ev sessionbridge.Event) bool { return ev.UserID == "x" }); n != 0 {
		t.Fatalf("received %d events of another prefix", n)
	}
}

func TestBusResubscribesAfterKillWithGap(t *testing.T) {
	srv := redistest.Start(t)
	m := newCountingMetrics()
	b := newBackend(t, srv, func(o *Options) { o.Metrics = m })
	rec := &recorder{}
	subscribe(t, b, rec)
	after := sessionbridge.UserTopic("after")
	follow(t, b, rec, after)

	// Kill the subscriber's connections, the broadcast one and the shard
	// one: events published meanwhile are lost to it, and each
	// re-subscription must say so, with a gap and with HandleFollowed.
	if n, err := srv.Do("CLIENT", "KILL", "TYPE", "pubsub"); err != nil || n.(int64) != 2 {
		t.Fatalf("CLIENT KILL TYPE pubsub = %v, %v; want 2 killed", n, err)
	}
	eventually(t, 10*time.Second, "a gap after the kill", func() bool { return rec.gapCount() >= 2 })
	eventually(t, 10*time.Second, "the followed user reported again after the kill", func() bool { return rec.followedCount(after) >= 2 })
	if got := m.get(func(m *countingMetrics) int { return m.reconnects }); got < 1 {
		t.Fatalf("reconnects = %d, want >= 1", got)
	}
	if err := b.Bus().Publish(bg, sessionbridge.Event{Type: sessionbridge.EventMessage, UserID: "after"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "event after resubscribe", func() bool {
		_, ok := rec.find(func(ev sessionbridge.Event) bool { return ev.UserID == "after" })
		return ok
	})
}

func TestBusSurvivesRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv, func(o *Options) { o.Timeout = 500 * time.Millisecond })
	rec := &recorder{}
	subscribe(t, b, rec)
	follow(t, b, rec, sessionbridge.UserTopic("back"))
	srv.Stop()
	if err := b.Bus().Publish(bg, sessionbridge.Event{Type: sessionbridge.EventMessage, UserID: "back"}); err == nil {
		t.Fatal("Publish with Redis down: want an error")
	}
	srv.Restart()
	eventually(t, 15*time.Second, "a gap after the restart", func() bool { return rec.gapCount() >= 2 })
	eventually(t, 10*time.Second, "an event after the restart", func() bool {
		_ = b.Bus().Publish(bg, sessionbridge.Event{Type: sessionbridge.EventMessage, UserID: "back"})
		_, ok := rec.find(func(ev sessionbridge.Event) bool { return ev.UserID == "back" })
		return ok
	})
}

func TestBusUndecodablePayloadIsCountedNotFatal(t *testing.T) {
	srv := redistest.Start(t)
	m := newCountingMetrics()
	b := newBackend(t, srv, func(o *Options) { o.Metrics = m })
	rec := &recorder{}
	subscribe(t, b, rec)
	id := sessionIDIn(t, "5a")
	followSessions(t, b, rec, id)
	gaps := rec.gapCount()
	ch := b.sessionChannel(id)
	srv.MustDo("SPUBLISH", ch, "{not json")
	srv.MustDo("SPUBLISH", ch, `{"type":"deleted","session_id":["wrong type"]}`)
	if err := b.Bus().Publish(bg, sessionbridge.Event{Type: sessionbridge.EventDeleted, SessionID: id}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the good event", func() bool {
		_, ok := rec.find(func(ev sessionbridge.Event) bool { return ev.SessionID == id })
		return ok
	})
	if got := m.get(func(m *countingMetrics) int { return m.errors["decode_event"] }); got != 2 {
		t.Fatalf("decode errors = %d, want 2", got)
	}
	if n := rec.count(func(sessionbridge.Event) bool { return true }); n != 1 {
		t.Fatalf("delivered %d events, want only the good one", n)
	}
	// An undecodable session event may have been a revocation: the handler
	// is told to re-validate.
	eventually(t, 5*time.Second, "a gap for the undecodable events", func() bool { return rec.gapCount() > gaps })
}

func TestBusOverflowBecomesGap(t *testing.T) {
	srv := redistest.Start(t)
	m := newCountingMetrics()
	b := newBackend(t, srv, func(o *Options) { o.Metrics = m; o.EventBuffer = 2 })
	rec := &recorder{block: make(chan struct{})}
	subscribe(t, b, rec)
	follow(t, b, rec, sessionbridge.UserTopic("flood"))
	for range 10 {
		if err := b.Bus().Publish(bg, sessionbridge.Event{Type: sessionbridge.EventMessage, UserID: "flood"}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "overflow", func() bool {
		return m.get(func(m *countingMetrics) int { return m.errors["event_overflow"] }) > 0
	})
	close(rec.block)
	eventually(t, 5*time.Second, "the overflow gap", func() bool { return rec.gapCount() >= 2 })
	if n := rec.count(func(sessionbridge.Event) bool { return true }); n >= 10 {
		t.Fatalf("delivered %d events through a buffer of 2 with a stuck handler; want drops", n)
	}
}

// TestBusSlowSubscriberCutByRedisResyncs has Redis cut the subscriber for
// exceeding its pub/sub output buffer limit in the middle of a script that
// then deletes a session: the deleted event is lost for sure, and the
// re-subscription's HandleFollowed is what tells the handler to
// re-validate the session.
func TestBusSlowSubscriberCutByRedisResyncs(t *testing.T) {
	srv := redistest.Start(t)
	m := newCountingMetrics()
	b := newBackend(t, srv, func(o *Options) { o.Metrics = m })
	s := newSession(t, "slow-user")
	if err := b.Store().Create(bg, s, sessionbridge.Event{Type: sessionbridge.EventCreated}); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	subscribe(t, b, rec)
	topic := sessionbridge.SessionTopic(s.ID)
	follow(t, b, rec, topic)
	srv.MustDo("CONFIG", "SET", "client-output-buffer-limit", "pubsub 64kb 32kb 1")
	big := strings.Repeat("x", 256<<10)
	script := `redis.call('SPUBLISH', ARGV[1], ARGV[2]); redis.call('DEL', KEYS[1]); redis.call('SPUBLISH', ARGV[1], ARGV[3]); return 1`
	srv.MustDo("EVAL", script, "1", b.sessionKey(s.ID), b.sessionChannel(s.ID),
		`{"type":"message","session_id":"`+s.ID+`","data":"`+big+`"}`,
		`{"type":"deleted","session_id":"`+s.ID+`","reason":"revoked"}`)
	eventually(t, 10*time.Second, "the session reported followed again after the cut", func() bool { return rec.followedCount(topic) >= 2 })
	if _, ok := rec.find(func(ev sessionbridge.Event) bool { return ev.SessionID == s.ID }); ok {
		t.Fatal("the deleted event arrived although Redis cut the subscriber before it")
	}
	if got, err := b.Store().GetMany(bg, []string{s.ID}); err != nil || len(got) != 0 {
		t.Fatalf("re-validation read = %v, %v; want the session gone", got, err)
	}
}

func TestSubscribeEndsWhenBackendCloses(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv)
	rec := &recorder{}
	done := make(chan error, 1)
	go func() { done <- b.Bus().Subscribe(bg, rec) }()
	eventually(t, 10*time.Second, "the first gap", func() bool { return rec.gapCount() >= 1 })
	b.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Subscribe = %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Subscribe did not return after Close")
	}
	if err := b.Ping(bg); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ping after Close = %v", err)
	}
}
