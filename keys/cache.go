package keys

import (
	"container/list"
	"sync"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
)

// Defaults of a Cache's zero fields.
const (
	DefaultCacheSize   = 10000
	DefaultCacheMaxAge = time.Minute
)

// cacheGens is how many generation counters a Cache spreads key IDs over: a
// fill is dropped when the counter of its key moved during the store read,
// so more counters mean fewer fills dropped because of another key's event.
const cacheGens = 64

// Cache is a node-local cache of API key records, so that verifying a key
// already seen costs no store round trip. It holds the stored record (the
// SHA-256 of the secret, never the secret): the presented secret is hashed
// and compared in constant time on every verification, cached or not.
//
// A record is dropped by every event about its key (updated, deleted,
// expired), and every record is dropped when events may have been lost (a
// gap): Cache is a [sb.EventHandler], fed by the bus subscription of the
// node (the gateway's Config.KeyEvents, or its own Subscribe). A revocation
// therefore stops a cached key within the same bound as it closes the key's
// sockets. MaxAge is a backstop only: a record older than it is read again.
//
// A read that raced with an event is not cached: a fill is kept only if no
// event about its key (and no gap) arrived since the read began.
//
// Set the fields before first use. The zero value is ready to use; a nil
// *Cache caches nothing. Safe for concurrent use.
type Cache struct {
	// Size bounds the number of records; the least recently used goes
	// first. Zero means DefaultCacheSize.
	Size int
	// MaxAge bounds how long a record is served; zero means
	// DefaultCacheMaxAge.
	MaxAge time.Duration

	mu   sync.Mutex
	m    map[string]*list.Element
	lru  list.List // of *cached, most recently used first
	gens [cacheGens]uint64
	all  uint64 // moves on every flush
}

type cached struct {
	k  *sb.APIKey // never modified once cached: replaced instead
	at time.Time  // when it was read from the store
}

func (c *Cache) size() int {
	if c.Size > 0 {
		return c.Size
	}
	return DefaultCacheSize
}

func (c *Cache) maxAge() time.Duration {
	if c.MaxAge > 0 {
		return c.MaxAge
	}
	return DefaultCacheMaxAge
}

func gen(id string) int {
	// FNV-1a: key IDs are random, any cheap mix spreads them.
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return int(h % cacheGens)
}

// get returns the cached record of id, read at most MaxAge before now. The
// record is shared: callers must not modify it.
func (c *Cache) get(id string, now time.Time) (*sb.APIKey, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[id]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cached)
	if now.Sub(e.at) >= c.maxAge() || now.Before(e.at) {
		c.lru.Remove(el)
		delete(c.m, id)
		return nil, false
	}
	c.lru.MoveToFront(el)
	return e.k, true
}

// fillToken returns what put needs to tell whether an event about id came
// while its record was being read. Take it before the read.
func (c *Cache) fillToken(id string) uint64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.all + c.gens[gen(id)]
}

// put caches k, read at at, unless an event about it or a gap arrived since
// tok was taken. The cache keeps k itself: the caller must not modify it
// afterwards.
func (c *Cache) put(k *sb.APIKey, tok uint64, at time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.all+c.gens[gen(k.ID)] != tok {
		return
	}
	if c.m == nil {
		c.m = make(map[string]*list.Element)
	}
	if el, ok := c.m[k.ID]; ok {
		el.Value = &cached{k: k, at: at}
		c.lru.MoveToFront(el)
		return
	}
	for c.lru.Len() >= c.size() {
		last := c.lru.Back()
		c.lru.Remove(last)
		delete(c.m, last.Value.(*cached).k.ID)
	}
	c.m[k.ID] = c.lru.PushFront(&cached{k: k, at: at})
}

// used records a use of id at at from ip in its cached record, so that
// this node does not try to write the use again within KeyUseInterval.
func (c *Cache) used(id string, at time.Time, ip string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[id]
	if !ok {
		return
	}
	e := el.Value.(*cached)
	k := e.k.Clone()
	k.LastUsedAt, k.LastIP = at, ip
	el.Value = &cached{k: k, at: e.at}
}

// Invalidate drops the record of id, and any fill of it in flight.
func (c *Cache) Invalidate(id string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gens[gen(id)]++
	if el, ok := c.m[id]; ok {
		c.lru.Remove(el)
		delete(c.m, id)
	}
}

// Flush drops every record, and every fill in flight.
func (c *Cache) Flush() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.all++
	clear(c.m)
	c.lru.Init()
}

// Len returns the number of cached records.
func (c *Cache) Len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// HandleEvent drops the record of the key an API key event names; other
// events are ignored.
func (c *Cache) HandleEvent(ev sb.Event) {
	if ev.Type.IsKey() && ev.KeyID != "" {
		c.Invalidate(ev.KeyID)
	}
}

// HandleGap drops every record: events may have been lost.
func (c *Cache) HandleGap() { c.Flush() }

var _ sb.EventHandler = (*Cache)(nil)
