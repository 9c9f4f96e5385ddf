package httpapi

import (
	"context"
	"runtime"
	"sync"
	"time"

	"github.com/sessionbridge/sessionbridge/limit"
)

// Defaults of a zero FailureLimiter.
const (
	DefaultMaxFailures    = 10
	DefaultFailureWindow  = 5 * time.Minute
	DefaultFailureMaxKeys = 100_000
	// DefaultLoginQueueWait is how long a sign-in waits for a free password
	// check slot when API.LoginQueueWait is zero.
	DefaultLoginQueueWait = 2 * time.Second
)

// FailureLimiter slows down password guessing: it counts failed sign-ins per
// key (the API uses the client IP and the username) and refuses attempts
// under a key that reached Max failures until its window has passed.
// Successful sign-ins cost nothing, so a user who types the password right is
// never throttled by their own earlier typos beyond Max.
//
// An attempt is counted when it starts (Reserve), not when its password check
// ends: attempts in flight count as failures until they are refunded, so that
// concurrent attempts cannot pass the limit together. At most Max attempts
// per key and window are ever evaluated.
//
// It is the [limit.Failures] of a single node: counts live in this process,
// so with several nodes behind a load balancer an attacker would get Max
// attempts per node (a cluster on Redis counts in Redis instead). Memory is bounded by MaxKeys; when it
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

var _ limit.Failures = (*FailureLimiter)(nil)

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

func (l *FailureLimiter) max() int { return l.Limit() }

func (l *FailureLimiter) window() time.Duration { return l.Period() }

// Limit is the number of failures allowed per key and window: Max, or
// DefaultMaxFailures when Max is not positive.
func (l *FailureLimiter) Limit() int {
	if l.Max > 0 {
		return l.Max
	}
	return DefaultMaxFailures
}

// Period is how long a key's failures are remembered: Window, or
// DefaultFailureWindow when Window is not positive.
func (l *FailureLimiter) Period() time.Duration {
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
	return l.blocked(l.now(), keys)
}

// blocked is Blocked with l.mu held.
func (l *FailureLimiter) blocked(now time.Time, keys []string) (retryAfter time.Duration, blocked bool) {
	win := l.window()
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

// Reservation is one attempt counted by Reserve. It stays counted as a
// failure unless Refund gives it back.
type Reservation struct {
	l       *FailureLimiter
	entries map[string]*failures
}

// Reserve starts an attempt under keys: if none of them reached Max, it
// counts one failure under each, atomically, and returns the reservation;
// otherwise it counts nothing and reports how long until the earliest block
// ends, as Blocked does. The caller evaluates the attempt only when ok, and
// calls Refund on the reservation if the attempt succeeded or was not
// evaluated after all. A nil limiter reserves nothing and always allows.
// It never fails: err is always nil.
func (l *FailureLimiter) Reserve(_ context.Context, keys ...string) (r limit.Reservation, retryAfter time.Duration, ok bool, err error) {
	if l == nil {
		return (*Reservation)(nil), 0, true, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if wait, blocked := l.blocked(now, keys); blocked {
		return nil, wait, false, nil
	}
	res := &Reservation{l: l, entries: make(map[string]*failures, len(keys))}
	for _, k := range keys {
		res.entries[k] = l.fail(now, k)
	}
	return res, 0, true, nil
}

// Refund gives back the failure counted by Reserve under each key, unless the
// key's window has passed or its count was reset meanwhile (there is nothing
// left to give back then). Refund is idempotent; a nil Reservation does
// nothing.
func (r *Reservation) Refund(context.Context) {
	if r == nil || r.l == nil {
		return
	}
	l := r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, f := range r.entries {
		// The same entry, not just the same key: a new window's count holds
		// no failure of ours.
		if l.keys[k] == f && f.count > 0 {
			f.count--
		}
	}
	r.entries = nil
}

// Fail records one failure under each of keys.
func (l *FailureLimiter) Fail(keys ...string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, k := range keys {
		l.fail(now, k)
	}
}

// fail counts one failure under key and returns its entry; l.mu is held.
func (l *FailureLimiter) fail(now time.Time, key string) *failures {
	win := l.window()
	if l.keys == nil {
		l.keys = map[string]*failures{}
	}
	f := l.keys[key]
	if f == nil || now.Sub(f.since) >= win {
		l.makeRoom(now, win)
		f = &failures{since: now}
		l.keys[key] = f
	}
	f.count++
	return f
}

// Reset forgets the failures under key. It never fails.
func (l *FailureLimiter) Reset(_ context.Context, key string) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	delete(l.keys, key)
	l.mu.Unlock()
	return nil
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

// hashSlots bounds the password checks running at once. A check is the
// costly part of a sign-in (an argon2id hash holds 19 MiB and a CPU core for
// tens of milliseconds), so without a bound concurrent sign-ins could take
// the node's memory; with it, a flood of sign-ins waits, then is refused.
type hashSlots struct {
	slots chan struct{}
	wait  time.Duration
}

// newHashSlots returns n slots (runtime.GOMAXPROCS(0) when n < 1) for which a
// check waits at most wait (DefaultLoginQueueWait when wait <= 0).
func newHashSlots(n int, wait time.Duration) *hashSlots {
	if n < 1 {
		n = runtime.GOMAXPROCS(0)
	}
	if wait <= 0 {
		wait = DefaultLoginQueueWait
	}
	return &hashSlots{slots: make(chan struct{}, n), wait: wait}
}

// acquire takes a slot, waiting until one is free, s.wait has passed or ctx
// is done; it reports whether it got one. A caller that got one must release
// it.
func (s *hashSlots) acquire(ctx context.Context) bool {
	select {
	case s.slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(s.wait)
	defer t.Stop()
	select {
	case s.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// release frees a slot taken by acquire.
func (s *hashSlots) release() { <-s.slots }
