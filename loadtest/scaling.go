package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
)

// ScenarioScaling measures how session events spread over the nodes and the
// Redis servers: how many events each node receives against how many were
// published, what subscriptions cost Redis per connect and disconnect, the
// memory Redis spends on sessions, sockets and subscriptions, and
// cross-node revocation latency. It needs Config.RedisNodes and is run only
// when asked for.
const ScenarioScaling = "scaling"

// Defaults of the scaling scenario.
const (
	DefaultScalingSockets      = 8000
	DefaultScalingUpdates      = 2000
	DefaultScalingMessages     = 2000
	DefaultScalingTouches      = 2000
	DefaultScalingRevokes      = 500
	DefaultScalingSettle       = 60 * time.Second
	DefaultScalingIdle         = 5 * time.Second
	DefaultScalingCalibration  = 10000
	scalingQuiet               = 300 * time.Millisecond
	scalingSubscriptionsStable = time.Second
)

// ScalingConfig shapes the scaling scenario. Zero fields take their
// defaults.
type ScalingConfig struct {
	// Sockets is the number of sockets, spread round robin over every node,
	// each with its own session of its own user, created through the admin
	// API of the node that will hold the socket.
	Sockets int
	// Updates (admin PATCH), Messages (admin publish to the user), Touches
	// (a frame on a socket once its session is due for a touch) and Revokes
	// (admin DELETE, timed one at a time) are the events produced, each
	// through a node other than the one holding the socket.
	Updates, Messages, Touches, Revokes int
	// TouchInterval is the nodes' --touch-interval: the scenario waits that
	// long after the last write of the sessions before it sends the frames
	// that touch them. Default sessionbridge.DefaultTouchInterval.
	TouchInterval time.Duration
	// SettleTimeout bounds the waits for the Redis subscriptions to follow
	// the connects and the disconnects.
	SettleTimeout time.Duration
	// IdleWindow is the length of the idle phase, sockets open and no
	// events, that measures the background.
	IdleWindow time.Duration
	// CalibrationChannels is how many sharded channels the scenario
	// subscribes itself on each master, to measure the memory and time of
	// one subscription; negative: none.
	CalibrationChannels int
}

func (c ScalingConfig) withDefaults() (ScalingConfig, error) {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.Sockets, DefaultScalingSockets)
	def(&c.Updates, DefaultScalingUpdates)
	def(&c.Messages, DefaultScalingMessages)
	def(&c.Touches, DefaultScalingTouches)
	def(&c.Revokes, DefaultScalingRevokes)
	def(&c.CalibrationChannels, DefaultScalingCalibration)
	if c.TouchInterval == 0 {
		c.TouchInterval = sb.DefaultTouchInterval
	}
	if c.SettleTimeout == 0 {
		c.SettleTimeout = DefaultScalingSettle
	}
	if c.IdleWindow == 0 {
		c.IdleWindow = DefaultScalingIdle
	}
	switch {
	case c.Sockets < 0 || c.Sockets > MaxSockets:
		return c, fmt.Errorf("loadtest: scaling sockets must be between 1 and %d", MaxSockets)
	case c.Updates < 0 || c.Messages < 0 || c.Touches < 0 || c.Revokes < 0:
		return c, fmt.Errorf("loadtest: scaling counts must not be negative")
	case c.TouchInterval < 0 || c.SettleTimeout < 0 || c.IdleWindow < 0:
		return c, fmt.Errorf("loadtest: scaling durations must not be negative")
	}
	c.Touches = min(c.Touches, c.Sockets)
	c.Revokes = min(c.Revokes, c.Sockets)
	return c, nil
}

// ScalingResult is what the scaling scenario measured. The event phases
// are update, message, touch and revoke: the headline ratios are over
// them.
type ScalingResult struct {
	Nodes         []string `json:"nodes"`
	RedisServers  []string `json:"redis_servers"`
	Masters       int      `json:"masters"`
	Sockets       int      `json:"sockets"`
	Connected     int      `json:"connected"`
	TouchInterval float64  `json:"touch_interval_s"`
	// Phases in the order they ran: create, connect, idle, update,
	// message, touch, revoke, disconnect, delete (the remaining sessions, which no
	// socket holds any more).
	Phases []ScalingPhase `json:"phases"`
	// Revoke times each revocation from just before the admin DELETE on
	// one node to the 4401 close at the client of another node.
	Revoke *LatencyResult `json:"revoke,omitempty"`

	// EventsPublished is the number of events the nodes published in the
	// event phases; ReceivedPerNode what each node received from the bus
	// meanwhile, and RatioPerNode their quotient: 1 when every node
	// receives every event, 1/nodes when each receives only its share.
	EventsPublished float64   `json:"events_published"`
	ReceivedPerNode []float64 `json:"received_per_node"`
	RatioPerNode    []float64 `json:"ratio_per_node"`
	MaxRatio        float64   `json:"max_ratio"`
	MeanRatio       float64   `json:"mean_ratio"`
	// DeleteRatio is the mean ratio of the delete phase, events about
	// sessions that no node holds a socket of.
	DeleteRatio float64 `json:"delete_ratio"`
	// Subscribe and unsubscribe commands (plain, sharded and pattern,
	// summed over every Redis server) per socket connected and
	// disconnected, and the Redis time they took, in µs.
	SubscribesPerConnect       float64 `json:"subscribes_per_connect"`
	SubscribeUSPerConnect      float64 `json:"subscribe_us_per_connect"`
	UnsubscribesPerDisconnect  float64 `json:"unsubscribes_per_disconnect"`
	UnsubscribeUSPerDisconnect float64 `json:"unsubscribe_us_per_disconnect"`
	// Redis used_memory summed over the masters: before the sessions were
	// created, once they were, and once their sockets connected; and the
	// differences per session and per socket.
	RedisMemoryBefore    float64 `json:"redis_memory_before_bytes"`
	RedisMemorySessions  float64 `json:"redis_memory_sessions_bytes"`
	RedisMemoryConnected float64 `json:"redis_memory_connected_bytes"`
	MemoryPerSession     float64 `json:"redis_memory_per_session_bytes"`
	MemoryPerSocket      float64 `json:"redis_memory_per_socket_bytes"`
	// RedisIdleCPU is the CPU of every Redis server (user+sys, seconds a
	// second) in the idle phase: the cluster's background.
	RedisIdleCPU float64 `json:"redis_idle_cpu"`
	// RedisCPUPerEventUS is the CPU of every Redis server (user+sys) in
	// the event phases, less the idle background over their length, per
	// event published; BusMessagesPerEvent the
	// pub/sub messages the servers received over the cluster bus per event
	// published (a plain PUBLISH goes to every server of a Redis Cluster).
	RedisCPUPerEventUS  float64 `json:"redis_cpu_per_event_us"`
	BusMessagesPerEvent float64 `json:"bus_messages_per_event"`
	// NodeCPUPerEventUS is the process CPU of every node in the event
	// phases, less their idle background, per event published: the admin
	// call that made the event and its handling on every node that
	// received it.
	NodeCPUPerEventUS float64 `json:"node_cpu_per_event_us"`
	// Calibration is what one subscription costs this Redis.
	Calibration *SubscriptionCalibration `json:"calibration,omitempty"`
	Errors      Errors                   `json:"errors"`
}

// ScalingPhase is what happened on the nodes and the Redis servers during
// one phase of the scaling scenario: differences of counters read before
// and after it.
type ScalingPhase struct {
	Name    string  `json:"name"`
	Ops     int     `json:"ops"`
	Seconds float64 `json:"seconds"`
	// Published is the events the nodes published, by type, summed over
	// the nodes; Received the events each node received from the bus, by
	// type, in the order of ScalingResult.Nodes.
	Published map[string]float64   `json:"published"`
	Received  []map[string]float64 `json:"received"`
	// NodeCPUSeconds is the process CPU of each node.
	NodeCPUSeconds []float64 `json:"node_cpu_s"`
	// Touched is the session touches the nodes recorded.
	Touched float64       `json:"touched"`
	Redis   []RedisPhase  `json:"redis"`
	Totals  RedisPhaseSum `json:"redis_totals"`
}

// RedisPhase is one Redis server during a phase.
type RedisPhase struct {
	Addr string `json:"addr"`
	Role string `json:"role"`
	// Commands are the commands with calls in the phase (the tool's own
	// INFO and CLUSTER INFO left out).
	Commands         map[string]CommandStat `json:"commands"`
	UsedMemoryDelta  float64                `json:"used_memory_delta_bytes"`
	UsedMemoryAfter  float64                `json:"used_memory_after_bytes"`
	CPUSeconds       float64                `json:"cpu_s"`
	ChannelsAfter    float64                `json:"pubsub_channels_after"`
	ShardChannels    float64                `json:"pubsubshard_channels_after"`
	BusPublish       float64                `json:"bus_publish_received"`
	BusPublishShard  float64                `json:"bus_publishshard_received"`
	ConnectedClients float64                `json:"connected_clients_after"`
}

// RedisPhaseSum adds up the servers of a phase.
type RedisPhaseSum struct {
	Publish        CommandStat `json:"publish"`
	SPublish       CommandStat `json:"spublish"`
	Subscribe      CommandStat `json:"subscribe"`
	Unsubscribe    CommandStat `json:"unsubscribe"`
	CPUSeconds     float64     `json:"cpu_s"`
	BusMessages    float64     `json:"bus_messages"`
	MasterMemDelta float64     `json:"master_used_memory_delta_bytes"`
	Channels       float64     `json:"channels_after"`
}

// SubscriptionCalibration is the memory and time of subscriptions the
// scenario makes itself, with nothing else changing: Channels sharded
// channels on each master, then as many plain channels.
type SubscriptionCalibration struct {
	Channels int `json:"channels_per_master"`
	// Bytes of used_memory per subscription, the mean over the masters.
	BytesPerShardSubscription float64 `json:"bytes_per_shard_subscription"`
	BytesPerSubscription      float64 `json:"bytes_per_subscription"`
	// Redis time per channel subscribed, µs (SSUBSCRIBE with every channel
	// of one hash tag in one call).
	SSubscribeUSPerChannel float64 `json:"ssubscribe_us_per_channel"`
}

// The commands that subscribe and unsubscribe.
var (
	subscribeCmds   = []string{"subscribe", "ssubscribe", "psubscribe"}
	unsubscribeCmds = []string{"unsubscribe", "sunsubscribe", "punsubscribe"}
)

// scaling runs the scaling scenario.
func (r *runner) scaling(ctx context.Context) *ScalingResult {
	cfg := r.cfg.Scaling
	res := &ScalingResult{Nodes: r.all, RedisServers: r.cfg.RedisNodes, Sockets: cfg.Sockets, TouchInterval: cfg.TouchInterval.Seconds()}
	var errs errSink
	defer func() { res.Errors = errs.get() }()
	if len(r.cfg.RedisNodes) == 0 {
		errs.add(errors.New("no Redis servers given: the scaling scenario reads their INFO"))
		return res
	}
	m := &scaleMeter{r: r, errs: &errs}
	for _, addr := range r.cfg.RedisNodes {
		rc, err := dialRedis(ctx, addr, "", r.cfg.AllowRemote, r.cfg.OpTimeout)
		if err != nil {
			errs.add(err)
			m.close()
			return res
		}
		m.redis = append(m.redis, rc)
	}
	defer m.close()

	n := cfg.Sockets
	nodes := len(r.all)
	type sock struct {
		node    int
		id, tok string
		user    string
		conn    *wsConn
		gone    bool // revoked or deleted
	}
	socks := make([]sock, n)
	for i := range socks {
		socks[i].node = i % nodes
		socks[i].user = r.user("scale", i)
	}
	// other is the node that acts on a socket held by node i.
	other := func(i int) string { return r.all[(i+1)%nodes] }
	defer func() {
		forEach(context.Background(), n, r.cfg.Concurrency*4, 0, func(_ context.Context, i int) {
			if socks[i].conn != nil {
				socks[i].conn.Close(r.cfg.OpTimeout)
			}
		})
	}()

	before := m.snapshot(ctx)
	if before == nil {
		return res
	}
	for _, s := range before.redis {
		if s.role == "master" {
			res.Masters++
		}
	}

	created := m.phase(ctx, "create", before, func() (int, bool) {
		var ok atomic.Int64
		r.prog.set("scaling: create sessions", n)
		forEach(ctx, n, r.cfg.Concurrency, 0, func(ctx context.Context, i int) {
			cs, err := r.admin.createSession(ctx, r.all[socks[i].node], socks[i].user, nil, sessionTTL)
			r.prog.step(err)
			if err != nil {
				errs.add(err)
				return
			}
			socks[i].id, socks[i].tok = cs.ID, cs.Token
			ok.Add(1)
		})
		return int(ok.Load()), m.quiet(ctx)
	})
	if created == nil {
		return res
	}
	res.Phases = append(res.Phases, created.ScalingPhase)

	channelsBefore := created.after.channels()
	connected := m.phase(ctx, "connect", created.after, func() (int, bool) {
		var ok atomic.Int64
		r.prog.set("scaling: connect", n)
		forEach(ctx, n, r.cfg.Concurrency, r.cfg.ConnectRate, func(ctx context.Context, i int) {
			if socks[i].tok == "" {
				r.prog.step(errors.New("no session"))
				return
			}
			c, err := r.dial(ctx, r.all[socks[i].node], socks[i].tok)
			r.prog.step(err)
			if err != nil {
				errs.add(err)
				return
			}
			socks[i].conn = c
			ok.Add(1)
		})
		// Subscriptions may follow the sockets a little later: wait until
		// the number of channels stops moving.
		return int(ok.Load()), m.stableChannels(ctx, cfg.SettleTimeout)
	})
	if connected == nil {
		return res
	}
	res.Phases = append(res.Phases, connected.ScalingPhase)
	res.Connected = connected.Ops

	// live returns up to k sockets still open, from the first or the last.
	live := func(k int, fromEnd bool) []int {
		var out []int
		for j := range n {
			i := j
			if fromEnd {
				i = n - 1 - j
			}
			if len(out) == k {
				break
			}
			if socks[i].conn != nil && !socks[i].gone && !socks[i].conn.closed() {
				out = append(out, i)
			}
		}
		return out
	}

	last := connected.after
	idleFor := cfg.IdleWindow
	run := func(name string, fn func() (int, bool)) *measured {
		p := m.phase(ctx, name, last, fn)
		if p != nil {
			res.Phases = append(res.Phases, p.ScalingPhase)
			last = p.after
		}
		return p
	}
	var eventPhases []*measured
	add := func(p *measured) bool {
		if p == nil {
			return false
		}
		eventPhases = append(eventPhases, p)
		return true
	}

	// A window with the sockets open and nothing happening: the
	// background of the nodes and the servers (presence, expiry claims,
	// cluster bus), subtracted from the event phases' Redis CPU.
	idle := run("idle", func() (int, bool) {
		r.prog.set(fmt.Sprintf("scaling: idle %s", idleFor), 0)
		return 0, r.pause(ctx, idleFor)
	})
	if idle == nil {
		return res
	}

	// each runs call for every target through the admin API and counts
	// the calls that succeeded.
	each := func(name string, targets []int, call func(ctx context.Context, i, k int) error) func() (int, bool) {
		return func() (int, bool) {
			var ok atomic.Int64
			r.prog.set("scaling: "+name, len(targets))
			forEach(ctx, len(targets), r.cfg.Concurrency, 0, func(ctx context.Context, k int) {
				err := call(ctx, targets[k], k)
				r.prog.step(err)
				if err != nil {
					errs.add(err)
					return
				}
				ok.Add(1)
			})
			return int(ok.Load()), m.quiet(ctx)
		}
	}
	targets := live(cfg.Updates, false)
	if !add(run("update", each("update", targets, func(ctx context.Context, i, k int) error {
		_, err := r.admin.patchSession(ctx, other(i), socks[i].id, map[string]any{"scale": k + 1})
		return err
	}))) {
		return res
	}

	targets = live(cfg.Messages, false)
	if !add(run("message", each("message", targets, func(ctx context.Context, i, k int) error {
		return r.admin.publishToUser(ctx, other(i), socks[i].user, map[string]any{"scale": k + 1})
	}))) {
		return res
	}

	// A session is touched by the first frame after the touch interval
	// since its last write (its creation or an update above).
	r.prog.set(fmt.Sprintf("scaling: wait %s for the touch interval", cfg.TouchInterval), 0)
	if !r.pause(ctx, cfg.TouchInterval+cfg.TouchInterval/10+100*time.Millisecond) {
		return res
	}
	targets = live(cfg.Touches, false)
	if !add(run("touch", func() (int, bool) {
		r.prog.set("scaling: touch", len(targets))
		forEach(ctx, len(targets), r.cfg.Concurrency, 0, func(ctx context.Context, k int) {
			err := socks[targets[k]].conn.write(r.cfg.OpTimeout, `{"type":"session.get"}`)
			r.prog.step(err)
			errs.add(err)
		})
		return len(targets), m.quiet(ctx)
	})) {
		return res
	}

	targets = live(cfg.Revokes, true)
	if !add(run("revoke", func() (int, bool) {
		res.Revoke = r.timeRevocations(ctx, "scaling: revoke", len(targets), reasonSessionRevoked, func(k int) (*wsConn, func(context.Context) error) {
			i := targets[k]
			return socks[i].conn, func(ctx context.Context) error {
				err := r.admin.deleteSession(ctx, other(i), socks[i].id)
				if err == nil {
					socks[i].gone = true
				}
				return err
			}
		})
		return res.Revoke.OK, m.quiet(ctx)
	})) {
		return res
	}

	closing := live(n, false)
	if run("disconnect", func() (int, bool) {
		r.prog.set("scaling: disconnect", len(closing))
		forEach(ctx, len(closing), r.cfg.Concurrency*4, 0, func(_ context.Context, k int) {
			socks[closing[k]].conn.Close(r.cfg.OpTimeout)
			r.prog.step(nil)
		})
		// Subscriptions may go some time after the last socket: wait until
		// every node has let its sockets go and the channels are back to
		// where they were before the connects.
		return len(closing), m.drained(ctx, channelsBefore, cfg.SettleTimeout)
	}) == nil {
		return res
	}

	var remaining []int
	for i := range socks {
		if socks[i].id != "" && !socks[i].gone {
			remaining = append(remaining, i)
		}
	}
	deleted := run("delete", func() (int, bool) {
		var ok atomic.Int64
		r.prog.set("scaling: delete", len(remaining))
		forEach(ctx, len(remaining), r.cfg.Concurrency, 0, func(ctx context.Context, k int) {
			i := remaining[k]
			err := r.admin.deleteSession(ctx, other(i), socks[i].id)
			r.prog.step(err)
			if err != nil {
				errs.add(err)
				return
			}
			socks[i].gone = true
			ok.Add(1)
		})
		return int(ok.Load()), m.quiet(ctx)
	})

	res.summarize(created, connected, idle, eventPhases, deleted)
	if cfg.CalibrationChannels > 0 && ctx.Err() == nil {
		r.prog.set("scaling: calibrate subscriptions", 0)
		res.Calibration = m.calibrate(ctx, cfg.CalibrationChannels)
	}
	return res
}

// summarize fills in the headline figures from the phases.
func (res *ScalingResult) summarize(created, connected, idle *measured, events []*measured, deleted *measured) {
	nodes := len(res.Nodes)
	res.ReceivedPerNode = make([]float64, nodes)
	if idle.Seconds > 0 {
		res.RedisIdleCPU = idle.Totals.CPUSeconds / idle.Seconds
	}
	var cpu, bus, nodeCPU float64
	for _, p := range events {
		for j := range nodes {
			idleRate := 0.0
			if idle.Seconds > 0 && j < len(idle.NodeCPUSeconds) {
				idleRate = idle.NodeCPUSeconds[j] / idle.Seconds
			}
			if j < len(p.NodeCPUSeconds) {
				nodeCPU += p.NodeCPUSeconds[j] - idleRate*p.Seconds
			}
		}
		res.EventsPublished += sumValues(p.Published)
		for j := range nodes {
			res.ReceivedPerNode[j] += sumValues(p.Received[j])
		}
		cpu += p.Totals.CPUSeconds - res.RedisIdleCPU*p.Seconds
		bus += p.Totals.BusMessages
	}
	if res.EventsPublished > 0 {
		res.RatioPerNode = make([]float64, nodes)
		for j, v := range res.ReceivedPerNode {
			res.RatioPerNode[j] = v / res.EventsPublished
			res.MaxRatio = max(res.MaxRatio, res.RatioPerNode[j])
			res.MeanRatio += res.RatioPerNode[j] / float64(nodes)
		}
		res.RedisCPUPerEventUS = cpu * 1e6 / res.EventsPublished
		res.NodeCPUPerEventUS = nodeCPU * 1e6 / res.EventsPublished
		res.BusMessagesPerEvent = bus / res.EventsPublished
	}
	if deleted != nil {
		if pub := sumValues(deleted.Published); pub > 0 {
			for j := range nodes {
				res.DeleteRatio += sumValues(deleted.Received[j]) / pub / float64(nodes)
			}
		}
	}
	res.RedisMemoryBefore = created.before.masterMemory()
	res.RedisMemorySessions = created.after.masterMemory()
	res.RedisMemoryConnected = connected.after.masterMemory()
	if created.Ops > 0 {
		res.MemoryPerSession = (res.RedisMemorySessions - res.RedisMemoryBefore) / float64(created.Ops)
	}
	if connected.Ops > 0 {
		res.MemoryPerSocket = (res.RedisMemoryConnected - res.RedisMemorySessions) / float64(connected.Ops)
		res.SubscribesPerConnect = float64(connected.Totals.Subscribe.Calls) / float64(connected.Ops)
		res.SubscribeUSPerConnect = connected.Totals.Subscribe.USec / float64(connected.Ops)
	}
	for _, p := range res.Phases {
		if p.Name == "disconnect" && p.Ops > 0 {
			res.UnsubscribesPerDisconnect = float64(p.Totals.Unsubscribe.Calls) / float64(p.Ops)
			res.UnsubscribeUSPerDisconnect = p.Totals.Unsubscribe.USec / float64(p.Ops)
		}
	}
}

func sumValues(m map[string]float64) float64 {
	var s float64
	for _, v := range m {
		s += v
	}
	return s
}

// scaleMeter reads the counters of the nodes and the Redis servers.
type scaleMeter struct {
	r     *runner
	errs  *errSink
	redis []*respConn
}

func (m *scaleMeter) close() {
	for _, rc := range m.redis {
		rc.Close()
	}
}

// scaleSnap is one reading of every node and every Redis server.
type scaleSnap struct {
	at    time.Time
	nodes []nodeCounters
	redis []redisCounters
}

func (s *scaleSnap) channels() float64 {
	var n float64
	for _, rs := range s.redis {
		n += rs.channels + rs.shardChannels
	}
	return n
}

func (s *scaleSnap) masterMemory() float64 {
	var n float64
	for _, rs := range s.redis {
		if rs.role == "master" {
			n += rs.usedMemory
		}
	}
	return n
}

// nodeCounters is what the scenario reads from a node's /metrics.
type nodeCounters struct {
	events      map[string]float64 // "type/stage"
	touched     float64
	connections float64
	cpu         float64
}

// redisCounters is what the scenario reads from a Redis server.
type redisCounters struct {
	role                    string
	usedMemory, cpu         float64
	channels, shardChannels float64
	clients                 float64
	commands                map[string]CommandStat
	busPublish, busShard    float64
}

func (m *scaleMeter) snapshot(ctx context.Context) *scaleSnap {
	s := &scaleSnap{at: time.Now()}
	for _, base := range m.r.all {
		nc, err := scrapeCounters(ctx, m.r.hc, base)
		if err != nil {
			m.errs.add(err)
			return nil
		}
		s.nodes = append(s.nodes, nc)
	}
	for _, rc := range m.redis {
		rs, err := readRedisCounters(rc)
		if err != nil {
			m.errs.add(err)
			return nil
		}
		s.redis = append(s.redis, rs)
	}
	return s
}

// measured is a phase with the readings it was computed from.
type measured struct {
	ScalingPhase
	before, after *scaleSnap
}

// phase reads every counter, runs fn (which returns how many operations
// it made and whether the effects settled), reads them again and returns
// the differences; nil if a reading failed.
func (m *scaleMeter) phase(ctx context.Context, name string, before *scaleSnap, fn func() (int, bool)) *measured {
	if before == nil || ctx.Err() != nil {
		return nil
	}
	t0 := time.Now()
	ops, settled := fn()
	if !settled {
		m.errs.add(fmt.Errorf("scaling %s: counters still moving when the phase was read", name))
	}
	after := m.snapshot(ctx)
	if after == nil {
		return nil
	}
	p := &measured{before: before, after: after, ScalingPhase: ScalingPhase{
		Name: name, Ops: ops, Seconds: time.Since(t0).Seconds(), Published: map[string]float64{},
	}}
	for j := range after.nodes {
		a, b := after.nodes[j], before.nodes[j]
		recv := map[string]float64{}
		for k, v := range a.events {
			typ, stage, _ := strings.Cut(k, "/")
			d := v - b.events[k]
			if d == 0 {
				continue
			}
			switch stage {
			case "published":
				p.Published[typ] += d
			case "received":
				recv[typ] += d
			}
		}
		p.Received = append(p.Received, recv)
		p.NodeCPUSeconds = append(p.NodeCPUSeconds, a.cpu-b.cpu)
		p.Touched += a.touched - b.touched
	}
	for i, a := range after.redis {
		b := before.redis[i]
		rp := RedisPhase{Addr: m.r.cfg.RedisNodes[i], Role: a.role, Commands: map[string]CommandStat{},
			UsedMemoryDelta: a.usedMemory - b.usedMemory, UsedMemoryAfter: a.usedMemory, CPUSeconds: a.cpu - b.cpu,
			ChannelsAfter: a.channels, ShardChannels: a.shardChannels,
			BusPublish: a.busPublish - b.busPublish, BusPublishShard: a.busShard - b.busShard, ConnectedClients: a.clients}
		for k, v := range a.commands {
			if k == "info" || k == "cluster|info" {
				continue // the tool's own readings
			}
			d := CommandStat{Calls: v.Calls - b.commands[k].Calls, USec: v.USec - b.commands[k].USec}
			if d.Calls > 0 {
				rp.Commands[k] = d
			}
		}
		t := &p.Totals
		t.Publish = t.Publish.add(rp.Commands["publish"])
		t.SPublish = t.SPublish.add(rp.Commands["spublish"])
		for _, c := range subscribeCmds {
			t.Subscribe = t.Subscribe.add(rp.Commands[c])
		}
		for _, c := range unsubscribeCmds {
			t.Unsubscribe = t.Unsubscribe.add(rp.Commands[c])
		}
		t.CPUSeconds += rp.CPUSeconds
		t.BusMessages += rp.BusPublish + rp.BusPublishShard
		t.Channels += rp.ChannelsAfter + rp.ShardChannels
		if rp.Role == "master" {
			t.MasterMemDelta += rp.UsedMemoryDelta
		}
		p.Redis = append(p.Redis, rp)
	}
	return p
}

func (c CommandStat) add(o CommandStat) CommandStat {
	return CommandStat{Calls: c.Calls + o.Calls, USec: c.USec + o.USec}
}

// quiet waits until the events the nodes received stop moving: two
// readings scalingQuiet apart that agree, within OpTimeout.
func (m *scaleMeter) quiet(ctx context.Context) bool {
	return m.until(ctx, m.r.cfg.OpTimeout, scalingQuiet, func() (float64, bool) {
		var total float64
		for _, base := range m.r.all {
			nc, err := scrapeCounters(ctx, m.r.hc, base)
			if err != nil {
				return 0, false
			}
			for k, v := range nc.events {
				if strings.HasSuffix(k, "/received") {
					total += v
				}
			}
		}
		return total, true
	}, nil)
}

// stableChannels waits until the channels subscribed on the Redis servers
// stop moving for scalingSubscriptionsStable, within timeout.
func (m *scaleMeter) stableChannels(ctx context.Context, timeout time.Duration) bool {
	return m.until(ctx, timeout, scalingSubscriptionsStable, m.channels, nil)
}

// drained waits until no node holds a socket and the channels are back to
// want, within timeout.
func (m *scaleMeter) drained(ctx context.Context, want float64, timeout time.Duration) bool {
	return m.until(ctx, timeout, scalingQuiet, m.channels, func(ch float64) bool {
		if ch > want {
			return false
		}
		for _, base := range m.r.all {
			nc, err := scrapeCounters(ctx, m.r.hc, base)
			if err != nil || nc.connections > 0 {
				return false
			}
		}
		return true
	})
}

func (m *scaleMeter) channels() (float64, bool) {
	var n float64
	for _, rc := range m.redis {
		rs, err := readRedisCounters(rc)
		if err != nil {
			return 0, false
		}
		n += rs.channels + rs.shardChannels
	}
	return n, true
}

// until polls read every gap/3 until two readings gap apart agree and done
// (if not nil) holds for the value, or timeout passes.
func (m *scaleMeter) until(ctx context.Context, timeout, gap time.Duration, read func() (float64, bool), done func(float64) bool) bool {
	deadline := time.Now().Add(timeout)
	var last float64
	var since time.Time
	for time.Now().Before(deadline) {
		v, ok := read()
		switch {
		case !ok || (done != nil && !done(v)):
			since = time.Time{}
		case since.IsZero() || v != last:
			last, since = v, time.Now()
		case time.Since(since) >= gap:
			return true
		}
		if !m.r.pause(ctx, gap/3) {
			return false
		}
	}
	return false
}

// Metric names the scaling scenario reads, with their labels.
const (
	metricEvents         = "sessionbridge_events_total"
	metricSessionChanges = "sessionbridge_session_changes_total"
)

// scrapeCounters reads the event counters of a node.
func scrapeCounters(ctx context.Context, hc *http.Client, base string) (nodeCounters, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nodeCounters{}, fmt.Errorf("loadtest: metrics: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nodeCounters{}, fmt.Errorf("loadtest: metrics of %s: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nodeCounters{}, fmt.Errorf("loadtest: metrics of %s: HTTP %d", base, resp.StatusCode)
	}
	samples, err := ParseLabeledMetrics(io.LimitReader(resp.Body, maxMetricsBody), metricEvents, metricSessionChanges, metricConnections, metricCPU)
	if err != nil {
		return nodeCounters{}, fmt.Errorf("loadtest: metrics of %s: %w", base, err)
	}
	nc := nodeCounters{events: map[string]float64{}}
	for _, s := range samples {
		switch s.Name {
		case metricEvents:
			nc.events[s.Labels["type"]+"/"+s.Labels["stage"]] += s.Value
		case metricSessionChanges:
			if s.Labels["type"] == "touched" {
				nc.touched += s.Value
			}
		case metricConnections:
			nc.connections += s.Value
		case metricCPU:
			nc.cpu += s.Value
		}
	}
	return nc, nil
}

// Sample is one sample line of the Prometheus text format.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// ParseLabeledMetrics reads the Prometheus text exposition format and
// returns the samples of names with their labels.
func ParseLabeledMetrics(r io.Reader, names ...string) ([]Sample, error) {
	var out []Sample
	err := eachSample(r, names, func(name, labels, value string) error {
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return fmt.Errorf("sample of %s: %w", name, err)
		}
		ls, err := parseLabels(labels)
		if err != nil {
			return fmt.Errorf("sample of %s: %w", name, err)
		}
		out = append(out, Sample{Name: name, Labels: ls, Value: v})
		return nil
	})
	return out, err
}

// parseLabels reads `{a="x",b="y"}` (or "" for no labels).
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	s = strings.TrimSpace(s)
	if s == "" {
		return out, nil
	}
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
		return nil, fmt.Errorf("malformed labels %q", s)
	}
	s = s[1 : len(s)-1]
	for s != "" {
		k, rest, ok := strings.Cut(s, "=")
		if !ok || !strings.HasPrefix(rest, `"`) {
			return nil, fmt.Errorf("malformed labels")
		}
		// The value ends at the first quote not escaped by a backslash.
		end := 1
		for end < len(rest) && rest[end] != '"' {
			if rest[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(rest) {
			return nil, fmt.Errorf("malformed labels")
		}
		v, err := strconv.Unquote(rest[:end+1])
		if err != nil {
			return nil, fmt.Errorf("malformed label value")
		}
		out[strings.TrimSpace(k)] = v
		s = strings.TrimPrefix(strings.TrimSpace(rest[end+1:]), ",")
	}
	return out, nil
}

// readRedisCounters reads INFO and CLUSTER INFO of one server.
func readRedisCounters(rc *respConn) (redisCounters, error) {
	info, err := rc.doString("INFO", "memory", "stats", "cpu", "replication", "clients", "commandstats")
	if err != nil {
		return redisCounters{}, fmt.Errorf("loadtest: redis INFO: %w", err)
	}
	f := infoFields(info)
	num := func(k string) float64 {
		v, _ := strconv.ParseFloat(f[k], 64)
		return v
	}
	rs := redisCounters{
		role:       f["role"],
		usedMemory: num("used_memory"), cpu: num("used_cpu_sys") + num("used_cpu_user"),
		channels: num("pubsub_channels"), shardChannels: num("pubsubshard_channels"),
		clients: num("connected_clients"), commands: commandStats(f),
	}
	if rs.role == "slave" {
		rs.role = "replica"
	}
	// CLUSTER INFO fails on a server that is not in a cluster: its bus
	// carries nothing then.
	if ci, err := rc.doString("CLUSTER", "INFO"); err == nil {
		cf := infoFields(ci)
		rs.busPublish, _ = strconv.ParseFloat(cf["cluster_stats_messages_publish_received"], 64)
		rs.busShard, _ = strconv.ParseFloat(cf["cluster_stats_messages_publishshard_received"], 64)
	} else {
		var re respError
		if !errors.As(err, &re) {
			return redisCounters{}, fmt.Errorf("loadtest: redis CLUSTER INFO: %w", err)
		}
	}
	return rs, nil
}

// calibrate subscribes channels sharded channels on each master from a
// connection of its own, then as many plain channels, and reads used_memory
// before and after each step: the memory of one subscription with nothing
// else changing. The connection, and with it the subscriptions, goes at the
// end.
func (m *scaleMeter) calibrate(ctx context.Context, channels int) *SubscriptionCalibration {
	cal := &SubscriptionCalibration{Channels: channels}
	var shardBytes, plainBytes, usec []float64
	for i, rc := range m.redis {
		before, err := readRedisCounters(rc)
		if err != nil {
			m.errs.add(err)
			return cal
		}
		if before.role != "master" {
			continue
		}
		tags, err := ownedTags(rc)
		if err != nil {
			m.errs.add(err)
			return cal
		}
		if len(tags) == 0 {
			continue
		}
		sub, err := dialRedis(ctx, m.r.cfg.RedisNodes[i], "", m.r.cfg.AllowRemote, m.r.cfg.OpTimeout)
		if err != nil {
			m.errs.add(err)
			return cal
		}
		shard, plain, us, err := calibrateOne(sub, rc, tags, channels, m.r.runID)
		sub.Close()
		if err != nil {
			m.errs.add(err)
			return cal
		}
		shardBytes, plainBytes, usec = append(shardBytes, shard), append(plainBytes, plain), append(usec, us)
	}
	mean := func(xs []float64) float64 {
		var s float64
		for _, x := range xs {
			s += x
		}
		return s / float64(max(len(xs), 1))
	}
	cal.BytesPerShardSubscription, cal.BytesPerSubscription, cal.SSubscribeUSPerChannel = mean(shardBytes), mean(plainBytes), mean(usec)
	return cal
}

// calibrateOne subscribes channels sharded channels, spread over tags, on
// sub, then as many plain ones, reading used_memory on info between the
// steps; it returns the bytes per sharded and per plain subscription and the
// SSUBSCRIBE time per channel.
func calibrateOne(sub, info *respConn, tags []string, channels int, runID string) (shard, plain, usPerChannel float64, err error) {
	byTag := map[string][]string{}
	for k := range channels {
		tag := tags[k%len(tags)]
		byTag[tag] = append(byTag[tag], fmt.Sprintf("sb:cal:{%s}%s%010d", tag, runID, k))
	}
	subscribe := func(cmd string, plainNames bool) (float64, CommandStat, error) {
		b, err := readRedisCounters(info)
		if err != nil {
			return 0, CommandStat{}, err
		}
		sent := 0
		for _, tag := range slices.Sorted(maps.Keys(byTag)) {
			names := byTag[tag]
			if plainNames {
				names = slices.Clone(names)
				for j := range names {
					names[j] += ":plain"
				}
			}
			if err := sub.send(append([]string{cmd}, names...)...); err != nil {
				return 0, CommandStat{}, err
			}
			sent += len(names)
		}
		for range sent {
			v, err := sub.read()
			if err != nil {
				return 0, CommandStat{}, fmt.Errorf("loadtest: redis %s: %w", cmd, err)
			}
			if a, ok := v.([]any); !ok || len(a) != 3 {
				return 0, CommandStat{}, fmt.Errorf("loadtest: redis %s: unexpected reply %v", cmd, v)
			}
		}
		a, err := readRedisCounters(info)
		if err != nil {
			return 0, CommandStat{}, err
		}
		key := strings.ToLower(cmd)
		d := CommandStat{Calls: a.commands[key].Calls - b.commands[key].Calls, USec: a.commands[key].USec - b.commands[key].USec}
		return (a.usedMemory - b.usedMemory) / float64(sent), d, nil
	}
	shard, cs, err := subscribe("SSUBSCRIBE", false)
	if err != nil {
		return 0, 0, 0, err
	}
	plain, _, err = subscribe("SUBSCRIBE", true)
	if err != nil {
		return 0, 0, 0, err
	}
	return shard, plain, cs.USec / float64(channels), nil
}

// ownedTags returns the two-hex-digit hash tags (the user shards of
// sessionbridge's keys) whose slots the server serves: all 256 on a server
// that is not in a cluster.
func ownedTags(rc *respConn) ([]string, error) {
	all := make([]string, 256)
	for i := range all {
		all[i] = fmt.Sprintf("%02x", i)
	}
	nodes, err := rc.doString("CLUSTER", "NODES")
	if err != nil {
		var re respError
		if errors.As(err, &re) {
			return all, nil
		}
		return nil, fmt.Errorf("loadtest: redis CLUSTER NODES: %w", err)
	}
	var ranges [][2]int
	for line := range strings.Lines(nodes) {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.Contains(f[2], "myself") {
			continue
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue
			}
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("loadtest: bad slot range %q in CLUSTER NODES", r)
			}
			ranges = append(ranges, [2]int{a, b})
		}
	}
	var out []string
	for _, t := range all {
		s := int(crc16([]byte(t)) % 16384)
		for _, r := range ranges {
			if s >= r[0] && s <= r[1] {
				out = append(out, t)
				break
			}
		}
	}
	return out, nil
}

// crc16 is the CRC16-CCITT (XMODEM) checksum Redis Cluster hashes keys
// with.
func crc16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// writeTable prints the scaling scenario's figures.
func (res *ScalingResult) writeTable(section func(), p func(string, ...any)) {
	section()
	p("scaling\t%d nodes, %d/%d sockets, %d Redis servers (%d masters), touch interval %s",
		len(res.Nodes), res.Connected, res.Sockets, len(res.RedisServers), res.Masters,
		time.Duration(res.TouchInterval*float64(time.Second)))
	p("phase\tops\ts\tpublished\treceived per node\ttouched\tRedis publish\tspublish\tsubscribe\tunsubscribe\tbus msgs\tRedis CPU s\tmaster mem Δ\tchannels")
	for _, ph := range res.Phases {
		var recv []string
		for _, m := range ph.Received {
			recv = append(recv, fmt.Sprintf("%.0f", sumValues(m)))
		}
		t := ph.Totals
		p("%s\t%d\t%.1f\t%.0f\t%s\t%.0f\t%d\t%d\t%d\t%d\t%.0f\t%.3f\t%s\t%.0f", ph.Name, ph.Ops, ph.Seconds,
			sumValues(ph.Published), strings.Join(recv, " "), ph.Touched, t.Publish.Calls, t.SPublish.Calls,
			t.Subscribe.Calls, t.Unsubscribe.Calls, t.BusMessages, t.CPUSeconds, fb(t.MasterMemDelta), t.Channels)
	}
	section()
	ratios := make([]string, len(res.RatioPerNode))
	for j, v := range res.RatioPerNode {
		ratios[j] = fmt.Sprintf("%.3f", v)
	}
	p("events published (update, message, touch, revoke)\t%.0f", res.EventsPublished)
	p("received/published per node\t%s\t(mean %.3f, highest %.3f)", strings.Join(ratios, " "), res.MeanRatio, res.MaxRatio)
	p("received/published, deletes of sessions without sockets\t%.3f", res.DeleteRatio)
	p("subscribe commands per connect\t%.3f\t%.2f µs Redis time", res.SubscribesPerConnect, res.SubscribeUSPerConnect)
	p("unsubscribe commands per disconnect\t%.3f\t%.2f µs Redis time", res.UnsubscribesPerDisconnect, res.UnsubscribeUSPerDisconnect)
	p("Redis CPU per event published\t%.1f µs\t(every server, less the idle %.1f %% of a core)", res.RedisCPUPerEventUS, res.RedisIdleCPU*100)
	p("node CPU per event published\t%.1f µs\t(every node, less the idle CPU; the admin call that made it included)", res.NodeCPUPerEventUS)
	p("cluster bus pub/sub messages per event\t%.2f", res.BusMessagesPerEvent)
	p("Redis used_memory (masters)\t%s before, %s with the sessions, %s with the sockets", fb(res.RedisMemoryBefore), fb(res.RedisMemorySessions), fb(res.RedisMemoryConnected))
	p("Redis memory per session, per socket\t%s\t%s", fb(res.MemoryPerSession), fb(res.MemoryPerSocket))
	if c := res.Calibration; c != nil {
		p("one subscription (%d channels per master)\tsharded %s\tplain %s\tSSUBSCRIBE %.2f µs per channel", c.Channels,
			fb(c.BytesPerShardSubscription), fb(c.BytesPerSubscription), c.SSubscribeUSPerChannel)
	}
	if v := res.Revoke; v != nil {
		s := v.Latency
		p("revoke, DELETE on one node → close on another\t%d/%d\tp50 %s\tp99 %s\tmax %s", v.OK, v.Samples, fd(s.P50), fd(s.P99), fd(s.Max))
	}
}

// scalingFigures are the scaling scenario's numbers that summarize
// compares across runs.
func scalingFigures() []Figure {
	fig := func(name, unit string, get func(*ScalingResult) float64) Figure {
		return Figure{Name: name, Unit: unit, Get: func(r *Report) (float64, bool) {
			if r.Scaling == nil || r.Scaling.EventsPublished == 0 {
				return 0, false
			}
			return get(r.Scaling), true
		}}
	}
	rev := func(r *Report) *Summary {
		if r.Scaling == nil || r.Scaling.Revoke == nil {
			return nil
		}
		return &r.Scaling.Revoke.Latency
	}
	figs := []Figure{
		fig("scaling events published", "events", func(s *ScalingResult) float64 { return s.EventsPublished }),
		fig("scaling received/published, mean node", "ratio", func(s *ScalingResult) float64 { return s.MeanRatio }),
		fig("scaling received/published, highest node", "ratio", func(s *ScalingResult) float64 { return s.MaxRatio }),
		fig("scaling received/published, sessions without sockets", "ratio", func(s *ScalingResult) float64 { return s.DeleteRatio }),
		fig("scaling subscribe commands per connect", "", func(s *ScalingResult) float64 { return s.SubscribesPerConnect }),
		fig("scaling subscribe Redis time per connect", "µs", func(s *ScalingResult) float64 { return s.SubscribeUSPerConnect }),
		fig("scaling unsubscribe commands per disconnect", "", func(s *ScalingResult) float64 { return s.UnsubscribesPerDisconnect }),
		fig("scaling unsubscribe Redis time per disconnect", "µs", func(s *ScalingResult) float64 { return s.UnsubscribeUSPerDisconnect }),
		fig("scaling Redis CPU per event", "µs", func(s *ScalingResult) float64 { return s.RedisCPUPerEventUS }),
		fig("scaling node CPU per event", "µs", func(s *ScalingResult) float64 { return s.NodeCPUPerEventUS }),
		fig("scaling cluster bus messages per event", "", func(s *ScalingResult) float64 { return s.BusMessagesPerEvent }),
		fig("scaling Redis memory per session", "B", func(s *ScalingResult) float64 { return s.MemoryPerSession }),
		fig("scaling Redis memory per socket", "B", func(s *ScalingResult) float64 { return s.MemoryPerSocket }),
		latencyFig("scaling revoke p50", rev, func(s Summary) time.Duration { return s.P50 }),
		latencyFig("scaling revoke p99", rev, func(s Summary) time.Duration { return s.P99 }),
		latencyFig("scaling revoke max", rev, func(s Summary) time.Duration { return s.Max }),
	}
	cal := func(name string, get func(*SubscriptionCalibration) float64) Figure {
		return Figure{Name: name, Unit: "B", Get: func(r *Report) (float64, bool) {
			if r.Scaling == nil || r.Scaling.Calibration == nil || r.Scaling.Calibration.BytesPerShardSubscription == 0 {
				return 0, false
			}
			return get(r.Scaling.Calibration), true
		}}
	}
	return append(figs,
		cal("scaling bytes per sharded subscription", func(c *SubscriptionCalibration) float64 { return c.BytesPerShardSubscription }),
		cal("scaling bytes per plain subscription", func(c *SubscriptionCalibration) float64 { return c.BytesPerSubscription }))
}
