package redis

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/sessionbridge/sessionbridge/limit"
)

// Counter is a [limit.Counter] on Redis for concurrency rules such as
// max_connections, exact across the cluster while its nodes live.
//
// Each rule and subject is a hash <prefix>mc:{<rule>:<subject>} of node ID →
// units that node holds. An acquisition is one script that sums the fields
// of the live nodes, refuses when the sum has reached the maximum, and else
// adds one to this node's field; a release subtracts one (the field goes at
// zero). A node is live while its presence heartbeat (the zset
// <prefix>p:nodes that Presence.Run scores every interval) is at most three
// presence intervals old, this node always; the fields of other nodes are
// dropped by the next acquisition of the subject, so a node that dies
// without a goodbye stops counting within the presence bound. A node
// scores itself in the zset before its first acquisition, so its fields
// are never taken for a dead node's before its heartbeat starts.
//
// On Redis Cluster each subject is its own slot: the slots of one
// acquisition are taken one by one, and given back when a later one
// refuses. A release that cannot reach Redis is kept and retried with the
// next operation, so a slot is never lost while this node lives.
type Counter struct {
	b   *Backend
	acq *rueidis.Lua
	rel *rueidis.Lua

	registered atomic.Bool
	live       atomic.Int64 // live nodes last seen, this one included

	mu   sync.Mutex
	owed map[string]int // hash key → releases that failed
}

var _ limit.Counter = (*Counter)(nil)

// Counter returns a new concurrency counter of this node. Make one per
// node and share it: it keeps the releases it owes Redis while Redis is
// away.
func (b *Backend) Counter() *Counter {
	c := &Counter{b: b, acq: rueidis.NewLuaScript(luaSlotAcquire), rel: rueidis.NewLuaScript(luaSlotRelease)}
	c.live.Store(1)
	return c
}

func (c *Counter) key(s limit.Slot) string {
	return c.b.prefix + "mc:{" + s.Rule + ":" + s.Subject + "}"
}

func (c *Counter) nodesKey() string { return c.b.prefix + "p:nodes" }

// Nodes returns the number of live nodes as last read, at least 1: the
// share of a cluster-wide limit this node takes while Redis is away.
func (c *Counter) Nodes() int { return int(max(c.live.Load(), 1)) }

// RefreshNodes reads the live nodes now, for Nodes; run it every presence
// interval, so that the share a node takes while Redis is away follows the
// cluster's size even when nothing is acquired.
func (c *Counter) RefreshNodes(ctx context.Context) error {
	ctx, cancel := c.b.opCtx(ctx)
	defer cancel()
	_, err := c.liveNodes(ctx)
	return err
}

// RunNodes calls RefreshNodes every presence interval until ctx is done.
func (c *Counter) RunNodes(ctx context.Context) {
	t := time.NewTicker(c.b.opts.PresenceInterval)
	defer t.Stop()
	for {
		_ = c.RefreshNodes(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// liveNodes scores this node in the heartbeat zset once, then lists the
// nodes whose heartbeat is recent enough.
func (c *Counter) liveNodes(ctx context.Context) ([]string, error) {
	b := c.b
	if !c.registered.Load() {
		// As Presence.heartbeat does, so that this node counts as live
		// from its first acquisition on.
		err := b.client.Do(ctx, b.client.B().Zadd().Key(c.nodesKey()).ScoreMember().
			ScoreMember(float64(time.Now().UnixMilli()), b.nodeID).Build()).Error()
		if err != nil {
			return nil, b.fail("conn_count", err)
		}
		c.registered.Store(true)
	}
	since := time.Now().Add(-3 * b.opts.PresenceInterval).UnixMilli()
	nodes, err := b.client.Do(ctx, b.client.B().Zrange().Key(c.nodesKey()).
		Min(strconv.FormatInt(since, 10)).Max("+inf").Byscore().Build()).AsStrSlice()
	if err != nil {
		return nil, b.fail("conn_count", err)
	}
	n := len(nodes)
	found := false
	for _, id := range nodes {
		found = found || id == b.nodeID
	}
	if !found {
		n++
	}
	c.live.Store(int64(n))
	return nodes, nil
}

// Acquire takes one unit of every slot in Redis if all enforced ones are
// under their maximum.
func (c *Counter) Acquire(ctx context.Context, slots ...limit.Slot) (limit.Decision, limit.Hold, error) {
	for _, s := range slots {
		if err := s.Check(); err != nil {
			return limit.Decision{}, nil, err
		}
	}
	ctx, cancel := c.b.opCtx(ctx)
	defer cancel()
	c.payOwed(ctx)
	live, err := c.liveNodes(ctx)
	if err != nil {
		return limit.Decision{}, nil, err
	}
	if len(slots) == 0 {
		return limit.Decision{Allowed: true}, &redisHold{c: c}, nil
	}
	keys := make([]string, len(slots))
	for i, s := range slots {
		keys[i] = c.key(s)
	}
	if c.b.client.Mode() != rueidis.ClientModeCluster {
		held, err := c.run(ctx, live, slots, keys)
		if err != nil {
			return limit.Decision{}, nil, err
		}
		d := limit.CombineSlots(slots, held)
		if !d.Allowed {
			return d, nil, nil
		}
		return d, &redisHold{c: c, keys: keys}, nil
	}
	held := make([]int, len(slots))
	for i := range slots {
		h, err := c.run(ctx, live, slots[i:i+1], keys[i:i+1])
		if err == nil && (h[0] < slots[i].Max || slots[i].DryRun) {
			held[i] = h[0]
			continue
		}
		// Refused (or failed): give back what the earlier slots took.
		c.release(ctx, keys[:i])
		if err != nil {
			return limit.Decision{}, nil, err
		}
		held[i] = h[0]
		return limit.CombineSlots(slots[:i+1], held[:i+1]), nil, nil
	}
	return limit.CombineSlots(slots, held), &redisHold{c: c, keys: keys}, nil
}

// run decides slots in one script and returns what each subject held
// before.
func (c *Counter) run(ctx context.Context, live []string, slots []limit.Slot, keys []string) ([]int, error) {
	args := make([]string, 0, 2+len(live)+2*len(slots))
	args = append(args, c.b.nodeID, strconv.Itoa(len(live)))
	args = append(args, live...)
	for _, s := range slots {
		dry := "0"
		if s.DryRun {
			dry = "1"
		}
		args = append(args, strconv.Itoa(s.Max), dry)
	}
	vals, err := c.acq.Exec(ctx, c.b.client, keys, args).AsIntSlice()
	if err != nil {
		return nil, c.b.fail("conn_count", err)
	}
	if len(vals) != len(slots) {
		return nil, fmt.Errorf("redis: connection count: %d values for %d slots", len(vals), len(slots))
	}
	held := make([]int, len(vals))
	for i, v := range vals {
		held[i] = int(v)
	}
	return held, nil
}

// release gives back one unit of each key, keeping what fails for later.
func (c *Counter) release(ctx context.Context, keys []string) {
	for _, k := range keys {
		if err := c.rel.Exec(ctx, c.b.client, []string{k}, []string{c.b.nodeID, "1"}).Error(); err != nil {
			_ = c.b.fail("conn_count", err)
			c.mu.Lock()
			if c.owed == nil {
				c.owed = map[string]int{}
			}
			c.owed[k]++
			c.mu.Unlock()
		}
	}
}

// payOwed retries the releases that failed.
func (c *Counter) payOwed(ctx context.Context) {
	c.mu.Lock()
	if len(c.owed) == 0 {
		c.mu.Unlock()
		return
	}
	owed := c.owed
	c.owed = nil
	c.mu.Unlock()
	for k, n := range owed {
		if err := c.rel.Exec(ctx, c.b.client, []string{k}, []string{c.b.nodeID, strconv.Itoa(n)}).Error(); err != nil {
			c.mu.Lock()
			if c.owed == nil {
				c.owed = map[string]int{}
			}
			c.owed[k] += n
			c.mu.Unlock()
		}
	}
}

// Owed returns how many releases wait for Redis to come back.
func (c *Counter) Owed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.owed {
		n += v
	}
	return n
}

type redisHold struct {
	c    *Counter
	once sync.Once
	keys []string
}

func (h *redisHold) Release(ctx context.Context) {
	h.once.Do(func() {
		ctx, cancel := h.c.b.opCtx(context.WithoutCancel(ctx))
		defer cancel()
		h.c.payOwed(ctx)
		h.c.release(ctx, h.keys)
	})
}

// luaSlotAcquire: KEYS one hash per slot. ARGV: this node's ID, the number
// of live nodes L, their IDs, then two per slot: maximum, dry run (1/0).
// Fields of nodes that are not live are dropped. If every enforced slot is
// under its maximum, this node's field of every slot gains one. Returns
// the units each slot held before (live nodes only).
const luaSlotAcquire = `
local node = ARGV[1]
local nlive = tonumber(ARGV[2])
local live = {[node] = true}
for i = 1, nlive do live[ARGV[2 + i]] = true end
local base = 2 + nlive
local out, ok = {}, true
for i = 1, #KEYS do
  local max = tonumber(ARGV[base + (i - 1) * 2 + 1])
  local dry = ARGV[base + (i - 1) * 2 + 2] == '1'
  local f = redis.call('HGETALL', KEYS[i])
  local sum = 0
  for j = 1, #f, 2 do
    if live[f[j]] then
      sum = sum + tonumber(f[j + 1])
    else
      redis.call('HDEL', KEYS[i], f[j])
    end
  end
  if sum >= max and not dry then ok = false end
  out[i] = sum
end
if ok then
  for i = 1, #KEYS do redis.call('HINCRBY', KEYS[i], node, 1) end
end
return out
`

// luaSlotRelease: KEYS the hash. ARGV this node's ID, the units to give
// back. The field goes when it reaches zero.
const luaSlotRelease = `
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2]))
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
`
