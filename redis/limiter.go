package redis

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/sessionbridge/sessionbridge/limit"
)

// Limiter is a [limit.Limiter] on Redis: GCRA in one Lua script on Redis
// TIME, so every node decides against one clock and one state, exactly.
//
// On a standalone or Sentinel Redis all the charges of a decision are one
// script: all or nothing, atomically. On Redis Cluster the state of each
// rule and subject lives in its own slot (tagged by them, so no key is hot
// for every decision), a script cannot span slots, and the charges are made
// one by one; when one refuses, those already made are refunded, so a
// refused attempt still costs nothing once the decision returns.
type Limiter struct {
	b  *Backend
	sc *rueidis.Lua
	rf *rueidis.Lua
}

var _ limit.Limiter = (*Limiter)(nil)

func newLimiter(b *Backend) *Limiter {
	return &Limiter{b: b, sc: rueidis.NewLuaScript(luaGCRA), rf: rueidis.NewLuaScript(luaRefund)}
}

func (l *Limiter) stateKey(c limit.Charge) string {
	return l.b.prefix + "rl:{" + c.Rule + ":" + c.Subject + "}"
}

func micros(d time.Duration) int64 { return int64(d / time.Microsecond) }

// chargeArgs are the four script arguments of one charge: interval and
// capacity in µs, cost, dry run.
func chargeArgs(c limit.Charge) []string {
	interval := c.Rate.Period / time.Duration(c.Rate.N)
	burst := c.Rate.Burst
	if burst <= 0 {
		burst = c.Rate.N
	}
	cost := max(c.Cost, 1)
	dry := "0"
	if c.DryRun {
		dry = "1"
	}
	return []string{
		strconv.FormatInt(max(micros(interval), 1), 10),
		strconv.FormatInt(max(micros(interval), 1)*int64(burst), 10),
		strconv.Itoa(cost), dry,
	}
}

// Allow decides charges in Redis.
func (l *Limiter) Allow(ctx context.Context, charges ...limit.Charge) (limit.Decision, error) {
	for _, c := range charges {
		if err := c.Check(); err != nil {
			return limit.Decision{}, err
		}
	}
	if len(charges) == 0 {
		return limit.Decision{Allowed: true}, nil
	}
	ctx, cancel := l.b.opCtx(ctx)
	defer cancel()
	if l.b.client.Mode() != rueidis.ClientModeCluster {
		steps, err := l.run(ctx, charges)
		if err != nil {
			return limit.Decision{}, err
		}
		return limit.Combine(charges, steps), nil
	}
	steps := make([]limit.Step, 0, len(charges))
	for i, c := range charges {
		s, err := l.run(ctx, charges[i:i+1])
		if err == nil && (s[0].Admit || c.DryRun) {
			steps = append(steps, s[0])
			continue
		}
		// Refused (or failed): give back what the earlier charges took.
		l.refund(ctx, charges[:i], steps)
		if err != nil {
			return limit.Decision{}, err
		}
		steps = append(steps, s[0])
		for range charges[i+1:] {
			steps = append(steps, limit.Step{Admit: true})
		}
		return limit.Combine(charges, steps), nil
	}
	return limit.Combine(charges, steps), nil
}

// run decides charges in one script and returns each one's step.
func (l *Limiter) run(ctx context.Context, charges []limit.Charge) ([]limit.Step, error) {
	keys := make([]string, len(charges))
	args := make([]string, 0, 4*len(charges))
	for i, c := range charges {
		keys[i] = l.stateKey(c)
		args = append(args, chargeArgs(c)...)
	}
	vals, err := l.sc.Exec(ctx, l.b.client, keys, args).ToArray()
	if err != nil {
		return nil, l.b.fail("rate limit", err)
	}
	if len(vals) != 4*len(charges) {
		return nil, fmt.Errorf("redis: rate limit: %d values for %d charges", len(vals), len(charges))
	}
	steps := make([]limit.Step, len(charges))
	for i := range steps {
		var n [4]int64
		for j := range n {
			if n[j], err = vals[4*i+j].AsInt64(); err != nil {
				return nil, fmt.Errorf("redis: rate limit: %w", err)
			}
		}
		steps[i] = limit.Step{
			Admit: n[0] == 1, RetryAfter: time.Duration(n[1]) * time.Microsecond,
			Remaining: int(n[2]), Reset: time.Duration(n[3]) * time.Microsecond,
		}
	}
	return steps, nil
}

// refund gives back the admitted, charged steps of charges, best effort: a
// refund that fails leaves the subject charged for one attempt it did not
// get, never admits more than the limit.
func (l *Limiter) refund(ctx context.Context, charges []limit.Charge, steps []limit.Step) {
	for i, c := range charges {
		if !steps[i].Admit {
			continue
		}
		a := chargeArgs(c)
		interval, _ := strconv.ParseInt(a[0], 10, 64)
		amount := strconv.FormatInt(interval*int64(max(c.Cost, 1)), 10)
		if err := l.rf.Exec(ctx, l.b.client, []string{l.stateKey(c)}, []string{amount}).Error(); err != nil {
			l.b.log.Warn("rate limit refund failed", "rule", c.Rule, "err", err)
		}
	}
}

// luaGCRA: KEYS one state key per charge (its TAT in µs of Redis TIME).
// ARGV four per charge: interval µs, capacity µs, cost, dry run (1/0).
// Every charge is evaluated; if every enforced one admits, every admitting
// one is written. Returns four integers per charge: admit (1/0), retry
// after µs, remaining, reset µs.
const luaGCRA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out, news, ok = {}, {}, true
for i = 1, #KEYS do
  local a = (i - 1) * 4
  local interval, capacity, cost = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local dry = ARGV[a + 4] == '1'
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local nxt = tat + cost * interval
  if nxt - now > capacity then
    if not dry then ok = false end
    news[i] = false
    out[#out + 1] = 0
    out[#out + 1] = nxt - now - capacity
    out[#out + 1] = math.floor((capacity - (tat - now)) / interval)
    out[#out + 1] = tat - now
  else
    news[i] = nxt
    out[#out + 1] = 1
    out[#out + 1] = 0
    out[#out + 1] = math.floor((capacity - (nxt - now)) / interval)
    out[#out + 1] = nxt - now
  end
end
if ok then
  for i = 1, #KEYS do
    if news[i] then
      redis.call('SET', KEYS[i], string.format('%d', news[i]), 'PX', math.floor((news[i] - now) / 1000) + 1)
    end
  end
end
return out
`

// luaRefund: KEYS the state key. ARGV the µs to give back. The TAT moves
// back, never before now (then the key goes).
const luaRefund = `
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
tat = tat - tonumber(ARGV[1])
if tat <= now then redis.call('DEL', KEYS[1]) return 1 end
redis.call('SET', KEYS[1], string.format('%d', tat), 'KEEPTTL')
return 1
`
