package clustertest

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/goleak"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/gateway"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

// In Cluster mode rueidis runs two delayed jobs on goroutines of their own
// that Close does not wait for, each ending by itself: the closing of the
// connections a topology refresh dropped (five seconds later) and a
// topology refresh it delays after a failed command.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"))
}

// eventWait bounds how long an event may take to cross nodes in these tests:
// generous for a loaded machine; the real figure is a benchmark's business.
const eventWait = 10 * time.Second

func TestRevokeOnAClosesSocketOnB(t *testing.T) { eachRedis(t, testRevokeOnAClosesSocketOnB) }

func testRevokeOnAClosesSocketOnB(t *testing.T, srv redisTarget) {
	a, b := twoNodes(t, srv, nodeOpts{})
	s, tok := create(t, a, "alice")
	c := dial(t, b, tok)
	if _, err := a.manager.Delete(bg, s.ID, sb.ReasonRevoked, sb.Change{Source: sb.SourceAPI}); err != nil {
		t.Fatal(err)
	}
	c.expectClose(gateway.CloseReauthenticate, gateway.ReasonSessionRevoked, eventWait)
	// And the token no longer opens a socket anywhere.
	for _, n := range []*node{a, b} {
		if _, resp, err := tryDial(n.srv.URL, tok); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("dial %s with a revoked token: %v, %v; want 401", n.name, err, resp)
		}
	}
}

func TestUpdateOnAReachesB(t *testing.T) { eachRedis(t, testUpdateOnAReachesB) }

func testUpdateOnAReachesB(t *testing.T, srv redisTarget) {
	a, b := twoNodes(t, srv, nodeOpts{})
	s, tok := create(t, a, "bob")
	c := dial(t, b, tok)
	type updated struct {
		Session sb.PublicSession `json:"session"`
		Source  sb.Source        `json:"source"`
	}
	next := func() updated {
		f := c.expect(gateway.TypeSessionUpdated, eventWait)
		var u updated
		if err := json.Unmarshal(f.Data, &u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	// B re-validates once after its first subscription; if that happens
	// to run after this update, it may bring the change before the event
	// does (as source "system"). Either way the first update arrives.
	if _, err := a.manager.Update(bg, s.ID, json.RawMessage(`{"theme":"dark","cart":3}`), 0, sb.Change{Source: sb.SourceHTTP}); err != nil {
		t.Fatal(err)
	}
	if got := next(); got.Session.Version != 2 || !strings.Contains(string(got.Session.Data), `"theme":"dark"`) {
		t.Fatalf("first session.updated = %+v", got)
	}
	// From then on only the event can carry a change.
	if _, err := a.manager.Update(bg, s.ID, json.RawMessage(`{"cart":4}`), 0, sb.Change{Source: sb.SourceHTTP}); err != nil {
		t.Fatal(err)
	}
	if got := next(); got.Session.Version != 3 || got.Source != sb.SourceHTTP || !strings.Contains(string(got.Session.Data), `"cart":4`) {
		t.Fatalf("second session.updated = %+v", got)
	}
}

func TestFrameUpdateOnBVisibleOnA(t *testing.T) { eachRedis(t, testFrameUpdateOnBVisibleOnA) }

func testFrameUpdateOnBVisibleOnA(t *testing.T, srv redisTarget) {
	a, b := twoNodes(t, srv, nodeOpts{})
	s, tok := create(t, a, "carol")
	// A reads the session first, so that it sits in A's client cache.
	if _, err := a.manager.Get(bg, s.ID); err != nil {
		t.Fatal(err)
	}
	c := dial(t, b, tok)
	c.send(gateway.TypeSessionUpdate, "u1", map[string]any{"data": map[string]any{"lang": "fr"}})
	ack := c.expect(gateway.TypeAck, eventWait)
	if ack.ID != "u1" {
		t.Fatalf("ack id = %q", ack.ID)
	}
	eventually(t, eventWait, "A to see the update made on B", func() bool {
		got, err := a.manager.Get(bg, s.ID)
		return err == nil && got.Version == 2 && strings.Contains(string(got.Data), `"lang":"fr"`)
	})
}

func TestDeleteUserClosesSocketsOnBothNodes(t *testing.T) {
	eachRedis(t, testDeleteUserClosesSocketsOnBothNodes)
}

func testDeleteUserClosesSocketsOnBothNodes(t *testing.T, srv redisTarget) {
	a, b := twoNodes(t, srv, nodeOpts{})
	_, tok1 := create(t, a, "dave")
	_, tok2 := create(t, b, "dave")
	keep, tok3 := create(t, a, "dave")
	c1, c2, c3 := dial(t, a, tok1), dial(t, b, tok2), dial(t, b, tok3)
	gone, err := a.manager.DeleteUser(bg, "dave", keep.ID, sb.ReasonRevoked, sb.Change{Source: sb.SourceAPI})
	if err != nil || len(gone) != 2 {
		t.Fatalf("DeleteUser = %v, %v; want 2 removed", gone, err)
	}
	c1.expectClose(gateway.CloseReauthenticate, gateway.ReasonSessionRevoked, eventWait)
	c2.expectClose(gateway.CloseReauthenticate, gateway.ReasonSessionRevoked, eventWait)
	if !c3.isOpen(eventWait) {
		t.Fatal("the kept session's socket was closed")
	}
	list, err := b.manager.List(bg, "dave")
	if err != nil || len(list) != 1 || list[0].ID != keep.ID {
		t.Fatalf("List on B = %v, %v; want only the kept session", list, err)
	}
}

// rawSubscriber counts the messages on one channel with a plain rueidis
// client, independent of the code under test.
func rawSubscriber(t *testing.T, srv *redistest.Server, channel string) (count func(match string) int) {
	t.Helper()
	return counter(rawMessages(t, srv.Addr(), 1, func(c rueidis.Client) rueidis.Completed {
		return c.B().Subscribe().Channel(channel).Build()
	}))
}

// rawShardSubscriber counts, outside any node, the messages on shard
// channels of one slot.
func rawShardSubscriber(t *testing.T, target redisTarget, channels []string) (count func(match string) int) {
	t.Helper()
	return counter(rawMessages(t, serversOf(target)[0].Addr(), len(channels), func(c rueidis.Client) rueidis.Completed {
		return c.B().Ssubscribe().Channel(channels...).Build()
	}))
}

// rawMessages subscribes with a plain rueidis client at addr, independent of
// the code under test, and returns the messages received so far. It returns
// once Redis confirmed confirmations subscriptions.
func rawMessages(t *testing.T, addr string, confirmations int, subscribe func(rueidis.Client) rueidis.Completed) func() []string {
	t.Helper()
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var msgs []string
	subscribed := make(chan struct{})
	var confirmed atomic.Int64
	ctx, cancel := newCancel()
	ctx = rueidis.WithOnSubscriptionHook(ctx, func(s rueidis.PubSubSubscription) {
		if !strings.Contains(s.Kind, "unsubscribe") && confirmed.Add(1) == int64(confirmations) {
			close(subscribed)
		}
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = client.Receive(ctx, subscribe(client), func(m rueidis.PubSubMessage) {
			mu.Lock()
			msgs = append(msgs, m.Message)
			mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		client.Close()
	})
	select {
	case <-subscribed:
	case <-time.After(eventWait):
		t.Fatal("raw subscriber did not subscribe")
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(msgs)
	}
}

// counter counts the messages that contain a string.
func counter(msgs func() []string) func(match string) int {
	return func(match string) int {
		n := 0
		for _, m := range msgs() {
			if strings.Contains(m, match) {
				n++
			}
		}
		return n
	}
}

func TestExpiryClosesOnBothNodesAndIsPublishedOnce(t *testing.T) {
	eachRedis(t, testExpiryClosesOnBothNodesAndIsPublishedOnce)
}

func testExpiryClosesOnBothNodesAndIsPublishedOnce(t *testing.T, srv redisTarget) {
	// Both nodes claim expiries every 20ms: they race for every session.
	a, b := twoNodes(t, srv, nodeOpts{expiry: 20 * time.Millisecond})

	const n = 8
	var clients []*client
	var ids []string
	for i := range n {
		s, tok, err := a.manager.Create(bg, sb.NewSession{UserID: "erin", TTL: 3 * time.Second}, sb.Change{Source: sb.SourceAPI})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
		on := a
		if i%2 == 1 {
			on = b
		}
		clients = append(clients, dial(t, on, tok))
	}
	// Every event of a session goes to its own shard channel; one user's
	// sessions share a slot.
	channels := make([]string, len(ids))
	for i, id := range ids {
		channels[i] = "sb:e:{" + sb.ShardOfID(id) + "}:s:" + id
	}
	count := rawShardSubscriber(t, srv, channels)
	for _, c := range clients {
		c.expectClose(gateway.CloseReauthenticate, gateway.ReasonSessionExpired, eventWait)
	}
	eventually(t, eventWait, "every expiry to be claimed", func() bool {
		got, err := a.backend.Store().GetMany(bg, ids)
		return err == nil && len(got) == 0
	})
	// Nothing is left to claim on either node.
	for _, nd := range []*node{a, b} {
		if got, err := nd.manager.ClaimExpired(bg, 100); err != nil || len(got) != 0 {
			t.Fatalf("ClaimExpired on %s after the fact = %d, %v", nd.name, len(got), err)
		}
	}
	// Pub/sub keeps order per channel: once a marker published after every
	// claim arrives on each session's channel, every expired event has too.
	for _, ch := range channels {
		doKey(t, srv, ch, "SPUBLISH", ch, `{"marker":true}`)
	}
	eventually(t, eventWait, "the markers", func() bool { return count(`"marker"`) == len(channels) })
	for _, id := range ids {
		if got := count(`"type":"expired","session_id":"` + id + `"`); got != 1 {
			t.Fatalf("session %s: %d expired events, want exactly 1", id, got)
		}
	}
}

func TestSubscriptionKilledThenRevokeStillCloses(t *testing.T) {
	eachRedis(t, testSubscriptionKilledThenRevokeStillCloses)
}

func testSubscriptionKilledThenRevokeStillCloses(t *testing.T, srv redisTarget) {
	a, b := twoNodes(t, srv, nodeOpts{})
	s, tok := create(t, a, "frank")
	c := dial(t, b, tok)
	// Cut both nodes' subscriptions and revoke at once: the deleted event
	// may well be published while B is not subscribed. B's re-validation
	// after it re-subscribes must close the socket anyway (the periodic sweep
	// is an hour away).
	doAll(srv, "CLIENT", "KILL", "TYPE", "pubsub")
	if _, err := a.manager.Delete(bg, s.ID, sb.ReasonRevoked, sb.Change{Source: sb.SourceAPI}); err != nil {
		t.Fatal(err)
	}
	c.expectClose(gateway.CloseReauthenticate, gateway.ReasonSessionRevoked, eventWait)
}

func TestSlowSubscriberCutByRedisRecovers(t *testing.T) {
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, nodeOpts{})
	s, tok := create(t, a, "grace")
	c := dial(t, b, tok)
	srv.MustDo("CONFIG", "SET", "client-output-buffer-limit", "pubsub 64kb 32kb 1")
	// One script overflows every subscriber's output buffer, so Redis cuts
	// them, then removes the session: its deleted event is certainly lost.
	// Both go to the session's own channel, which B follows.
	ch := "sb:e:{" + sb.ShardOfID(s.ID) + "}:s:" + s.ID
	script := `redis.call('SPUBLISH', ARGV[1], ARGV[2]); redis.call('DEL', KEYS[1]); redis.call('SPUBLISH', ARGV[1], ARGV[3]); return 1`
	big := `{"type":"message","session_id":"` + s.ID + `","data":"` + strings.Repeat("x", 256<<10) + `"}`
	srv.MustDo("EVAL", script, "1", "sb:s:{"+sb.ShardOfID(s.ID)+"}"+s.ID,
		ch, big, `{"type":"deleted","session_id":"`+s.ID+`","reason":"revoked"}`)
	c.expectClose(gateway.CloseReauthenticate, gateway.ReasonSessionRevoked, eventWait)
	// The cluster works on: a new session revoked on A closes on B.
	s2, tok2 := create(t, a, "grace")
	c2 := dial(t, b, tok2)
	if _, err := a.manager.Delete(bg, s2.ID, sb.ReasonRevoked, sb.Change{}); err != nil {
		t.Fatal(err)
	}
	c2.expectClose(gateway.CloseReauthenticate, gateway.ReasonSessionRevoked, eventWait)
}

func TestRedisDownThenBackEmpty(t *testing.T) {
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, nodeOpts{timeout: 500 * time.Millisecond})
	_, tok := create(t, a, "heidi")
	c := dial(t, b, tok)

	srv.Stop()
	eventually(t, eventWait, "Ping to fail", func() bool { return b.backend.Ping(bg) != nil })
	if err := b.backend.Ping(bg); !errors.Is(err, sb.ErrUnavailable) {
		t.Fatalf("Ping = %v, want ErrUnavailable", err)
	}
	if _, err := b.manager.Authenticate(bg, tok); !errors.Is(err, sb.ErrUnavailable) {
		t.Fatalf("Authenticate = %v, want ErrUnavailable", err)
	}
	// New upgrades fail closed with 503...
	if _, resp, err := tryDial(b.srv.URL, tok); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial with Redis down: %v, %v; want 503", err, resp)
	}
	// ...while established sockets stay.
	if !c.isOpen(eventWait) {
		t.Fatal("an established socket closed while Redis was down")
	}

	srv.Restart()
	// Redis came back empty: the session is gone, and B's re-validation
	// after re-subscribing closes its socket.
	c.expectClose(gateway.CloseReauthenticate, gateway.ReasonSessionRevoked, 2*eventWait)
	eventually(t, eventWait, "Ping to recover", func() bool { return a.backend.Ping(bg) == nil && b.backend.Ping(bg) == nil })

	// Everything reconnected by itself: the full path works again.
	s2, tok2 := create(t, a, "heidi")
	c2 := dial(t, b, tok2)
	if _, err := a.manager.Delete(bg, s2.ID, sb.ReasonRevoked, sb.Change{}); err != nil {
		t.Fatal(err)
	}
	c2.expectClose(gateway.CloseReauthenticate, gateway.ReasonSessionRevoked, eventWait)
}

func TestConcurrentLogoutAndUpdateNeverResurrect(t *testing.T) {
	eachRedis(t, testConcurrentLogoutAndUpdateNeverResurrect)
}

func testConcurrentLogoutAndUpdateNeverResurrect(t *testing.T, srv redisTarget) {
	a, b := twoNodes(t, srv, nodeOpts{})
	for round := range 20 {
		s, _ := create(t, a, "ivan")
		var wg sync.WaitGroup
		var deleted atomic.Bool
		for i := range 4 {
			n := a
			if i%2 == 1 {
				n = b
			}
			wg.Go(func() {
				for j := range 10 {
					_, err := n.manager.Update(bg, s.ID, json.RawMessage(`{"i":`+string(rune('0'+j))+`}`), 0, sb.Change{})
					if err != nil && !errors.Is(err, sb.ErrNotFound) {
						t.Errorf("round %d: Update: %v", round, err)
						return
					}
				}
			})
		}
		wg.Go(func() {
			if _, err := b.manager.Delete(bg, s.ID, sb.ReasonLogout, sb.Change{}); err == nil {
				deleted.Store(true)
			}
		})
		wg.Wait()
		if !deleted.Load() {
			t.Fatalf("round %d: Delete failed", round)
		}
		for _, n := range []*node{a, b} {
			if _, err := n.backend.Store().GetMany(bg, []string{s.ID}); err != nil {
				t.Fatal(err)
			}
			if got, _ := n.backend.Store().GetMany(bg, []string{s.ID}); len(got) != 0 {
				t.Fatalf("round %d: session resurrected on %s", round, n.name)
			}
			eventually(t, eventWait, "the cached read to see the delete", func() bool {
				_, err := n.manager.Get(bg, s.ID)
				return errors.Is(err, sb.ErrNotFound)
			})
		}
		key := "sb:s:{" + sb.ShardOfID(s.ID) + "}" + s.ID
		if n := doKey(t, srv, key, "EXISTS", key).(int64); n != 0 {
			t.Fatalf("round %d: session key exists after logout", round)
		}
		ukey := "sb:u:{" + sb.Shard("ivan") + "}ivan"
		if n := doKey(t, srv, ukey, "SISMEMBER", ukey, s.ID).(int64); n != 0 {
			t.Fatalf("round %d: user index still lists the session", round)
		}
		xkey := "sb:x:{" + sb.ShardOfID(s.ID) + "}"
		if v := doKey(t, srv, xkey, "ZSCORE", xkey, s.ID); v != nil {
			t.Fatalf("round %d: expiry index still lists the session", round)
		}
	}
}
