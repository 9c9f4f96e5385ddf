package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

// shardSubscribers returns how many clients of srv subscribe to the shard
// channel ch (PUBSUB SHARDNUMSUB, which a node answers for its own clients).
func shardSubscribers(t testing.TB, srv *redistest.Server, ch string) int64 {
	t.Helper()
	v, err := srv.Do("PUBSUB", "SHARDNUMSUB", ch)
	a, ok := v.([]any)
	if err != nil || !ok || len(a) != 2 {
		t.Fatalf("PUBSUB SHARDNUMSUB %s = %v, %v", ch, v, err)
	}
	n, _ := a[1].(int64)
	return n
}

// commandCalls returns how many times srv ran cmd (lower case) since its
// start, from INFO commandstats.
func commandCalls(t testing.TB, srv *redistest.Server, cmd string) int64 {
	t.Helper()
	info, _ := srv.MustDo("INFO", "commandstats").(string)
	for line := range strings.Lines(info) {
		rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":calls=")
		if !ok {
			continue
		}
		num, _, _ := strings.Cut(rest, ",")
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			t.Fatalf("INFO commandstats line %q: %v", line, err)
		}
		return n
	}
	return 0
}

// userIn returns a user ID whose sessions live in shard, so that a session
// of it can have an ID of that shard too (its keys share one slot).
func userIn(t testing.TB, shard, prefix string) string {
	t.Helper()
	for i := range 1 << 16 {
		u := prefix + strconv.Itoa(i)
		if sessionbridge.Shard(u) == shard {
			return u
		}
	}
	t.Fatalf("no user of shard %s", shard)
	return ""
}

// sessionIn makes a session (see newSession) whose ID is of shard.
func sessionIn(t testing.TB, shard string) *sessionbridge.Session {
	t.Helper()
	s := newSession(t, userIn(t, shard, "user-"))
	s.ID = sessionIDIn(t, shard)
	return s
}

// sent publishes a message to session id and waits until rec has it: every
// event published on the same master before it has arrived by then, since a
// node receives one master's messages in order on one connection.
func sent(t testing.TB, b *Backend, rec *recorder, id string) {
	t.Helper()
	marker := "marker-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := b.Bus().Publish(bg, sessionbridge.Event{Type: sessionbridge.EventMessage, SessionID: id, NodeID: marker}); err != nil {
		t.Fatalf("Publish marker: %v", err)
	}
	eventually(t, 10*time.Second, "the marker on "+id, func() bool {
		_, ok := rec.find(func(ev sessionbridge.Event) bool { return ev.NodeID == marker })
		return ok
	})
}

// bump writes the next version of s, as the Manager would, and counts it in
// s if the write succeeded.
func bump(ctx context.Context, b *Backend, s *sessionbridge.Session) error {
	next := s.Clone()
	next.Version++
	if err := b.Store().Update(ctx, next, s.Version, sessionbridge.Event{Version: next.Version}); err != nil {
		return err
	}
	s.Version = next.Version
	return nil
}

// about counts the events rec received about session id.
func about(rec *recorder, id string) int {
	return rec.count(func(ev sessionbridge.Event) bool { return ev.SessionID == id })
}

// TestRouterDeliversOnlyFollowedTopics: a node receives the events of the
// sessions and users it follows, and none of the others, which it does not
// even subscribe to.
func TestRouterDeliversOnlyFollowedTopics(t *testing.T) {
	srv := redistest.Start(t)
	node := newBackend(t, srv)
	writer := newBackend(t, srv, func(o *Options) { o.Prefix = node.prefix })
	rec := &recorder{}
	subscribe(t, node, rec)

	var mine, others []*sessionbridge.Session
	for i := range 8 {
		mine = append(mine, newSession(t, "mine-"+strconv.Itoa(i)))
		others = append(others, newSession(t, "other-"+strconv.Itoa(i)))
	}
	for _, s := range mine {
		follow(t, node, rec, sessionbridge.SessionTopic(s.ID), sessionbridge.UserTopic(s.UserID))
	}
	// Every write of the other sessions first, then the followed ones: on
	// one server they reach the node in this order.
	for _, group := range [][]*sessionbridge.Session{others, mine} {
		for _, s := range group {
			if err := writer.Store().Create(bg, s, sessionbridge.Event{}); err != nil {
				t.Fatal(err)
			}
			if err := bump(bg, writer, s); err != nil {
				t.Fatal(err)
			}
			if err := writer.Bus().Publish(bg, sessionbridge.Event{Type: sessionbridge.EventMessage, UserID: s.UserID}); err != nil {
				t.Fatal(err)
			}
		}
	}
	sent(t, writer, rec, mine[len(mine)-1].ID)
	for _, s := range mine {
		created := rec.count(func(ev sessionbridge.Event) bool {
			return ev.Type == sessionbridge.EventCreated && ev.SessionID == s.ID
		})
		updated := rec.count(func(ev sessionbridge.Event) bool {
			return ev.Type == sessionbridge.EventUpdated && ev.SessionID == s.ID && ev.Version == 2
		})
		messages := rec.count(func(ev sessionbridge.Event) bool {
			return ev.Type == sessionbridge.EventMessage && ev.UserID == s.UserID
		})
		if created != 1 || updated != 1 || messages != 1 {
			t.Errorf("followed session %s: %d created, %d updated, %d user messages; want 1 each", s.ID, created, updated, messages)
		}
		if n := shardSubscribers(t, srv, node.sessionChannel(s.ID)); n != 1 {
			t.Errorf("subscribers of a followed session's channel = %d, want 1", n)
		}
	}
	for _, s := range others {
		if n := rec.count(func(ev sessionbridge.Event) bool { return ev.SessionID == s.ID || ev.UserID == s.UserID }); n != 0 {
			t.Errorf("received %d events of session %s, which the node does not follow", n, s.ID)
		}
		for _, ch := range []string{node.sessionChannel(s.ID), node.userChannel(s.UserID)} {
			if n := shardSubscribers(t, srv, ch); n != 0 {
				t.Errorf("subscribers of %s = %d, want 0", ch, n)
			}
		}
	}
	if sub, want := node.Bus().Followed(); sub != 2*len(mine) || want != 2*len(mine) {
		t.Errorf("Followed = %d subscribed, %d wanted; want %d each", sub, want, 2*len(mine))
	}
}

// TestRouterUnfollowLingersThenUnsubscribes: after the last Unfollow the
// channel stays subscribed, and its events delivered, for UnfollowDelay;
// then it is unsubscribed and its events no longer arrive.
func TestRouterUnfollowLingersThenUnsubscribes(t *testing.T) {
	srv := redistest.Start(t)
	const delay = time.Second
	node := newBackend(t, srv, func(o *Options) { o.UnfollowDelay = delay })
	rec := &recorder{}
	subscribe(t, node, rec)
	gone, kept := newSession(t, "gone"), newSession(t, "kept")
	followSessions(t, node, rec, gone.ID, kept.ID)
	// Counted: two Follows need two Unfollows.
	node.Bus().Follow(sessionbridge.SessionTopic(gone.ID))
	ch := node.sessionChannel(gone.ID)
	unsubs := commandCalls(t, srv, "sunsubscribe")

	node.Bus().Unfollow(sessionbridge.SessionTopic(gone.ID))
	node.Bus().Unfollow(sessionbridge.SessionTopic(gone.ID))
	start := time.Now()
	sent(t, node, rec, gone.ID)
	n := shardSubscribers(t, srv, ch)
	if time.Since(start) < delay && n != 1 {
		t.Fatalf("subscribers within the unfollow delay = %d, want 1", n)
	}
	eventually(t, 10*time.Second, "the channel to be unsubscribed", func() bool { return shardSubscribers(t, srv, ch) == 0 })
	if took := time.Since(start); took < delay {
		t.Fatalf("unsubscribed %v after the last Unfollow, before the delay of %v", took, delay)
	}
	if got := commandCalls(t, srv, "sunsubscribe") - unsubs; got != 1 {
		t.Fatalf("SUNSUBSCRIBE calls = %d, want 1", got)
	}
	if sub, want := node.Bus().Followed(); sub != 1 || want != 1 {
		t.Fatalf("Followed = %d subscribed, %d wanted; want 1 each", sub, want)
	}
	before := about(rec, gone.ID)
	if err := node.Bus().Publish(bg, sessionbridge.Event{Type: sessionbridge.EventMessage, SessionID: gone.ID}); err != nil {
		t.Fatal(err)
	}
	sent(t, node, rec, kept.ID)
	if got := about(rec, gone.ID); got != before {
		t.Fatalf("received %d events of the unfollowed session after its unsubscription", got-before)
	}
}

// TestRouterRefollowWithinDelayCostsNothing: a topic followed again within
// the unfollow delay (a page reload) costs no SSUBSCRIBE and no SUNSUBSCRIBE,
// and is not reported followed again.
func TestRouterRefollowWithinDelayCostsNothing(t *testing.T) {
	srv := redistest.Start(t)
	node := newBackend(t, srv, func(o *Options) { o.UnfollowDelay = 500 * time.Millisecond })
	rec := &recorder{}
	subscribe(t, node, rec)
	reload, control := newSession(t, "reload"), newSession(t, "control")
	followSessions(t, node, rec, reload.ID, control.ID)
	subs, unsubs := commandCalls(t, srv, "ssubscribe"), commandCalls(t, srv, "sunsubscribe")
	topic := sessionbridge.SessionTopic(reload.ID)

	node.Bus().Unfollow(topic)
	node.Bus().Unfollow(sessionbridge.SessionTopic(control.ID))
	node.Bus().Follow(topic)
	// The control channel going is the sign that the delay has passed and
	// the router has acted on it.
	eventually(t, 10*time.Second, "the control channel to be unsubscribed", func() bool {
		return shardSubscribers(t, srv, node.sessionChannel(control.ID)) == 0
	})
	if n := shardSubscribers(t, srv, node.sessionChannel(reload.ID)); n != 1 {
		t.Fatalf("subscribers of the re-followed channel = %d, want 1", n)
	}
	if got := commandCalls(t, srv, "ssubscribe") - subs; got != 0 {
		t.Fatalf("SSUBSCRIBE calls for a re-follow within the delay = %d, want 0", got)
	}
	if got := commandCalls(t, srv, "sunsubscribe") - unsubs; got != 1 {
		t.Fatalf("SUNSUBSCRIBE calls = %d, want 1 (the control channel's)", got)
	}
	if n := rec.followedCount(topic); n != 1 {
		t.Fatalf("the re-followed topic was reported %d times, want once", n)
	}
	before := about(rec, reload.ID)
	sent(t, node, rec, reload.ID)
	if got := about(rec, reload.ID); got != before+1 {
		t.Fatalf("events of the re-followed session = %d, want 1", got-before)
	}
}

// killShardSubscriber kills, on srv, the connections that hold shard
// subscriptions (CLIENT LIST reports ssub=), and returns how many.
func killShardSubscriber(t testing.TB, srv *redistest.Server) int {
	t.Helper()
	list, _ := srv.MustDo("CLIENT", "LIST").(string)
	killed := 0
	for line := range strings.Lines(list) {
		var id, ssub string
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "id="); ok {
				id = v
			}
			if v, ok := strings.CutPrefix(f, "ssub="); ok {
				ssub = v
			}
		}
		if id != "" && ssub != "" && ssub != "0" {
			srv.MustDo("CLIENT", "KILL", "ID", id)
			killed++
		}
	}
	return killed
}

// TestRouterResubscribesKilledConnection: the shard subscription connection
// killed, the router subscribes again and reports every topic it covered
// followed again (the handler re-validates them), without a global gap, and
// events flow again.
func TestRouterResubscribesKilledConnection(t *testing.T) {
	srv := redistest.Start(t)
	m := newCountingMetrics()
	node := newBackend(t, srv, func(o *Options) { o.Metrics = m })
	rec := &recorder{}
	subscribe(t, node, rec)
	var topics []sessionbridge.Topic
	var ids []string
	for i := range 5 {
		s := newSession(t, "killed-"+strconv.Itoa(i))
		ids = append(ids, s.ID)
		topics = append(topics, sessionbridge.SessionTopic(s.ID), sessionbridge.UserTopic(s.UserID))
	}
	follow(t, node, rec, topics...)
	counts := rec.followCounts(topics)
	gaps := rec.gapCount()

	if n := killShardSubscriber(t, srv); n != 1 {
		t.Fatalf("killed %d shard subscription connections, want 1", n)
	}
	eventually(t, 10*time.Second, "every topic reported followed again", func() bool { return rec.refollowed(counts) })
	if got := m.get(func(m *countingMetrics) int { return m.reconnects }); got < 1 {
		t.Fatalf("reconnects = %d, want >= 1", got)
	}
	if got := rec.gapCount(); got != gaps {
		t.Fatalf("gaps = %d after the shard connection's loss, want %d: HandleFollowed covers it", got, gaps)
	}
	for _, id := range ids {
		if n := shardSubscribers(t, srv, node.sessionChannel(id)); n != 1 {
			t.Fatalf("subscribers of %s after the kill = %d, want 1", id, n)
		}
		sent(t, node, rec, id)
	}
}

// TestRouterBoundsSubscribeCommands: thousands of sessions followed at once
// are subscribed in commands of at most 256 channels each. The slow log,
// set to record every command, shows each SSUBSCRIBE's size.
func TestRouterBoundsSubscribeCommands(t *testing.T) {
	srv := redistest.Start(t, "--slowlog-log-slower-than", "0", "--slowlog-max-len", "100000")
	node := newBackend(t, srv)
	rec := &recorder{}
	subscribe(t, node, rec)
	const n = 3000
	calls := commandCalls(t, srv, "ssubscribe")
	srv.MustDo("SLOWLOG", "RESET")
	topics := make([]sessionbridge.Topic, n)
	for i := range topics {
		topics[i] = sessionbridge.SessionTopic(sessionIDIn(t, fmt.Sprintf("%02x", i%256)))
	}
	follow(t, node, rec, topics...)

	if got, least := commandCalls(t, srv, "ssubscribe")-calls, int64((n+channelsPerCommand-1)/channelsPerCommand); got < least {
		t.Fatalf("SSUBSCRIBE calls = %d for %d channels, want at least %d", got, n, least)
	}
	entries, _ := srv.MustDo("SLOWLOG", "GET", "-1").([]any)
	total, largest := 0, 0
	for _, e := range entries {
		f, _ := e.([]any)
		if len(f) < 4 {
			t.Fatalf("slow log entry %v", e)
		}
		args, _ := f[3].([]any)
		if len(args) == 0 || !strings.EqualFold(fmt.Sprint(args[0]), "ssubscribe") {
			continue
		}
		// The slow log keeps 31 arguments and says how many more there
		// were.
		argc := len(args)
		var more int
		if _, err := fmt.Sscanf(fmt.Sprint(args[len(args)-1]), "... (%d more arguments)", &more); err == nil {
			argc = len(args) - 1 + more
		}
		total += argc - 1
		largest = max(largest, argc-1)
	}
	if total != n || largest > channelsPerCommand {
		t.Fatalf("SSUBSCRIBE commands carried %d channels, the largest %d; want %d, at most %d", total, largest, n, channelsPerCommand)
	}
	v, _ := srv.MustDo("PUBSUB", "SHARDCHANNELS", node.prefix+"*").([]any)
	if len(v) != n {
		t.Fatalf("PUBSUB SHARDCHANNELS = %d channels, want %d", len(v), n)
	}
}

// newClusterBackend is newBackend on a MultiCluster.
func newClusterBackend(t testing.TB, c *redistest.MultiCluster, mod ...func(*Options)) *Backend {
	t.Helper()
	return newBackend(t, c.Nodes()[0], append([]func(*Options){func(o *Options) { o.URL = c.URL() }}, mod...)...)
}

// keepUpdating writes new versions of s until ctx ends or s is gone, riding
// out failures (a failover, a moved slot) by reading the session again. The
// returned channel is closed when it has stopped.
func keepUpdating(ctx context.Context, b *Backend, s *sessionbridge.Session) <-chan struct{} {
	done := make(chan struct{})
	cur := s.Clone()
	go func() {
		defer close(done)
		pace := time.NewTicker(5 * time.Millisecond)
		defer pace.Stop()
		for {
			err := bump(ctx, b, cur)
			if errors.Is(err, sessionbridge.ErrNotFound) {
				return
			}
			if err != nil {
				// The outcome may be unknown: learn the version that stands.
				got, gerr := b.Store().Get(ctx, cur.ID)
				if errors.Is(gerr, sessionbridge.ErrNotFound) {
					return
				}
				if gerr == nil {
					cur = got
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-pace.C:
			}
		}
	}()
	return done
}

// updatedVersions returns the versions of the updated events of session id
// that rec received, in the order it received them.
func updatedVersions(rec *recorder, id string) []uint64 {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []uint64
	for _, ev := range rec.events {
		if ev.Type == sessionbridge.EventUpdated && ev.SessionID == id {
			out = append(out, ev.Version)
		}
	}
	return out
}

// inOrder checks that the updated events of session id reached rec in
// strictly increasing versions, and returns how many there were.
func inOrder(t testing.TB, rec *recorder, id string) int {
	t.Helper()
	vs := updatedVersions(rec, id)
	for i := 1; i < len(vs); i++ {
		if vs[i] <= vs[i-1] {
			t.Errorf("session %s: updated event of version %d received after version %d (versions %v)", id, vs[i], vs[i-1], vs)
			break
		}
	}
	return len(vs)
}

// lastVersion returns the highest version among the updated events of
// session id that rec received.
func lastVersion(rec *recorder, id string) uint64 {
	var top uint64
	for _, v := range updatedVersions(rec, id) {
		top = max(top, v)
	}
	return top
}

// revokeOnCluster deletes session id, trying again while the cluster
// settles, and waits until rec receives its deleted event.
func revokeOnCluster(t testing.TB, b *Backend, rec *recorder, id string) {
	t.Helper()
	eventually(t, 30*time.Second, "the revocation of "+id+" to be written", func() bool {
		_, err := b.Store().Delete(bg, id, sessionbridge.Event{Reason: sessionbridge.ReasonRevoked})
		// A try whose reply was lost may have deleted it.
		return err == nil || errors.Is(err, sessionbridge.ErrNotFound)
	})
	eventually(t, 10*time.Second, "the deleted event of "+id, func() bool {
		_, ok := rec.find(func(ev sessionbridge.Event) bool { return ev.Type == sessionbridge.EventDeleted && ev.SessionID == id })
		return ok
	})
}

// TestRouterOnMultiCluster runs the router against three masters with a
// replica each: the events of followed sessions on every master arrive and
// those of the others do not; a master killed and its replica promoted, the
// router subscribes on the new master and reports the topics again; a slot
// moved by resharding (Redis then unsubscribes its channels), the same on
// the new owner; a revocation after each arrives; and all the while the
// updates of every session arrive in version order.
func TestRouterOnMultiCluster(t *testing.T) {
	c := redistest.StartMultiCluster(t, 3, 1)
	m := newCountingMetrics()
	node := newClusterBackend(t, c, func(o *Options) { o.Metrics = m })
	writer := newClusterBackend(t, c, func(o *Options) { o.Prefix = node.prefix })
	rec := &recorder{}
	subscribe(t, node, rec)

	masters := c.MasterIDs()
	tp, err := c.Topology()
	if err != nil {
		t.Fatal(err)
	}
	slotOf := func(shard string) int { return int(node.router.tagSlot[shard]) }
	byMaster := map[string][]string{}
	lowest := "00"
	for i := range 256 {
		sh := fmt.Sprintf("%02x", i)
		n, ok := tp.OwnerOf(slotOf(sh))
		if !ok {
			t.Fatalf("no master serves slot %d", slotOf(sh))
		}
		byMaster[n.ID] = append(byMaster[n.ID], sh)
		if slotOf(sh) < slotOf(lowest) {
			lowest = sh
		}
	}
	// The session of the lowest slot is the one a reshard of the first
	// master's first slots moves.
	moved := sessionIn(t, lowest)
	followed := []*sessionbridge.Session{moved}
	var others []*sessionbridge.Session
	onMaster := map[string][]*sessionbridge.Session{}
	for _, id := range masters {
		var shards []string
		for _, sh := range byMaster[id] {
			if sh != lowest {
				shards = append(shards, sh)
			}
		}
		if len(shards) < 3 {
			t.Fatalf("master %s serves %d shards", id, len(shards))
		}
		a, b := sessionIn(t, shards[0]), sessionIn(t, shards[1])
		followed = append(followed, a, b)
		onMaster[id] = []*sessionbridge.Session{a, b}
		others = append(others, sessionIn(t, shards[2]))
	}
	var followedIDs []string
	for _, s := range append(append([]*sessionbridge.Session{}, followed...), others...) {
		if err := writer.Store().Create(bg, s, sessionbridge.Event{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range followed {
		followedIDs = append(followedIDs, s.ID)
	}
	followSessions(t, node, rec, followedIDs...)

	// Every master: the unfollowed session's update first, then the
	// followed ones', then a marker on each followed session.
	for _, s := range append(append([]*sessionbridge.Session{}, others...), followed...) {
		if err := bump(bg, writer, s); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range followed {
		sent(t, writer, rec, s.ID)
		if v := updatedVersions(rec, s.ID); len(v) != 1 || v[0] != 2 {
			t.Errorf("followed session %s: updated versions %v, want [2]", s.ID, v)
		}
		if n := shardSubscribers(t, c.MasterOf(node.sessionChannel(s.ID)), node.sessionChannel(s.ID)); n != 1 {
			t.Errorf("subscribers of followed %s on its master = %d, want 1", s.ID, n)
		}
	}
	for _, s := range others {
		if n := about(rec, s.ID); n != 0 {
			t.Errorf("received %d events of unfollowed session %s", n, s.ID)
		}
		if n := shardSubscribers(t, c.MasterOf(node.sessionChannel(s.ID)), node.sessionChannel(s.ID)); n != 0 {
			t.Errorf("subscribers of unfollowed %s on its master = %d, want 0", s.ID, n)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	ctx, cancel := context.WithCancel(bg)
	var writers []<-chan struct{}
	for _, s := range followed {
		writers = append(writers, keepUpdating(ctx, writer, s))
	}
	stopWriters := func() {
		cancel()
		for _, w := range writers {
			<-w
		}
	}
	defer stopWriters()
	eventually(t, 10*time.Second, "updates of every followed session", func() bool {
		for _, s := range followed {
			if lastVersion(rec, s.ID) < 4 {
				return false
			}
		}
		return true
	})

	// A master killed under traffic, its replica promoted.
	victim := onMaster[masters[1]][0]
	var victimTopics []sessionbridge.Topic
	for _, s := range onMaster[masters[1]] {
		victimTopics = append(victimTopics, sessionbridge.SessionTopic(s.ID))
	}
	counts := rec.followCounts(victimTopics)
	_, deadID := c.KillMasterOf(node.sessionChannel(victim.ID))
	promoted := c.WaitPromoted(deadID)
	eventually(t, 30*time.Second, "the failed-over master's sessions reported followed again", func() bool { return rec.refollowed(counts) })
	for _, s := range onMaster[masters[1]] {
		if n := shardSubscribers(t, promoted, node.sessionChannel(s.ID)); n != 1 {
			t.Fatalf("subscribers of %s on the promoted master = %d, want 1", s.ID, n)
		}
	}
	revokeOnCluster(t, writer, rec, victim.ID)
	other := onMaster[masters[1]][1]
	since := lastVersion(rec, other.ID)
	eventually(t, 30*time.Second, "updates from the promoted master", func() bool { return lastVersion(rec, other.ID) > since+3 })

	// A slot moved: its old owner unsubscribes the node from its channels.
	ch := node.sessionChannel(moved.ID)
	from := c.MasterOf(ch)
	fromID, _ := from.MustDo("CLUSTER", "MYID").(string)
	var to string
	for _, id := range c.MasterIDs() {
		if id != fromID {
			to = id
			break
		}
	}
	movedTopic := sessionbridge.SessionTopic(moved.ID)
	reported := rec.followedCount(movedTopic)
	reconnects := m.get(func(m *countingMetrics) int { return m.reconnects })
	c.Reshard(fromID, to, slotOf(lowest)+1)
	owner := c.MasterOf(ch)
	if owner == from {
		t.Fatalf("the reshard of %d slots did not move slot %d", slotOf(lowest)+1, slotOf(lowest))
	}
	eventually(t, 30*time.Second, "the moved session reported followed again", func() bool { return rec.followedCount(movedTopic) > reported })
	if n := shardSubscribers(t, owner, ch); n != 1 {
		t.Fatalf("subscribers of the moved channel on its new master = %d, want 1", n)
	}
	if n := shardSubscribers(t, from, ch); n != 0 {
		t.Fatalf("subscribers of the moved channel on its old master = %d, want 0", n)
	}
	if got := m.get(func(m *countingMetrics) int { return m.reconnects }); got != reconnects {
		t.Fatalf("reconnects went from %d to %d over the reshard: the moved channel should be re-subscribed without a new connection", reconnects, got)
	}
	since = lastVersion(rec, moved.ID)
	eventually(t, 30*time.Second, "updates of the moved session from its new master", func() bool { return lastVersion(rec, moved.ID) > since+3 })
	revokeOnCluster(t, writer, rec, moved.ID)

	stopWriters()
	for _, s := range followed {
		if n := inOrder(t, rec, s.ID); n < 4 {
			t.Errorf("session %s: %d updated events, want several", s.ID, n)
		}
	}
}

// TestRouterKeepsVersionOrderUnderFailover updates one session without
// pause while its master is killed and its replica promoted: the updated
// events the node's handler receives never go back in version, and updates
// written after the failover arrive.
func TestRouterKeepsVersionOrderUnderFailover(t *testing.T) {
	c := redistest.StartMultiCluster(t, 3, 1)
	node := newClusterBackend(t, c)
	writer := newClusterBackend(t, c, func(o *Options) { o.Prefix = node.prefix })
	rec := &recorder{}
	subscribe(t, node, rec)
	s := newSession(t, "ordered")
	if err := writer.Store().Create(bg, s, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	topic := sessionbridge.SessionTopic(s.ID)
	follow(t, node, rec, topic)

	ctx, cancel := context.WithCancel(bg)
	done := keepUpdating(ctx, writer, s)
	defer func() {
		cancel()
		<-done
	}()
	eventually(t, 10*time.Second, "updates before the failover", func() bool { return len(updatedVersions(rec, s.ID)) >= 20 })
	reported := rec.followedCount(topic)
	_, id := c.KillMasterOf(node.sessionChannel(s.ID))
	c.WaitPromoted(id)
	eventually(t, 30*time.Second, "the session reported followed again", func() bool { return rec.followedCount(topic) > reported })
	since := lastVersion(rec, s.ID)
	eventually(t, 30*time.Second, "updates after the failover", func() bool { return lastVersion(rec, s.ID) >= since+20 })
	cancel()
	<-done
	n := inOrder(t, rec, s.ID)
	t.Logf("%d updated events received in version order, last version %d", n, lastVersion(rec, s.ID))
}
