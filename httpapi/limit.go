package httpapi

import (
	"sync"
	"time"
)

// Defaults of a zero FailureLimiter.
const (
	DefaultMaxFailures    = 10
	DefaultFailureWindow  = 5 * time.Minute
	DefaultFailureMaxKeys = 100_000
)

// FailureLimiter slows down password guessing: it counts failed sign-ins per
// key (the API uses the client IP and the username) and refuses attempts
// under a key that reached Max failures until its window has passed.
// Successful sign-ins cost nothing, so a user who types the password right is
// never throttled by their own earlier typos beyond Max.
//
// Counts live in this process: with several nodes behind a load balancer an
// attacker gets Max attempts per node. Memory is bounded by MaxKeys; when it
// is full, entries whose window passed are dropped first, then arbitrary ones.
// The zero value is ready to use, a nil *FailureLimiter limits nothing, and
// it is safe for concurrent use.
type FailureLimiter struct {
	// Max is the number of failures allowed per key and window; default 10.
	Max int
	// Window is how long a key's failures are remembered, from its first
	// failure; default 5 minutes.
	Window time.Duration
	// MaxKeys bounds the number of keys remembered; default 100000.
	MaxKeys int
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu   sync.Mutex
	keys map[string]*failures
}

type failures struct {
	count int
	since time.Time
}

func (l *FailureLimiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

func (l *FailureLimiter) max() int {
	if l.Max > 0 {
		return l.Max
	}
	return DefaultMaxFailures
}

func (l *FailureLimiter) window() time.Duration {
	if l.Window > 0 {
		return l.Window
	}
	return DefaultFailureWindow
}

// Blocked reports whether any of keys reached the failure limit, and when the
// earliest such block ends.
func (l *FailureLimiter) Blocked(keys ...string) (retryAfter time.Duration, blocked bool) {
	if l == nil {
		return 0, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now, win := l.now(), l.window()
	for _, k := range keys {
		f := l.keys[k]
		if f == nil || now.Sub(f.since) >= win || f.count < l.max() {
			continue
		}
		if wait := f.since.Add(win).Sub(now); !blocked || wait > retryAfter {
			retryAfter, blocked = wait, true
		}
	}
	return retryAfter, blocked
}

// Fail records one failure under each of keys.
func (l *FailureLimiter) Fail(keys ...string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now, win := l.now(), l.window()
	if l.keys == nil {
		l.keys = map[string]*failures{}
	}
	for _, k := range keys {
		f := l.keys[k]
		if f == nil || now.Sub(f.since) >= win {
			l.makeRoom(now, win)
			f = &failures{since: now}
			l.keys[k] = f
		}
		f.count++
	}
}

// Reset forgets the failures under key.
func (l *FailureLimiter) Reset(key string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	delete(l.keys, key)
	l.mu.Unlock()
}

// makeRoom drops entries until one more fits under MaxKeys.
func (l *FailureLimiter) makeRoom(now time.Time, win time.Duration) {
	limit := l.MaxKeys
	if limit <= 0 {
		limit = DefaultFailureMaxKeys
	}
	if len(l.keys) < limit {
		return
	}
	for k, f := range l.keys {
		if now.Sub(f.since) >= win {
			delete(l.keys, k)
		}
	}
	for k := range l.keys {
		if len(l.keys) < limit {
			break
		}
		delete(l.keys, k)
	}
}
