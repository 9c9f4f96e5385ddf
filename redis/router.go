package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/strictjson"
)

// Bounds of the router's work.
const (
	// DefaultUnfollowDelay is how long a session or user channel stays
	// subscribed after its last local socket left, so that a page reload
	// costs no SUNSUBSCRIBE and SSUBSCRIBE.
	DefaultUnfollowDelay = 10 * time.Second
	// channelsPerCommand bounds the channels of one SSUBSCRIBE or
	// SUNSUBSCRIBE, so that no command grows with a node's sockets.
	channelsPerCommand = 256
	// followGather is how long the router waits after a follow for more
	// before it subscribes. A change to a new socket's session made in that
	// time reaches the socket through the re-validation that follows the
	// subscription, a few milliseconds late; nothing is lost.
	followGather = 3 * time.Millisecond
)

type routeState uint8

const (
	routeIdle          routeState = iota // not subscribed, no command in flight
	routeSubscribing                     // SSUBSCRIBE sent
	routeSubscribed                      // confirmed on conn
	routeUnsubscribing                   // SUNSUBSCRIBE sent
)

// route is one followed shard channel.
type route struct {
	topic sessionbridge.Topic
	slot  uint16
	refs  int
	// idleSince is when refs dropped to zero.
	idleSince time.Time
	state     routeState
	conn      *shardConn
	// queued: the channel is in router.pending.
	queued bool
}

// shardConn is the dedicated connection that holds the shard subscriptions
// of one Redis master ("" outside Cluster: the one server).
type shardConn struct {
	addr    string
	dc      rueidis.DedicatedClient
	release func()
}

// router keeps this node's shard subscriptions: the session and user
// channels the gateway follows, on one dedicated connection per Redis
// master, subscribed in batches. It runs while at least one Subscribe is in
// progress and hands what it receives to every Subscribe's delivery.
type router struct {
	b       *Backend
	cluster bool

	mu     sync.Mutex
	routes map[string]*route // by channel
	// pending lists the channels followed while not subscribed since the
	// last flush, so that a flush after a follow looks at them alone and
	// not at every route: in a connect storm a flush comes every few
	// milliseconds, and a scan of all routes would cost each connect time
	// in proportion to the node's sockets. rescan asks the next flush for
	// a scan of every route: set wherever a route returns to routeIdle
	// other than by a follow (a failed command, a lost connection, a moved
	// slot), and done on every tick anyway, which also finds the channels
	// whose linger after their last unfollow has passed.
	pending  []string
	rescan   bool
	handlers []*delivery
	// deliver is handlers as the readers see it: replaced, never changed,
	// so that a received event costs no lock and no copy.
	deliver atomic.Pointer[[]*delivery]
	conns   map[string]*shardConn // by master address
	slots   map[uint16]string     // slot -> master address, as last read
	// slotsFresh: slots is complete and no redirect or moved channel
	// was seen since it was read; else the next flush reads it again.
	slotsFresh bool
	tagSlot    map[string]uint16 // hash tag (shard) -> slot, in Cluster mode
	running    bool
	stop       context.CancelFunc
	stopped    chan struct{}
	kick       chan struct{}
}

func newRouter(b *Backend) *router {
	r := &router{
		b:       b,
		cluster: b.client.Mode() == rueidis.ClientModeCluster,
		routes:  map[string]*route{},
		conns:   map[string]*shardConn{},
		kick:    make(chan struct{}, 1),
	}
	if r.cluster {
		r.tagSlot = make(map[string]uint16, len(shards))
		for _, sh := range shards {
			cmd := b.client.B().Spublish().Channel("{" + sh + "}").Message("").Build()
			r.tagSlot[sh] = cmd.Slot()
		}
	}
	return r
}

func (r *router) signal() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// follow counts one more interest in topic.
func (r *router) follow(t sessionbridge.Topic) {
	ch := r.b.topicChannel(t)
	if ch == "" {
		return
	}
	r.mu.Lock()
	rt := r.routes[ch]
	if rt == nil {
		rt = &route{topic: t}
		if r.cluster {
			rt.slot = r.tagSlot[shardOfTopic(t)]
		}
		r.routes[ch] = rt
	}
	rt.refs++
	r.queueLocked(ch, rt)
	wake := rt.state == routeIdle && r.running
	r.mu.Unlock()
	if wake {
		r.signal()
	}
}

// queueLocked adds a route that waits for its SSUBSCRIBE to the pending
// channels, once; the caller holds r.mu.
func (r *router) queueLocked(ch string, rt *route) {
	if rt.state == routeIdle && rt.refs > 0 && !rt.queued {
		rt.queued = true
		r.pending = append(r.pending, ch)
	}
}

// unfollow counts one interest in topic less; the channel is unsubscribed
// DefaultUnfollowDelay after the count reaches zero.
func (r *router) unfollow(t sessionbridge.Topic) {
	ch := r.b.topicChannel(t)
	if ch == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.routes[ch]
	if rt == nil || rt.refs == 0 {
		return
	}
	rt.refs--
	if rt.refs == 0 {
		rt.idleSince = time.Now()
		if rt.state == routeIdle {
			delete(r.routes, ch)
		}
	}
}

func shardOfTopic(t sessionbridge.Topic) string {
	if t.Kind == sessionbridge.TopicUser {
		return sessionbridge.Shard(t.ID)
	}
	return sessionbridge.ShardOfID(t.ID)
}

// attach adds a Subscribe's delivery and starts the router if it is the
// first; detach removes it and stops the router with the last one.
func (r *router) attach(d *delivery) {
	r.mu.Lock()
	hs := append(slices.Clone(r.handlers), d)
	r.handlers = hs
	r.deliver.Store(&hs)
	start := !r.running
	if start {
		r.running = true
		ctx, cancel := context.WithCancel(context.Background())
		r.stop = cancel
		r.stopped = make(chan struct{})
		go r.run(ctx, r.stopped)
	}
	r.mu.Unlock()
	r.signal()
}

func (r *router) detach(d *delivery) {
	r.mu.Lock()
	hs := slices.DeleteFunc(slices.Clone(r.handlers), func(x *delivery) bool { return x == d })
	r.handlers = hs
	r.deliver.Store(&hs)
	var stop context.CancelFunc
	var stopped chan struct{}
	if len(r.handlers) == 0 && r.running {
		r.running = false
		stop, stopped = r.stop, r.stopped
	}
	r.mu.Unlock()
	if stop != nil {
		stop()
		<-stopped
	}
}

// run subscribes and unsubscribes in batches until ctx ends, then closes
// its connections and forgets what was subscribed.
func (r *router) run(ctx context.Context, stopped chan struct{}) {
	defer close(stopped)
	defer r.closeAll()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		full := false
		select {
		case <-ctx.Done():
			return
		case <-r.b.done:
			return
		case <-r.kick:
			// Gather the follows of the sockets connecting meanwhile, so
			// that a connect storm costs a few commands a batch, not a
			// command per socket.
			gather := time.NewTimer(followGather)
			select {
			case <-ctx.Done():
				gather.Stop()
				return
			case <-gather.C:
			}
		case <-tick.C:
			full = true
		}
		// A failed flush retries after its back-off only: the failure
		// itself kicks (a dropped connection, a forgotten slot map), and
		// waiting for kicks here would retry at once, in a busy loop
		// against a master that is down.
		backoff := minBackoff
		for {
			err := r.flush(ctx, full)
			if err == nil {
				break
			}
			full = true
			if ctx.Err() != nil {
				return
			}
			r.b.log.Warn("redis: shard subscriptions; retrying", "err", err, "retry_in", backoff)
			retry := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				retry.Stop()
				return
			case <-r.b.done:
				retry.Stop()
				return
			case <-retry.C:
			}
			backoff = min(backoff*2, maxBackoff)
		}
	}
}

// batch is the work of one flush on one connection.
type batch struct {
	sub, unsub []string // channels
	bySlotSub  map[uint16][]string
	bySlotUn   map[uint16][]string
}

// flush sends the SSUBSCRIBEs and SUNSUBSCRIBEs that the routes want, one
// pipelined round trip per master, and tells the handlers which topics are
// now followed. It looks at the pending channels only, unless full or a
// rescan is due: then at every route.
func (r *router) flush(ctx context.Context, full bool) error {
	// A slot without a master (a shard down) holds up only its own
	// channels: the others are subscribed, and the flush is tried again.
	var slotErr error
	if r.cluster {
		if slotErr = r.loadSlots(ctx); slotErr != nil && !r.haveSlots() {
			return slotErr
		}
	}
	now := time.Now()
	linger := r.b.opts.UnfollowDelay
	work := map[string]*batch{}
	get := func(addr string) *batch {
		w := work[addr]
		if w == nil {
			w = &batch{bySlotSub: map[uint16][]string{}, bySlotUn: map[uint16][]string{}}
			work[addr] = w
		}
		return w
	}
	plan := func(ch string, rt *route) {
		switch {
		case rt.state == routeIdle && rt.refs > 0:
			addr, ok := r.addrOf(rt.slot)
			if !ok {
				// Tried again by the next full flush.
				return
			}
			w := get(addr)
			w.sub = append(w.sub, ch)
			w.bySlotSub[rt.slot] = append(w.bySlotSub[rt.slot], ch)
			rt.state = routeSubscribing
		case rt.state == routeSubscribed && rt.refs == 0 && now.Sub(rt.idleSince) >= linger:
			w := get(rt.conn.addr)
			w.unsub = append(w.unsub, ch)
			w.bySlotUn[rt.slot] = append(w.bySlotUn[rt.slot], ch)
			rt.state = routeUnsubscribing
		case rt.state == routeIdle && rt.refs == 0:
			delete(r.routes, ch)
		}
	}
	r.mu.Lock()
	pending := r.pending
	r.pending = nil
	for _, ch := range pending {
		if rt := r.routes[ch]; rt != nil {
			rt.queued = false
			if !full && !r.rescan {
				plan(ch, rt)
			}
		}
	}
	if full || r.rescan {
		r.rescan = false
		for ch, rt := range r.routes {
			plan(ch, rt)
		}
	}
	// Keep the array for the next storm's follows.
	clear(pending)
	r.pending = pending[:0]
	r.mu.Unlock()
	if len(work) == 0 {
		return slotErr
	}
	errs := make(chan error, len(work)+1)
	errs <- slotErr
	var wg sync.WaitGroup
	for addr, w := range work {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- r.send(ctx, addr, w)
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// addrOf returns the master of slot; the caller holds r.mu.
func (r *router) addrOf(slot uint16) (string, bool) {
	if !r.cluster {
		return "", true
	}
	addr, ok := r.slots[slot]
	return addr, ok
}

// send runs one batch on the connection to addr.
func (r *router) send(ctx context.Context, addr string, w *batch) error {
	sc, err := r.conn(addr)
	if err == nil {
		err = r.exec(ctx, sc, w)
	}
	r.mu.Lock()
	var followed []sessionbridge.Topic
	for _, ch := range w.sub {
		rt := r.routes[ch]
		if rt == nil || rt.state != routeSubscribing {
			continue
		}
		if err != nil {
			rt.state = routeIdle
			r.rescan = true
			continue
		}
		rt.state, rt.conn = routeSubscribed, sc
		followed = append(followed, rt.topic)
	}
	for _, ch := range w.unsub {
		rt := r.routes[ch]
		if rt == nil || rt.state != routeUnsubscribing {
			continue
		}
		switch {
		case err != nil:
			// Still subscribed as far as we know; tried again later.
			rt.state = routeSubscribed
		case rt.refs > 0:
			// Followed again while the SUNSUBSCRIBE was in flight.
			rt.state, rt.conn = routeIdle, nil
			r.queueLocked(ch, rt)
		default:
			delete(r.routes, ch)
		}
	}
	handlers := slices.Clone(r.handlers)
	r.mu.Unlock()
	if len(followed) > 0 {
		for _, d := range handlers {
			d.followed(followed)
		}
	}
	if err != nil {
		r.signal()
	}
	return err
}

// exec sends the batch's commands, then a PING: its reply comes after every
// confirmation, so that when it returns the subscriptions are in place.
func (r *router) exec(ctx context.Context, sc *shardConn, w *batch) error {
	dc := sc.dc
	var cmds rueidis.Commands
	for _, chs := range w.bySlotSub {
		for c := range slices.Chunk(chs, channelsPerCommand) {
			cmds = append(cmds, dc.B().Ssubscribe().Channel(c...).Build())
		}
	}
	for _, chs := range w.bySlotUn {
		for c := range slices.Chunk(chs, channelsPerCommand) {
			cmds = append(cmds, dc.B().Sunsubscribe().Channel(c...).Build())
		}
	}
	cmds = append(cmds, dc.B().Ping().Build())
	ctx, cancel := r.b.opCtx(ctx)
	defer cancel()
	for _, res := range dc.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			if re, ok := rueidis.IsRedisErr(err); ok {
				// A slot moved (MOVED), or the cluster is changing: read the
				// slots again before the next try.
				_, moved := re.IsMoved()
				_, ask := re.IsAsk()
				if moved || ask || re.IsClusterDown() || re.IsTryAgain() {
					r.forgetSlots()
				}
			} else {
				r.drop(sc, err)
			}
			return r.b.fail("shard_subscribe", err)
		}
	}
	return nil
}

// conn returns the subscription connection to addr, dialing it if needed.
func (r *router) conn(addr string) (*shardConn, error) {
	r.mu.Lock()
	sc := r.conns[addr]
	r.mu.Unlock()
	if sc != nil {
		return sc, nil
	}
	var client rueidis.Client = r.b.client
	if r.cluster {
		client = r.b.client.Nodes()[addr]
		if client == nil {
			// The client has not met this master yet (a failover or a new
			// shard): a command to one of its slots teaches it.
			r.forgetSlots()
			return nil, fmt.Errorf("redis: shard subscriptions: unknown master %s: %w", addr, sessionbridge.ErrUnavailable)
		}
	}
	dc, release := client.Dedicate()
	sc = &shardConn{addr: addr, dc: dc, release: release}
	wait := dc.SetPubSubHooks(rueidis.PubSubHooks{
		OnMessage:      r.receive,
		OnSubscription: func(s rueidis.PubSubSubscription) { r.onSubscription(sc, s) },
	})
	r.mu.Lock()
	if other := r.conns[addr]; other != nil {
		r.mu.Unlock()
		dc.Close()
		release()
		return other, nil
	}
	r.conns[addr] = sc
	r.mu.Unlock()
	go func() {
		err := <-wait
		if err == nil {
			err = errors.New("connection closed")
		}
		r.drop(sc, err)
	}()
	return sc, nil
}

// drop forgets a connection that failed: every route on it must be
// subscribed again, and the handlers re-validate it then.
func (r *router) drop(sc *shardConn, err error) {
	r.mu.Lock()
	if r.conns[sc.addr] != sc {
		r.mu.Unlock()
		return
	}
	delete(r.conns, sc.addr)
	lost := 0
	for ch, rt := range r.routes {
		if rt.conn != sc {
			continue
		}
		rt.conn = nil
		lost++
		if rt.refs == 0 {
			delete(r.routes, ch)
			continue
		}
		rt.state = routeIdle
		r.rescan = true
	}
	running := r.running
	r.mu.Unlock()
	sc.dc.Close()
	sc.release()
	if running && !r.b.closed.Load() {
		r.b.metrics.Reconnect()
		r.b.log.Warn("redis: shard subscription connection lost; subscribing again", "addr", sc.addr, "channels", lost, "err", err)
		r.forgetSlots()
		r.signal()
	}
}

// onSubscription runs on the connection's reader. An SUNSUBSCRIBE that this
// node did not ask for is Redis moving the channel's slot to another master:
// the route is subscribed again there.
func (r *router) onSubscription(sc *shardConn, s rueidis.PubSubSubscription) {
	if s.Kind != "sunsubscribe" {
		return
	}
	r.mu.Lock()
	rt := r.routes[s.Channel]
	moved := rt != nil && rt.conn == sc && rt.state == routeSubscribed
	if moved {
		rt.state, rt.conn = routeIdle, nil
		if rt.refs == 0 {
			delete(r.routes, s.Channel)
		}
		r.rescan = true
		r.slotsFresh = false
	}
	r.mu.Unlock()
	if moved {
		r.signal()
	}
}

// receive decodes a shard channel message once and hands it to every
// handler.
func (r *router) receive(m rueidis.PubSubMessage) {
	var te typedEvent
	// Strict like every input; unknown members are skipped, so that a newer
	// node's events still decode.
	err := strictjson.DecodeOpen([]byte(m.Message), &te)
	if err == nil && (!te.Type.Known() || te.Type.IsKey()) {
		err = fmt.Errorf("unexpected event type %q", te.Type)
	}
	if err == nil && !r.b.onItsChannel(m.Channel, te.Event) {
		// An event about another session or user than its channel's
		// would act on sockets nobody subscribed it for.
		err = errors.New("event names another session or user than its channel")
	}
	var handlers []*delivery
	if p := r.deliver.Load(); p != nil {
		handlers = *p
	}
	if err != nil {
		r.b.undecodable(m, err)
		// It may have been a revocation: have the handlers re-validate.
		for _, d := range handlers {
			d.signalGap()
		}
		return
	}
	ev := te.Event
	ev.Type = te.Type
	r.b.noteReceived(ev)
	for _, d := range handlers {
		d.enqueue(ev)
	}
}

func (r *router) haveSlots() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.slots) > 0
}

// forgetSlots has the next flush read the slot map again.
func (r *router) forgetSlots() {
	r.mu.Lock()
	r.slotsFresh = false
	r.mu.Unlock()
}

// loadSlots reads which master serves each of the 256 hash tags' slots.
func (r *router) loadSlots(ctx context.Context) error {
	r.mu.Lock()
	fresh := r.slotsFresh
	r.mu.Unlock()
	if fresh {
		return nil
	}
	ctx, cancel := r.b.opCtx(ctx)
	defer cancel()
	// Asked of one node directly, as the client itself does: a node that
	// does not know its own address (a one-node cluster) names itself with
	// an empty host, meaning the address the question was sent to.
	var (
		ranges []rueidis.RedisMessage
		asked  string
		err    = fmt.Errorf("redis: no cluster node known: %w", sessionbridge.ErrUnavailable)
	)
	for addr, c := range r.b.client.Nodes() {
		if ranges, err = c.Do(ctx, c.B().ClusterSlots().Build()).ToArray(); err == nil {
			asked = addr
			break
		}
	}
	if err != nil {
		return r.b.fail("cluster_slots", err)
	}
	askedHost, _, _ := net.SplitHostPort(asked)
	want := map[uint16]bool{}
	for _, s := range r.tagSlot {
		want[s] = true
	}
	slots := make(map[uint16]string, len(want))
	for _, rg := range ranges {
		f, err := rg.ToArray()
		if err != nil || len(f) < 3 {
			continue
		}
		lo, err1 := f[0].AsInt64()
		hi, err2 := f[1].AsInt64()
		node, err3 := f[2].ToArray()
		if errors.Join(err1, err2, err3) != nil || len(node) < 2 {
			continue
		}
		host, err1 := node[0].ToString()
		if node[0].IsNil() {
			host, err1 = "", nil // unknown endpoint: the node asked
		}
		port, err2 := node[1].AsInt64()
		if errors.Join(err1, err2) != nil || host == "?" {
			continue
		}
		if host == "" {
			host = askedHost
		}
		addr := net.JoinHostPort(host, strconv.FormatInt(port, 10))
		for s := range want {
			if int64(s) >= lo && int64(s) <= hi {
				slots[s] = addr
			}
		}
	}
	r.mu.Lock()
	r.slots = slots
	// Read again on the next flush until every slot has a master.
	r.slotsFresh = len(slots) == len(want)
	r.mu.Unlock()
	if len(slots) < len(want) {
		return fmt.Errorf("redis: shard subscriptions: %d of %d slots have no master: %w", len(want)-len(slots), len(want), sessionbridge.ErrUnavailable)
	}
	return nil
}

// closeAll closes every subscription connection; the routes stay, to be
// subscribed again by the next Subscribe.
func (r *router) closeAll() {
	r.mu.Lock()
	conns := r.conns
	r.conns = map[string]*shardConn{}
	for ch, rt := range r.routes {
		rt.conn = nil
		rt.state = routeIdle
		if rt.refs == 0 {
			delete(r.routes, ch)
		}
	}
	r.rescan = true
	r.mu.Unlock()
	for _, sc := range conns {
		sc.dc.Close()
		sc.release()
	}
}

// followedCount reports how many channels are subscribed, for metrics and
// tests.
func (r *router) followedCount() (subscribed, wanted int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rt := range r.routes {
		if rt.state == routeSubscribed {
			subscribed++
		}
		if rt.refs > 0 {
			wanted++
		}
	}
	return subscribed, wanted
}
