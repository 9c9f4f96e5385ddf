package redis

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/sessionbridge/sessionbridge/usage"
)

// Usage is a [usage.Sink] and [usage.Source] in Redis. A subject's buckets
// are hashes (metric → count) tagged with the subject, so that one script
// adds an entry to its minute, hour and day buckets on one slot; the hour
// rankings are sorted sets tagged by kind and metric, so that Top unions
// them on one slot. A flush of any number of entries is one pipelined round
// trip.
type Usage struct {
	b   *Backend
	add *rueidis.Lua
	now func() time.Time
}

var (
	_ usage.Sink   = (*Usage)(nil)
	_ usage.Source = (*Usage)(nil)
)

func newUsage(b *Backend) *Usage {
	return &Usage{b: b, add: rueidis.NewLuaScript(luaUsageAdd), now: time.Now}
}

// usageKey is the bucket of s of width step starting at start.
func (u *Usage) usageKey(s usage.Subject, step usage.Step, start time.Time) string {
	return u.b.prefix + "us:{" + s.Kind + ":" + s.ID + "}:" + step.String() + ":" + strconv.FormatInt(start.Unix(), 10)
}

// topKey is the ranking of kind by metric for the hour starting at start.
func (u *Usage) topKey(kind, metric string, start time.Time) string {
	return u.b.prefix + "ut:{" + kind + ":" + metric + "}:" + strconv.FormatInt(start.Unix(), 10)
}

// usageChunk bounds the entries one round trip of a Write carries: a flush
// of any number of subjects is a few round trips, none of which grows with
// the node's sockets.
const usageChunk = 256

// Write adds entries to the buckets of at (or of their own At), in round
// trips of at most usageChunk scripts and then their ranking updates.
func (u *Usage) Write(ctx context.Context, at time.Time, entries []usage.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	ctx, cancel := u.b.opCtx(ctx)
	defer cancel()
	var failed []int
	var first error
	for lo := 0; lo < len(entries); lo += usageChunk {
		hi := min(lo+usageChunk, len(entries))
		f, err := u.writeChunk(ctx, at, entries[lo:hi])
		for _, i := range f {
			failed = append(failed, lo+i)
		}
		first = cmp.Or(first, err)
	}
	if len(failed) == len(entries) {
		return u.b.fail("usage write", first)
	}
	if len(failed) > 0 {
		return &usage.PartialError{Failed: failed, Err: u.b.fail("usage write", first)}
	}
	return nil
}

// writeChunk writes entries and returns the indexes of those whose script
// failed, and the first failure.
func (u *Usage) writeChunk(ctx context.Context, at time.Time, entries []usage.Entry) ([]int, error) {
	scripts := make([]rueidis.LuaExec, 0, len(entries))
	var cmds rueidis.Commands
	// rankings are the hour rankings touched, with their expiry (Unix ms).
	rankings := map[string]int64{}
	// off[i] is where the ranking commands of entries[i] start in cmds.
	off := make([]int, len(entries)+1)
	for i, e := range entries {
		off[i] = len(cmds)
		when := e.When(at).UTC()
		hour := when.Truncate(time.Hour)
		keys := make([]string, 0, len(usage.Steps))
		args := make([]string, 0, 2*len(usage.Steps)+2+2*len(e.Counts))
		for _, st := range usage.Steps {
			start := when.Truncate(time.Duration(st))
			keys = append(keys, u.usageKey(e.Subject, st, start))
			args = append(args, strconv.FormatInt(start.Add(st.Retention()).UnixMilli(), 10))
		}
		for _, st := range usage.Steps {
			args = append(args, strconv.FormatInt(e.PeakIn(st), 10))
		}
		if e.HasLevel() {
			args = append(args, usage.LevelField(e.Node), strconv.FormatInt(e.Level, 10))
		} else {
			args = append(args, "", "")
		}
		for m, n := range e.Counts {
			if n == 0 {
				continue
			}
			args = append(args, m, strconv.FormatInt(n, 10))
			tk := u.topKey(e.Subject.Kind, m, hour)
			cmds = append(cmds, u.b.client.B().Zincrby().Key(tk).Increment(float64(n)).Member(e.Subject.ID).Build())
			rankings[tk] = hour.Add(usage.Hour.Retention()).UnixMilli()
		}
		scripts = append(scripts, rueidis.LuaExec{Keys: keys, Args: args})
	}
	off[len(entries)] = len(cmds)
	// Scripts first: a crash between the two leaves the series exact and
	// only the ranking short. Entries whose script failed are named in a
	// usage.PartialError, so that the Recorder writes only those again.
	var failed []int
	var first error
	for i, res := range u.add.ExecMulti(ctx, u.b.client, scripts...) {
		if err := res.Error(); err != nil {
			failed = append(failed, i)
			first = cmp.Or(first, err)
		}
	}
	if len(failed) == len(entries) {
		return failed, first
	}
	if len(failed) > 0 {
		// Rank only what was stored: the rest comes again.
		kept := make(rueidis.Commands, 0, len(cmds))
		next := 0
		for i := range entries {
			if next < len(failed) && failed[next] == i {
				next++
				continue
			}
			kept = append(kept, cmds[off[i]:off[i+1]]...)
		}
		cmds = kept
	}
	if len(cmds) > 0 {
		// One expiry per ranking touched, not one per subject.
		for tk, exp := range rankings {
			cmds = append(cmds, u.b.client.B().Pexpireat().Key(tk).MillisecondsTimestamp(exp).Build())
		}
		for _, res := range u.b.client.DoMulti(ctx, cmds...) {
			if err := res.Error(); err != nil {
				// The series are written: failing the write would have
				// them written twice. This flush's ranking stays short.
				u.b.log.Warn("redis: usage ranking not updated", "err", shortErr(u.b.fail("usage ranking", err)))
				break
			}
		}
	}
	return failed, first
}

// Series returns the subject's buckets from from to to.
func (u *Usage) Series(ctx context.Context, s usage.Subject, from, to time.Time, step usage.Step) ([]usage.Point, error) {
	starts, err := usage.ReadRange(from, to, step)
	if err != nil {
		return nil, err
	}
	cmds := make(rueidis.Commands, len(starts))
	for i, start := range starts {
		cmds[i] = u.b.client.B().Hgetall().Key(u.usageKey(s, step, start)).Build()
	}
	ctx, cancel := u.b.opCtx(ctx)
	defer cancel()
	out := make([]usage.Point, len(starts))
	for i, res := range u.b.client.DoMulti(ctx, cmds...) {
		m, err := res.AsStrMap()
		if err != nil {
			return nil, u.b.fail("usage series", err)
		}
		counts := make(map[string]int64, len(m))
		for k, v := range m {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("redis: usage series: corrupt count %s=%q", k, v)
			}
			counts[k] = n
		}
		out[i] = usage.Point{Start: starts[i], Counts: counts}
	}
	return usage.Carry(out, from, u.now(), step), nil
}

// Top ranks the subjects of kind by metric over the hours of window.
func (u *Usage) Top(ctx context.Context, kind, metric string, window time.Duration, limit int) ([]usage.Ranked, error) {
	hours, err := usage.TopHours(u.now(), window, limit)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(hours))
	for i, h := range hours {
		keys[i] = u.topKey(kind, metric, h)
	}
	ctx, cancel := u.b.opCtx(ctx)
	defer cancel()
	zs, err := u.b.client.Do(ctx, u.b.client.B().Zunion().Numkeys(int64(len(keys))).Key(keys...).Withscores().Build()).AsZScores()
	if err != nil {
		return nil, u.b.fail("usage top", err)
	}
	sums := make(map[string]int64, len(zs))
	for _, z := range zs {
		sums[z.Member] = int64(z.Score)
	}
	return usage.Rank(sums, limit), nil
}

// luaUsageAdd: KEYS the minute, hour and day buckets of one subject. ARGV
// their expiries (Unix ms), their peaks (0 for none), the field of the
// node's level and the level (both empty for none), then metric/count
// pairs. Counts are added; the peak field keeps the maximum; the level goes
// to the minute bucket.
//
// A bucket gets its expiry from the script that creates it, which is the
// one that creates its first field: so the script sets it only when one of
// its writes created a field (HINCRBY answering the count it added, HSETNX
// or HSET answering 1), and a bucket that has fields already has its
// expiry. A new subject's peak is set in one call (HSETNX), a known one's
// read and raised if lower.
const luaUsageAdd = `
for i = 1, 3 do
  local k = KEYS[i]
  local peak = tonumber(ARGV[i + 3])
  local fresh = false
  for j = 9, #ARGV, 2 do
    local n = tonumber(ARGV[j + 1])
    if redis.call('HINCRBY', k, ARGV[j], n) == n then fresh = true end
  end
  if peak > 0 then
    if redis.call('HSETNX', k, 'peak_connections', peak) == 1 then
      fresh = true
    elseif peak > tonumber(redis.call('HGET', k, 'peak_connections')) then
      redis.call('HSET', k, 'peak_connections', peak)
    end
  end
  if i == 1 and ARGV[7] ~= '' and redis.call('HSET', k, ARGV[7], ARGV[8]) == 1 then fresh = true end
  if fresh then redis.call('PEXPIREAT', k, ARGV[i]) end
end
return 1
`
