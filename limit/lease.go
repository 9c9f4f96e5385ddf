package limit

import (
	"context"
	"sync"
	"time"
)

// DefaultLeaseTTL is how long leased tokens may be spent before they lapse.
const DefaultLeaseTTL = time.Second

// Leaser spends cluster-wide rate limits locally. A node leases a few tokens
// at a time from the shared bucket (one Allow with a cost), and spends them
// on frames without I/O: a frame costs a mutex and a decrement. Tokens are
// charged to the bucket when leased, so the cluster admits at most the limit
// plus the unspent leases, at most one lease per node: a lease is 1 % of the
// rate per period (at least one token), and it lapses after LeaseTTL.
//
// When the shared limiter cannot answer, each subject falls back to a local
// bucket of the rate divided by the live nodes: never unlimited, never a
// refusal of everything.
type Leaser struct {
	// Shared is the cluster's limiter (Redis); required.
	Shared Limiter
	// Nodes returns how many nodes are live, for the fallback share; nil
	// means 1.
	Nodes func() int
	// LeaseTTL defaults to DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	local Memory
	mu    sync.Mutex
	held  map[string]*Bucket
}

// Bucket is one rule and subject's local share, from Leaser.Bucket. It is
// safe for concurrent use; every connection of the subject on this node
// takes from the same Bucket.
type Bucket struct {
	l      *Leaser
	charge Charge
	lease  int

	mu          sync.Mutex
	tokens      int
	expires     time.Time
	deniedUntil time.Time
	refs        int
}

// Bucket returns the local share of c's rule and subject, creating it on
// first use; Release it when the connection that asked for it ends. The
// rate may differ from the one a live Bucket was made with: the latest
// wins, as the shared state does not depend on it.
func (l *Leaser) Bucket(c Charge) (*Bucket, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held == nil {
		// No Bucket exists yet, so nothing reads the local limiter's clock.
		l.held = make(map[string]*Bucket)
		l.local.Now = l.now
	}
	k := stateKey(c)
	b := l.held[k]
	if b == nil {
		b = &Bucket{l: l}
		l.held[k] = b
	}
	b.mu.Lock()
	b.charge, b.lease = c, leaseSize(c.Rate)
	b.refs++
	b.mu.Unlock()
	return b, nil
}

// leaseSize is 1 % of the burst, at least 1.
func leaseSize(r Rate) int { return max(1, burst(r)/100) }

// Release gives the Bucket back; the last release forgets it.
func (b *Bucket) Release() {
	l := b.l
	l.mu.Lock()
	defer l.mu.Unlock()
	b.mu.Lock()
	b.refs--
	last := b.refs == 0
	k := stateKey(b.charge)
	b.mu.Unlock()
	if last && l.held[k] == b {
		delete(l.held, k)
	}
}

func (l *Leaser) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

func (l *Leaser) ttl() time.Duration {
	if l.LeaseTTL > 0 {
		return l.LeaseTTL
	}
	return DefaultLeaseTTL
}

// Take spends one token. It returns true if admitted; else how long until a
// token may be available. Only when the local lease is spent does it ask the
// shared limiter (with ctx), once per lease; a refusal is remembered until
// its retry time, so a flood of refused frames costs no I/O.
func (b *Bucket) Take(ctx context.Context) (bool, time.Duration) {
	now := b.l.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens > 0 && now.Before(b.expires) {
		b.tokens--
		return true, 0
	}
	if now.Before(b.deniedUntil) {
		return false, b.deniedUntil.Sub(now)
	}
	got, retry := b.refill(ctx, now)
	if got == 0 {
		b.deniedUntil = now.Add(retry)
		return false, retry
	}
	b.tokens, b.expires = got-1, now.Add(b.l.ttl())
	return true, 0
}

// Refund gives back a token that Take admitted but the caller did not use
// (another rule refused the frame), if the lease it came from is still
// current.
func (b *Bucket) Refund() {
	now := b.l.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Before(b.expires) && b.tokens < b.lease {
		b.tokens++
	}
}

// refill leases up to b.lease tokens, fewer if the bucket has fewer left.
// It runs with b.mu held: the connections of one subject on one node wait
// for one lease rather than each asking for their own.
func (b *Bucket) refill(ctx context.Context, now time.Time) (int, time.Duration) {
	want := b.lease
	for range 2 {
		c := b.charge
		c.Cost = want
		d, err := b.l.Shared.Allow(ctx, c)
		if err != nil {
			return b.fallback(ctx)
		}
		if d.Allowed {
			return want, 0
		}
		if d.Remaining <= 0 || d.Remaining >= want {
			return 0, max(d.RetryAfter, time.Millisecond)
		}
		want = d.Remaining
	}
	return 0, time.Millisecond
}

// fallback decides one token against this node's share of the rate.
func (b *Bucket) fallback(ctx context.Context) (int, time.Duration) {
	nodes := 1
	if b.l.Nodes != nil {
		nodes = max(b.l.Nodes(), 1)
	}
	c := b.charge
	c.Rate.N = max(1, c.Rate.N/nodes)
	if c.Rate.Burst > 0 {
		c.Rate.Burst = max(1, c.Rate.Burst/nodes)
	}
	c.Cost = 1
	d, err := b.l.local.Allow(ctx, c)
	if err != nil || !d.Allowed {
		return 0, max(d.RetryAfter, time.Millisecond)
	}
	return 1, 0
}
