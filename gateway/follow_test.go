package gateway

import (
	"context"
	"sync"
	"testing"

	sb "github.com/sessionbridge/sessionbridge"
)

// routingBus is the test bus as a Router: it counts follows and, like a
// routing bus, delivers no event of a session until it is followed and the
// subscription is reported in place.
type routingBus struct {
	*lossyBus
	mu      sync.Mutex
	follows map[sb.Topic]int
	calls   []string
}

func newRoutingBus(l *lossyBus) *routingBus {
	return &routingBus{lossyBus: l, follows: map[sb.Topic]int{}}
}

func (b *routingBus) Follow(t sb.Topic) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.follows[t]++
	b.calls = append(b.calls, "follow "+t.ID)
}

func (b *routingBus) Unfollow(t sb.Topic) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.follows[t]--
	b.calls = append(b.calls, "unfollow "+t.ID)
}

func (b *routingBus) count(t sb.Topic) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.follows[t]
}

func newRoutingEnv(t *testing.T) (*env, *routingBus) {
	var rb *routingBus
	e := newEnvWith(t, func(b *sb.Backend) {
		rb = newRoutingBus(b.Bus.(*lossyBus))
		b.Bus = rb
	}, nil)
	return e, rb
}

func TestFollowsSessionAndUserFromFirstSocketToLast(t *testing.T) {
	e, rb := newRoutingEnv(t)
	s, tok := e.session("ann")
	st, ut := sb.SessionTopic(s.ID), sb.UserTopic("ann")

	c1, _ := e.dial(bearer(tok), "")
	if rb.count(st) != 1 || rb.count(ut) != 1 {
		t.Fatalf("after the first socket: session followed %d times, user %d; want 1 and 1", rb.count(st), rb.count(ut))
	}
	c2, _ := e.dial(bearer(tok), "")
	if rb.count(st) != 1 || rb.count(ut) != 1 {
		t.Fatalf("a second socket of the session followed again: %d, %d", rb.count(st), rb.count(ut))
	}
	_ = c1.ws.Close()
	waitFor(t, "the first socket to leave", func() bool { return e.g.reg.len() == 1 })
	if rb.count(st) != 1 || rb.count(ut) != 1 {
		t.Fatalf("one socket left, the other stays: follows %d, %d; want 1 and 1", rb.count(st), rb.count(ut))
	}
	_ = c2.ws.Close()
	waitFor(t, "the session to be unfollowed", func() bool { return rb.count(st) == 0 && rb.count(ut) == 0 })
}

func TestHandleFollowedRevalidatesOnlyThoseSessions(t *testing.T) {
	e, rb := newRoutingEnv(t)
	gone, tokGone := e.session("bob")
	kept, tokKept := e.session("bob")
	cGone, _ := e.dial(bearer(tokGone), "")
	cKept, _ := e.dial(bearer(tokKept), "")
	waitFor(t, "both followed", func() bool {
		return rb.count(sb.SessionTopic(gone.ID)) == 1 && rb.count(sb.SessionTopic(kept.ID)) == 1
	})
	// Both are deleted while their subscriptions are not in place yet: the
	// events are lost, as before a routing bus subscribes.
	e.bus.dropSession(gone.ID, kept.ID)
	for _, id := range []string{gone.ID, kept.ID} {
		if _, err := e.mgr.Delete(context.Background(), id, sb.ReasonRevoked, sb.Change{Source: sb.SourceAPI}); err != nil {
			t.Fatal(err)
		}
	}
	// The subscription of one of them is reported in place: only its
	// socket is re-validated and closed.
	before := e.counter("sessionbridge_resyncs_total", map[string]string{"trigger": "follow"})
	e.g.HandleFollowed([]sb.Topic{sb.SessionTopic(gone.ID), sb.UserTopic("bob")})
	cGone.expectClose(CloseReauthenticate, ReasonSessionRevoked)
	if got := e.counter("sessionbridge_resyncs_total", map[string]string{"trigger": "follow"}); got != before+1 {
		t.Fatalf("follow re-validations %v, want %v", got, before+1)
	}
	// The other stays open until its own subscription (or a sweep) says so.
	if e.g.reg.session(kept.ID) == nil {
		t.Fatal("the session whose subscription was not reported was re-validated too")
	}
	e.g.HandleFollowed([]sb.Topic{sb.SessionTopic(kept.ID)})
	cKept.expectClose(CloseReauthenticate, ReasonSessionRevoked)
}

func TestHandleFollowedRetriesWhileTheStoreIsAway(t *testing.T) {
	e, _ := newRoutingEnv(t)
	s, tok := e.session("cat")
	c, _ := e.dial(bearer(tok), "")
	e.bus.dropSession(s.ID)
	if _, err := e.mgr.Delete(context.Background(), s.ID, sb.ReasonRevoked, sb.Change{Source: sb.SourceAPI}); err != nil {
		t.Fatal(err)
	}
	e.store.down.Store(true)
	e.g.HandleFollowed([]sb.Topic{sb.SessionTopic(s.ID)})
	waitFor(t, "a failed re-validation", func() bool {
		return e.counter("sessionbridge_resyncs_total", map[string]string{"trigger": "follow"}) >= 1
	})
	if e.g.reg.session(s.ID) == nil {
		t.Fatal("the socket closed while the store was away; it must stay open")
	}
	e.store.down.Store(false)
	// Retried with back-off, not left to the sweep (an hour here).
	c.expectClose(CloseReauthenticate, ReasonSessionRevoked)
}
