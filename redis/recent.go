package redis

import (
	"sync"
	"time"
)

// recentWindow is how long after a write of this node its Gets of that
// session bypass the client cache.
const recentWindow = 2 * time.Second

// recent remembers the sessions this node wrote, or received an event about,
// in the last one to two windows. Redis sends the invalidation of a write
// asynchronously, on the connection that cached the key, which may be another
// than the one that carried the write's reply or the event; so without this a
// Get right after a node's own write, or right after the event of another
// node's write, could be served the copy from before it. Reads of
// recently written sessions go to Redis instead; by the time the mark is
// forgotten the invalidation has long arrived. Two generations of marks make
// both operations O(1) without a sweeper goroutine.
type recent struct {
	mu        sync.Mutex
	cur, prev map[string]struct{}
	since     time.Time
}

func (r *recent) rotate(now time.Time) {
	if r.cur == nil {
		r.cur, r.since = make(map[string]struct{}), now
		return
	}
	if d := now.Sub(r.since); d >= recentWindow {
		if d >= 2*recentWindow {
			r.prev = nil
		} else {
			r.prev = r.cur
		}
		r.cur, r.since = make(map[string]struct{}), now
	}
}

func (r *recent) mark(ids ...string) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rotate(now)
	for _, id := range ids {
		r.cur[id] = struct{}{}
	}
}

func (r *recent) has(id string) bool {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rotate(now)
	if _, ok := r.cur[id]; ok {
		return true
	}
	_, ok := r.prev[id]
	return ok
}
