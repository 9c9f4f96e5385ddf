package redis

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/sessionbridge/sessionbridge/limit"
)

// LoginFailures is a [limit.Failures] on Redis: every node on one Redis
// counts the failed sign-ins of a client IP or a username in one place, so
// the limit holds for the cluster, not per node, and exactly under any
// concurrency.
//
// Each key is a fixed window: a hash with the count and the window's start
// (Redis TIME), which expires with the window. Reserving is one Lua script
// that refuses if a count reached the limit and otherwise increments it,
// starting the window on the first failure. On a standalone or Sentinel
// Redis all the keys of an attempt are one script, all or nothing; on Redis
// Cluster each key has its own slot and they are reserved one by one, the
// earlier ones given back when a later one refuses, so a refused attempt
// counts nothing once Reserve returns. A refund gives back a failure only to
// the window it was counted in.
//
// Key names are SHA-256 hashes of the keys given, so no username (which may
// be a mistyped password) and no address is ever a Redis key name.
type LoginFailures struct {
	b      *Backend
	max    string
	window time.Duration
	res    *rueidis.Lua
	ref    *rueidis.Lua
}

var _ limit.Failures = (*LoginFailures)(nil)

// LoginFailures returns the sign-in failure counter of the cluster: at most
// n (at least 1) failures per key within window (at least 1 ms) from the
// key's first failure.
func (b *Backend) LoginFailures(n int, window time.Duration) *LoginFailures {
	return &LoginFailures{
		b: b, max: strconv.Itoa(max(n, 1)), window: max(window, time.Millisecond),
		res: rueidis.NewLuaScript(luaFailReserve), ref: rueidis.NewLuaScript(luaFailRefund),
	}
}

// failureKey is where the failures under key live: tagged, so that the key is
// one Cluster slot of its own.
func (f *LoginFailures) failureKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return f.b.prefix + "lf:{" + hex.EncodeToString(h[:]) + "}"
}

// groups splits keys into the sets one script may touch: all of them, or
// each alone on Redis Cluster.
func (f *LoginFailures) groups(keys []string) [][]string {
	if f.b.client.Mode() != rueidis.ClientModeCluster {
		return [][]string{keys}
	}
	out := make([][]string, len(keys))
	for i, k := range keys {
		out[i] = []string{k}
	}
	return out
}

// Reserve counts an attempt under keys in Redis; see [limit.Failures].
func (f *LoginFailures) Reserve(ctx context.Context, keys ...string) (limit.Reservation, time.Duration, bool, error) {
	ctx, cancel := f.b.opCtx(ctx)
	defer cancel()
	r := &loginReservation{f: f}
	for _, g := range f.groups(keys) {
		starts, wait, ok, err := f.reserve(ctx, g)
		if err != nil || !ok {
			// Give back what the earlier groups took.
			r.Refund(context.WithoutCancel(ctx))
			return nil, wait, false, err
		}
		r.keys = append(r.keys, g...)
		r.starts = append(r.starts, starts...)
	}
	return r, 0, true, nil
}

// reserve runs the reserve script on keys, which share a slot.
func (f *LoginFailures) reserve(ctx context.Context, keys []string) (starts []string, wait time.Duration, ok bool, err error) {
	rk := make([]string, len(keys))
	for i, k := range keys {
		rk[i] = f.failureKey(k)
	}
	vals, err := f.res.Exec(ctx, f.b.client, rk, []string{f.max, strconv.FormatInt(f.window.Milliseconds(), 10)}).ToArray()
	if err != nil {
		return nil, 0, false, f.b.fail("login failures", err)
	}
	if len(vals) < 2 {
		return nil, 0, false, fmt.Errorf("redis: login failures: %d values", len(vals))
	}
	admit, err := vals[0].AsInt64()
	if err != nil {
		return nil, 0, false, fmt.Errorf("redis: login failures: %w", err)
	}
	if admit == 0 {
		ms, err := vals[1].AsInt64()
		if err != nil {
			return nil, 0, false, fmt.Errorf("redis: login failures: %w", err)
		}
		return nil, time.Duration(ms) * time.Millisecond, false, nil
	}
	if len(vals) != 2+len(keys) {
		return nil, 0, false, fmt.Errorf("redis: login failures: %d values for %d keys", len(vals), len(keys))
	}
	starts = make([]string, len(keys))
	for i := range starts {
		if starts[i], err = vals[2+i].ToString(); err != nil {
			return nil, 0, false, fmt.Errorf("redis: login failures: %w", err)
		}
	}
	return starts, 0, true, nil
}

// Reset forgets the failures under key.
func (f *LoginFailures) Reset(ctx context.Context, key string) error {
	ctx, cancel := f.b.opCtx(ctx)
	defer cancel()
	c := f.b.client
	if err := c.Do(ctx, c.B().Del().Key(f.failureKey(key)).Build()).Error(); err != nil {
		return f.b.fail("login failures", err)
	}
	return nil
}

// loginReservation is an attempt counted in Redis: its keys and the start of
// the window each was counted in.
type loginReservation struct {
	f      *LoginFailures
	once   sync.Once
	keys   []string
	starts []string
}

// Refund gives the attempt back to the windows it was counted in, once.
// A refund that fails is logged and leaves the attempt counted.
func (r *loginReservation) Refund(ctx context.Context) {
	r.once.Do(func() {
		if len(r.keys) == 0 {
			return
		}
		ctx, cancel := r.f.b.opCtx(ctx)
		defer cancel()
		starts := make(map[string]string, len(r.keys))
		for i, k := range r.keys {
			starts[k] = r.starts[i]
		}
		for _, g := range r.f.groups(r.keys) {
			rk, args := make([]string, len(g)), make([]string, len(g))
			for i, k := range g {
				rk[i], args[i] = r.f.failureKey(k), starts[k]
			}
			if err := r.f.ref.Exec(ctx, r.f.b.client, rk, args).Error(); err != nil {
				r.f.b.log.Warn("login failure refund failed", "err", r.f.b.fail("login failures", err))
			}
		}
	})
}

// luaFailReserve: KEYS the failure hashes of one attempt (fields n, the
// count, and s, the window start in µs of Redis TIME). ARGV max, window ms.
// If a count reached max: {0, ms until the latest such window ends}.
// Otherwise every count goes up by one, a new window starting where there is
// none: {1, 0, the window start of each key}.
const luaFailReserve = `
local max = tonumber(ARGV[1])
local wait = -1
for i = 1, #KEYS do
  local n = tonumber(redis.call('HGET', KEYS[i], 'n') or '0')
  if n >= max then
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl < 0 then ttl = tonumber(ARGV[2]) end
    if ttl > wait then wait = ttl end
  end
end
if wait >= 0 then return {0, wait} end
local t = redis.call('TIME')
local now = t[1] .. string.format('%06d', tonumber(t[2]))
local out = {1, 0}
for i = 1, #KEYS do
  local s = redis.call('HGET', KEYS[i], 's')
  if s then
    redis.call('HINCRBY', KEYS[i], 'n', 1)
  else
    s = now
    redis.call('HSET', KEYS[i], 'n', 1, 's', s)
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
  out[#out + 1] = s
end
return out
`

// luaFailRefund: KEYS failure hashes, ARGV the window start of each when the
// attempt was counted. A count goes down by one if its window is the same
// and it is above zero; a new window holds no failure of the attempt.
const luaFailRefund = `
for i = 1, #KEYS do
  if redis.call('HGET', KEYS[i], 's') == ARGV[i] and tonumber(redis.call('HGET', KEYS[i], 'n') or '0') > 0 then
    redis.call('HINCRBY', KEYS[i], 'n', -1)
  end
end
return 1
`
