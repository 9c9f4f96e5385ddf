package redis

import (
	"context"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// expiryRecheck is how often an expiry claim reads the earliest deadline of
// all 256 of its expiry indexes even though it believes it knows them: a
// backstop for a hint that could not be published (a write by a node of an
// older version, or by hand).
const expiryRecheck = 30 * time.Second

// noDeadline stands for an empty expiry index.
const noDeadline = math.MaxInt64

// expiryWatch remembers the earliest deadline (Unix ms) of each of 256
// expiry indexes (the sessions', or the API keys'), so that the claim reads
// an index only when something in it is due instead of all 256 each time. It
// learns them from its own reads (ZRANGE … 0 0 WITHSCORES) and from the
// hints the write scripts publish when a write puts into an index a deadline
// earlier than any it held (the channel is named like the index). Hints only
// arrive while a subscription to them is in place, so what it knows is
// trusted only while one is, and only since the last full read after it was
// confirmed: every way a hint can be missed (no subscription, a dropped
// connection, a Redis restart, a turn another node held in between) makes
// the next claim read every index.
type expiryWatch struct {
	mu sync.Mutex
	// live counts the hint subscriptions in place (one per Bus.Subscribe).
	live int
	// gen moves whenever hints may have been missed; a read begun under an
	// older gen teaches nothing.
	gen uint64
	// known: next holds every index's earliest deadline (or an earlier
	// one), as of the full read at readAt.
	known  bool
	readAt time.Time
	next   [256]int64
	// hinted is the earliest hint per index since a read of it began, so
	// that a hint that overtakes the read's reply is not overwritten.
	hinted [256]int64
}

// plan returns the indexes a claim at nowMs must read: all of them (full)
// unless the watch is trusted, else those whose earliest deadline is due. It
// returns the gen the reads belong to.
func (w *expiryWatch) plan(nowMs int64) (idx []int, full bool, gen uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	full = w.live == 0 || !w.known || time.Since(w.readAt) >= expiryRecheck
	for i := range w.next {
		if full || w.next[i] <= nowMs {
			idx = append(idx, i)
			w.hinted[i] = noDeadline
		}
	}
	return idx, full, w.gen
}

// learn records what reads begun under gen found: earliest[k] is the
// earliest deadline of index idx[k] (noDeadline: empty).
func (w *expiryWatch) learn(gen uint64, idx []int, earliest []int64, full bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if gen != w.gen {
		return
	}
	for k, i := range idx {
		w.next[i] = min(earliest[k], w.hinted[i])
	}
	if full {
		w.known, w.readAt = true, time.Now()
	}
}

// due marks index i as due at nowMs: the claim took some of its members and
// reads it again next time.
func (w *expiryWatch) due(i int, nowMs int64) {
	w.mu.Lock()
	w.next[i] = min(w.next[i], nowMs)
	w.mu.Unlock()
}

// hint records that index i now holds a deadline at ms.
func (w *expiryWatch) hint(i int, ms int64) {
	w.mu.Lock()
	w.next[i] = min(w.next[i], ms)
	w.hinted[i] = min(w.hinted[i], ms)
	w.mu.Unlock()
}

// forget makes the next claim read every index.
func (w *expiryWatch) forget() {
	w.mu.Lock()
	w.gen++
	w.known = false
	w.mu.Unlock()
}

// subscribed and unsubscribed follow the hint subscriptions. Hints published
// before a subscription was confirmed were missed, and so may be those
// before its loss was noticed: both make the next claim read every index.
func (w *expiryWatch) subscribed() {
	w.mu.Lock()
	w.live++
	w.gen++
	w.known = false
	w.mu.Unlock()
}

func (w *expiryWatch) unsubscribed() {
	w.mu.Lock()
	w.live--
	w.gen++
	w.known = false
	w.mu.Unlock()
}

// hintTarget is the watch and index a hint channel is about.
type hintTarget struct {
	w *expiryWatch
	i int
}

// forEachWatch calls f with the session and the API key expiry watches.
func (b *Backend) forEachWatch(f func(w *expiryWatch)) {
	f(&b.expiry)
	f(&b.keyExpiry)
}

// expiryHint handles a message on the broadcast connection that is not an
// API key event: a hint, or nothing of ours.
func (b *Backend) expiryHint(channel, payload string) {
	t, ok := b.hintChannels[channel]
	if !ok {
		return
	}
	ms, err := strconv.ParseFloat(payload, 64)
	if err != nil {
		// Not ours to read: read everything rather than trust it.
		b.log.Warn("redis: undecodable expiry hint; reading every expiry index", "channel", channel)
		t.w.forget()
		return
	}
	t.w.hint(t.i, int64(ms))
}

// wrote records a deadline that this node's own write put into the expiry
// index named index (its hint channel has the same name), so that its own
// claims see it at once rather than when the hint comes back from Redis. A
// time earlier than the deadline only costs one more read of the index.
func (b *Backend) wrote(index string, deadline time.Time) {
	if deadline.IsZero() {
		return
	}
	if t, ok := b.hintChannels[index]; ok {
		t.w.hint(t.i, deadline.UnixMilli())
	}
}

// dueShards returns the shards whose expiry index (named by index) holds a
// deadline at or before now. It reads, in one pipelined round trip, the
// earliest deadline of the indexes w does not know to be later than now:
// none while w is trusted and nothing is due, all 256 after anything that
// may have hidden a deadline from it (see expiryWatch) and every
// expiryRecheck.
func (b *Backend) dueShards(ctx context.Context, w *expiryWatch, index func(shard string) string, now time.Time, op string) ([]string, error) {
	nowMs := now.UnixMilli()
	idx, full, gen := w.plan(nowMs)
	if len(idx) == 0 {
		return nil, nil
	}
	cmds := make(rueidis.Commands, len(idx))
	for k, i := range idx {
		cmds[k] = b.client.B().Zrange().Key(index(shards[i])).Min("0").Max("0").Withscores().Build()
	}
	earliest := make([]int64, len(idx))
	var due []string
	for k, r := range b.client.DoMulti(ctx, cmds...) {
		zs, err := r.AsZScores()
		if err != nil {
			return nil, b.fail(op, err)
		}
		earliest[k] = noDeadline
		if len(zs) > 0 {
			earliest[k] = int64(zs[0].Score)
			if earliest[k] <= nowMs {
				due = append(due, shards[idx[k]])
			}
		}
	}
	w.learn(gen, idx, earliest, full)
	return due, nil
}

// markDue has w read the indexes of shards again at the next claim: the
// claim took some of their members, and more may be due.
func (w *expiryWatch) markDue(shardList []string, now time.Time) {
	for _, sh := range shardList {
		i, _ := strconv.ParseUint(sh, 16, 8)
		w.due(int(i), now.UnixMilli())
	}
}
