package redis

import (
	"container/heap"
	"encoding/base64"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionbridge/sessionbridge"
)

// DefaultRevocationJournal is how many revocations a node remembers by
// default; about 100 bytes each, so at most some 10 MB.
const DefaultRevocationJournal = 100_000

// journalKey is a session ID in 13 bytes: its shard byte and its 12 random
// bytes. IDs are checked with sessionbridge.ValidID before they get here.
type journalKey [13]byte

func keyOf(id string) (journalKey, bool) {
	var k journalKey
	if !sessionbridge.ValidID(id) {
		return k, false
	}
	if _, err := hex.Decode(k[:1], []byte(sessionbridge.ShardOfID(id))); err != nil {
		return k, false
	}
	if n, err := base64.RawURLEncoding.Decode(k[1:], []byte(id[2:])); err != nil || n != len(k)-1 {
		return k, false
	}
	return k, true
}

func (k journalKey) id() string {
	return hex.EncodeToString(k[:1]) + base64.RawURLEncoding.EncodeToString(k[1:])
}

// journal remembers the sessions this node saw revoked (its own deletes and
// rotations, and the deleted events of every other node), each until the
// moment after which the session would be dead anyway: its deadline when
// this node knew it, else the longest a session may live. Redis can lose
// acknowledged writes when it restarts (from an RDB snapshot taken before
// the revocation, or an AOF whose last writes never reached the disk) and
// then serves the revoked sessions again; with the journal, this node never
// serves a revoked session it knows of, and writes the revocations again
// when it sees the server restarted (see Backend.watch).
//
// It is bounded: when full, the entry that would expire first is dropped
// (and counted), so the journal keeps the revocations that matter longest.
// All methods are safe for concurrent use.
type journal struct {
	max int
	n   atomic.Int64 // len(byKey), for a lock-free "empty" check on every read

	mu      sync.RWMutex
	byKey   map[journalKey]int64 // until, Unix ms
	byUntil untilHeap            // may hold stale entries: see prune
	dropped uint64
}

func newJournal(max int) *journal {
	return &journal{max: max, byKey: make(map[journalKey]int64)}
}

// add remembers id as revoked until until. An entry already there keeps the
// later of the two times, unless onlyIfAbsent: then it is left as it is (an
// event about this node's own delete must not replace the exact deadline it
// recorded by the longer default). It reports how many entries were dropped
// in all so far because the journal was full.
func (j *journal) add(id string, until, now time.Time, onlyIfAbsent bool) (dropped uint64) {
	k, ok := keyOf(id)
	if !ok || !until.After(now) {
		return j.droppedCount()
	}
	u := until.UnixMilli()
	j.mu.Lock()
	defer j.mu.Unlock()
	if cur, ok := j.byKey[k]; ok {
		if onlyIfAbsent || cur >= u {
			return j.dropped
		}
	} else {
		j.pruneLocked(now.UnixMilli())
		for len(j.byKey) >= j.max {
			if j.popLocked() {
				j.dropped++
			}
		}
	}
	j.byKey[k] = u
	heap.Push(&j.byUntil, untilEntry{key: k, until: u})
	j.compactLocked()
	j.n.Store(int64(len(j.byKey)))
	return j.dropped
}

// has reports whether id is remembered as revoked.
func (j *journal) has(id string) bool {
	if j.n.Load() == 0 {
		return false
	}
	k, ok := keyOf(id)
	if !ok {
		return false
	}
	j.mu.RLock()
	_, ok = j.byKey[k]
	j.mu.RUnlock()
	return ok
}

// ids returns every remembered ID whose time has not passed.
func (j *journal) ids(now time.Time) []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.pruneLocked(now.UnixMilli())
	out := make([]string, 0, len(j.byKey))
	for k := range j.byKey {
		out = append(out, k.id())
	}
	j.n.Store(int64(len(j.byKey)))
	return out
}

func (j *journal) len() int { return int(j.n.Load()) }

func (j *journal) droppedCount() uint64 {
	j.mu.RLock()
	defer j.mu.RUnlock()
	return j.dropped
}

// pruneLocked forgets the entries whose time has passed.
func (j *journal) pruneLocked(nowMs int64) {
	for len(j.byUntil) > 0 && j.byUntil[0].until <= nowMs {
		j.popLocked()
	}
}

// popLocked takes the first heap entry off and forgets its key, unless the
// entry was superseded by a later time for the same key. It reports whether
// it forgot one.
func (j *journal) popLocked() bool {
	e := heap.Pop(&j.byUntil).(untilEntry)
	if u, ok := j.byKey[e.key]; ok && u == e.until {
		delete(j.byKey, e.key)
		return true
	}
	return false
}

// compactLocked rebuilds the heap when superseded entries make up half of
// it, so that it stays within twice the size of the map.
func (j *journal) compactLocked() {
	if len(j.byUntil) <= 2*len(j.byKey)+64 {
		return
	}
	h := make(untilHeap, 0, len(j.byKey))
	for k, u := range j.byKey {
		h = append(h, untilEntry{key: k, until: u})
	}
	heap.Init(&h)
	j.byUntil = h
}

type untilEntry struct {
	key   journalKey
	until int64
}

// untilHeap is a min-heap of entries by until.
type untilHeap []untilEntry

func (h untilHeap) Len() int           { return len(h) }
func (h untilHeap) Less(a, b int) bool { return h[a].until < h[b].until }
func (h untilHeap) Swap(a, b int)      { h[a], h[b] = h[b], h[a] }
func (h *untilHeap) Push(x any)        { *h = append(*h, x.(untilEntry)) }
func (h *untilHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
