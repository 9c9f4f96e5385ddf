package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/strictjson"
)

// LocalPresence answers who is connected to this node. The gateway's
// connection registry satisfies it.
type LocalPresence interface {
	// SessionCounts returns this node's live connection count of each of ids.
	SessionCounts(ctx context.Context, ids []string) (map[string]int, error)
	// UserConnections lists this node's live connections of a user; an empty
	// userID lists all of them.
	UserConnections(ctx context.Context, userID string) ([]sessionbridge.ConnInfo, error)
}

// Presence is cluster-wide presence: a [sessionbridge.Presence] that answers
// for every node. Each node runs Presence.Run (the gateway does), which every interval brings
// the node's record up to date, the hash <prefix>p:node:<node id> (field
// "s:<session id>" = connection count, field "u:<user id>" = JSON array of
// ConnInfo), writing only what changed, with a TTL of three intervals, and scores the node in the zset
// <prefix>p:nodes by heartbeat time. Readers use this node's registry live
// and the records of the other nodes, in one pipelined round trip.
//
// Staleness: another node's connections show up or go away at most one
// interval (plus a round trip) late; a node that dies without saying goodbye
// is forgotten at most three intervals after its last write, when Redis
// expires its record. A node that stops cleanly deletes its record at once.
type Presence struct {
	b        *Backend
	local    LocalPresence
	interval time.Duration

	mu      sync.Mutex
	lastFP  uint64            // fingerprint of the connections last written; 0 = none
	written map[string]string // the record as last written; nil = unknown
}

var _ sessionbridge.ClusterPresence = (*Presence)(nil)

// Presence returns the cluster presence of this node, whose own connections
// local answers for. Its Run must run on every node: the gateway runs it
// when it takes the presence from Node's backend.
func (b *Backend) Presence(local LocalPresence) *Presence {
	return &Presence{b: b, local: local, interval: b.opts.PresenceInterval}
}

func (p *Presence) nodeKey(node string) string { return p.b.prefix + "p:node:" + node }
func (p *Presence) nodesKey() string           { return p.b.prefix + "p:nodes" }

// Run writes this node's record now and every interval until ctx is done,
// then deletes it and returns ctx.Err(). Write failures are logged and
// retried at the next interval.
func (p *Presence) Run(ctx context.Context) error {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		if err := p.Publish(ctx); err != nil && ctx.Err() == nil {
			p.b.log.Warn("redis: writing presence", "err", err)
		}
		select {
		case <-ctx.Done():
			gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.b.timeout)
			if err := p.Goodbye(gctx); err != nil {
				p.b.log.Warn("redis: removing presence", "err", err)
			}
			cancel()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// presenceChunk bounds the fields one presence HSET or HDEL carries, so that
// no command's size grows with the node's sockets: Redis runs each in
// microseconds, and other clients' commands run between them.
const presenceChunk = 256

// Publish brings this node's record up to date with its current
// connections. Run calls it every interval. It writes only what changed
// since its last write — the counts of sessions whose sockets came or went,
// the lists of users whose did, the fields of those that left — in bounded
// commands, pipelined; when nothing changed it only extends the record's
// life. A record that vanished (Redis restarted empty) or a write that
// failed is rewritten whole, in the same bounded commands.
func (p *Presence) Publish(ctx context.Context) error {
	conns, err := p.local.UserConnections(ctx, "")
	if err != nil {
		return fmt.Errorf("redis: presence: local connections: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.b
	key := p.nodeKey(b.nodeID)
	ttl := 3 * p.interval
	now := time.Now()
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	fp := fingerprint(conns)
	if p.written != nil && len(p.written) > 0 {
		// Extend the record's life first: the answer also tells whether it
		// still exists, so that a diff is never applied to an empty record.
		n, err := b.client.Do(ctx, b.client.B().Pexpire().Key(key).Milliseconds(ttl.Milliseconds()).Build()).AsInt64()
		if err != nil {
			p.written, p.lastFP = nil, 0
			return b.fail("presence_write", err)
		}
		if n == 0 {
			p.written = nil
		} else if fp == p.lastFP {
			return p.heartbeat(ctx, now, ttl)
		}
	}
	fields, err := presenceFields(conns)
	if err != nil {
		return err
	}
	cmds := p.presenceWrites(key, ttl, fields)
	for _, r := range b.client.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			p.written, p.lastFP = nil, 0
			return b.fail("presence_write", err)
		}
	}
	p.written, p.lastFP = fields, fp
	return p.heartbeat(ctx, now, ttl)
}

// presenceFields returns the fields of a node record for conns: "s:<session
// id>" the session's connection count, "u:<user id>" the JSON list of the
// user's connections.
func presenceFields(conns []sessionbridge.ConnInfo) (map[string]string, error) {
	counts := map[string]int{}
	users := map[string][]sessionbridge.ConnInfo{}
	for _, c := range conns {
		if c.SessionID != "" {
			counts[c.SessionID]++
		}
		users[c.UserID] = append(users[c.UserID], c)
	}
	fields := make(map[string]string, len(counts)+len(users))
	for sid, n := range counts {
		fields["s:"+sid] = strconv.Itoa(n)
	}
	for uid, list := range users {
		// Listed in a fixed order, so that an unchanged user compares equal.
		slices.SortFunc(list, func(a, b sessionbridge.ConnInfo) int { return strings.Compare(a.ID, b.ID) })
		blob, err := json.Marshal(list)
		if err != nil {
			return nil, fmt.Errorf("redis: presence: %w", err)
		}
		fields["u:"+uid] = string(blob)
	}
	return fields, nil
}

// presenceWrites returns the commands that turn the record last written
// (p.written; nil: none, start afresh) into fields.
func (p *Presence) presenceWrites(key string, ttl time.Duration, fields map[string]string) rueidis.Commands {
	b := p.b
	var cmds rueidis.Commands
	if p.written == nil {
		cmds = append(cmds, b.client.B().Del().Key(key).Build())
	}
	var set, del []string
	for f, v := range fields {
		if old, ok := p.written[f]; !ok || old != v {
			set = append(set, f, v)
		}
	}
	for f := range p.written {
		if _, ok := fields[f]; !ok {
			del = append(del, f)
		}
	}
	for len(set) > 0 {
		n := min(len(set), 2*presenceChunk)
		h := b.client.B().Hset().Key(key).FieldValue()
		for i := 0; i < n; i += 2 {
			h = h.FieldValue(set[i], set[i+1])
		}
		cmds = append(cmds, h.Build())
		set = set[n:]
	}
	for len(del) > 0 {
		n := min(len(del), presenceChunk)
		cmds = append(cmds, b.client.B().Hdel().Key(key).Field(del[:n]...).Build())
		del = del[n:]
	}
	if len(fields) > 0 {
		cmds = append(cmds, b.client.B().Pexpire().Key(key).Milliseconds(ttl.Milliseconds()).Build())
	}
	return cmds
}

// heartbeat scores this node in the node list.
func (p *Presence) heartbeat(ctx context.Context, now time.Time, ttl time.Duration) error {
	b := p.b
	// The zset only lists candidates; the record's TTL, kept by Redis' own
	// clock, decides who is alive. Entries far older than any TTL are pruned.
	for _, r := range b.client.DoMulti(ctx,
		b.client.B().Zadd().Key(p.nodesKey()).ScoreMember().ScoreMember(float64(now.UnixMilli()), b.nodeID).Build(),
		b.client.B().Zremrangebyscore().Key(p.nodesKey()).Min("-inf").Max(strconv.FormatInt(now.Add(-10*ttl).UnixMilli(), 10)).Build(),
	) {
		if err := r.Error(); err != nil {
			return b.fail("presence_write", err)
		}
	}
	return nil
}

// fingerprint identifies a set of connections by their IDs, whatever their
// order; 0 never identifies a non-empty set.
func fingerprint(conns []sessionbridge.ConnInfo) uint64 {
	var sum, xor uint64
	for _, c := range conns {
		h := fnv.New64a()
		_, _ = h.Write([]byte(c.ID))
		v := h.Sum64()
		sum += v
		xor ^= v * 0x9e3779b97f4a7c15
	}
	fp := sum ^ xor ^ uint64(len(conns))<<56
	if fp == 0 && len(conns) > 0 {
		fp = 1
	}
	return fp
}

// Goodbye deletes this node's record, so that others forget its connections
// at once. Run calls it when it stops.
func (p *Presence) Goodbye(ctx context.Context) error {
	p.mu.Lock()
	p.lastFP, p.written = 0, nil
	p.mu.Unlock()
	b := p.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	for _, r := range b.client.DoMulti(ctx,
		b.client.B().Del().Key(p.nodeKey(b.nodeID)).Build(),
		b.client.B().Zrem().Key(p.nodesKey()).Member(b.nodeID).Build(),
	) {
		if err := r.Error(); err != nil {
			return b.fail("presence_goodbye", err)
		}
	}
	return nil
}

// otherNodes lists the nodes other than this one that wrote a heartbeat
// recently enough to possibly still have a record.
func (p *Presence) otherNodes(ctx context.Context) ([]string, error) {
	b := p.b
	since := time.Now().Add(-10 * 3 * p.interval).UnixMilli()
	nodes, err := b.client.Do(ctx, b.client.B().Zrange().Key(p.nodesKey()).
		Min(strconv.FormatInt(since, 10)).Max("+inf").Byscore().Build()).AsStrSlice()
	if err != nil {
		return nil, b.fail("presence_read", err)
	}
	out := nodes[:0]
	for _, n := range nodes {
		if n != b.nodeID {
			out = append(out, n)
		}
	}
	return out, nil
}

// SessionCounts returns the number of live connections of each of ids on
// every node; sessions without connections are absent.
func (p *Presence) SessionCounts(ctx context.Context, ids []string) (map[string]int, error) {
	out, err := p.local.SessionCounts(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("redis: presence: local counts: %w", err)
	}
	if out == nil {
		out = map[string]int{}
	}
	if len(ids) == 0 {
		return out, nil
	}
	b := p.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	nodes, err := p.otherNodes(ctx)
	if err != nil || len(nodes) == 0 {
		return out, err
	}
	fields := make([]string, len(ids))
	for i, id := range ids {
		fields[i] = "s:" + id
	}
	cmds := make(rueidis.Commands, len(nodes))
	for i, n := range nodes {
		cmds[i] = b.client.B().Hmget().Key(p.nodeKey(n)).Field(fields...).Build()
	}
	for _, r := range b.client.DoMulti(ctx, cmds...) {
		vals, err := r.ToArray()
		if err != nil {
			return nil, b.fail("presence_read", err)
		}
		for i, v := range vals {
			if n, err := v.AsInt64(); err == nil && n > 0 {
				out[ids[i]] += int(n)
			}
		}
	}
	for id, n := range out {
		if n <= 0 {
			delete(out, id)
		}
	}
	return out, nil
}

// UserConnections lists the live connections of userID on every node; an
// empty userID lists all of them.
func (p *Presence) UserConnections(ctx context.Context, userID string) ([]sessionbridge.ConnInfo, error) {
	out, err := p.local.UserConnections(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("redis: presence: local connections: %w", err)
	}
	b := p.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	nodes, err := p.otherNodes(ctx)
	if err != nil || len(nodes) == 0 {
		return out, err
	}
	cmds := make(rueidis.Commands, len(nodes))
	for i, n := range nodes {
		if userID == "" {
			cmds[i] = b.client.B().Hgetall().Key(p.nodeKey(n)).Build()
		} else {
			cmds[i] = b.client.B().Hget().Key(p.nodeKey(n)).Field("u:" + userID).Build()
		}
	}
	for _, r := range b.client.DoMulti(ctx, cmds...) {
		var blobs []string
		if userID == "" {
			m, err := r.AsStrMap()
			if err != nil {
				return nil, b.fail("presence_read", err)
			}
			for f, v := range m {
				if strings.HasPrefix(f, "u:") {
					blobs = append(blobs, v)
				}
			}
		} else {
			v, err := r.ToString()
			if isNil(err) {
				continue
			}
			if err != nil {
				return nil, b.fail("presence_read", err)
			}
			blobs = append(blobs, v)
		}
		for _, blob := range blobs {
			var list []sessionbridge.ConnInfo
			if err := strictjson.DecodeOpen([]byte(blob), &list); err != nil {
				b.log.Warn("redis: skipping a corrupt presence record", "err", shortErr(err))
				continue
			}
			out = append(out, list...)
		}
	}
	return out, nil
}
