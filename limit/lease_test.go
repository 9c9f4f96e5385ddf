package limit_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/internal/testclock"
	"github.com/sessionbridge/sessionbridge/limit"
)

// countingLimiter wraps a Limiter, counts calls and can be switched off.
type countingLimiter struct {
	limit.Limiter
	mu    sync.Mutex
	calls int
	down  bool
}

var errDown = errors.New("shared limiter away")

func (c *countingLimiter) Allow(ctx context.Context, charges ...limit.Charge) (limit.Decision, error) {
	c.mu.Lock()
	c.calls++
	down := c.down
	c.mu.Unlock()
	if down {
		return limit.Decision{}, errDown
	}
	return c.Limiter.Allow(ctx, charges...)
}

func (c *countingLimiter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// TestLeasedOverAdmissionBound: two nodes, each sending at twice the
// cluster's limit for ten seconds, admit at most the limit plus its burst
// plus one lease per node.
func TestLeasedOverAdmissionBound(t *testing.T) {
	c := testclock.New(time.Unix(1_700_000_000, 0))
	shared := &limit.Memory{Now: c.Now}
	const rate = 1000 // per second; lease = 10
	charge := limit.Charge{Rule: "key_frames_per_second", Subject: "key:k", Rate: limit.PerSecond(rate)}
	var nodes [2]*limit.Bucket
	for i := range nodes {
		l := &limit.Leaser{Shared: shared, Now: c.Now}
		b, err := l.Bucket(charge)
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = b
	}
	admitted := 0
	const seconds = 10
	// Each node sends 2 × rate per second, interleaved, in 1 ms steps.
	for range seconds * 1000 {
		for range 2 {
			for _, b := range nodes {
				if ok, _ := b.Take(context.Background()); ok {
					admitted++
				}
			}
		}
		c.Advance(time.Millisecond)
	}
	limitTotal := rate*seconds + rate // the sustained rate plus one burst
	bound := limitTotal + max(rate/100, 2*10)
	if admitted > bound || admitted < rate*seconds {
		t.Fatalf("admitted %d over %d s at a limit of %d/s: want between %d and %d", admitted, seconds, rate, rate*seconds, bound)
	}
	t.Logf("admitted %d, limit %d (+burst), over-admission %.2f%%", admitted, rate*seconds,
		100*float64(admitted-limitTotal)/float64(rate*seconds))
}

// TestLeasedSpendsLocally: frames within a lease cost no call to the shared
// limiter, and a refused flood costs none either until its retry time.
func TestLeasedSpendsLocally(t *testing.T) {
	c := testclock.New(time.Unix(1_700_000_000, 0))
	shared := &countingLimiter{Limiter: &limit.Memory{Now: c.Now}}
	l := &limit.Leaser{Shared: shared, Now: c.Now}
	b, err := l.Bucket(limit.Charge{Rule: "user_frames_per_second", Subject: "user:a", Rate: limit.PerSecond(500)})
	if err != nil {
		t.Fatal(err)
	}
	for range 500 {
		if ok, _ := b.Take(context.Background()); !ok {
			t.Fatal("refused within the burst")
		}
	}
	if n := shared.count(); n != 100 {
		t.Fatalf("500 frames cost %d shared calls, want 100 (leases of 5)", n)
	}
	before := shared.count()
	ok, retry := b.Take(context.Background())
	if ok || retry <= 0 {
		t.Fatalf("past the burst: ok=%v retry=%s", ok, retry)
	}
	for range 1000 {
		b.Take(context.Background())
	}
	if n := shared.count() - before; n > 2 {
		t.Fatalf("a refused flood made %d shared calls, want at most 2", n)
	}
}

// TestTakeDoesNotAllocate: spending a held lease allocates nothing.
func TestTakeDoesNotAllocate(t *testing.T) {
	l := &limit.Leaser{Shared: &limit.Memory{}}
	b, err := l.Bucket(limit.Charge{Rule: "frames", Subject: "user:a", Rate: limit.PerSecond(1_000_000)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b.Take(ctx) // leases 10 000 tokens
	allocs := testing.AllocsPerRun(1000, func() {
		if ok, _ := b.Take(ctx); !ok {
			t.Fatal("refused within the lease")
		}
	})
	if allocs != 0 {
		t.Fatalf("Take allocates %.1f times per frame", allocs)
	}
}

func BenchmarkTake(b *testing.B) {
	l := &limit.Leaser{Shared: &limit.Memory{}}
	bk, _ := l.Bucket(limit.Charge{Rule: "frames", Subject: "user:a", Rate: limit.PerSecond(100_000_000)})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		bk.Take(ctx)
	}
}

// TestLeasedFallsBackToALocalShare: with the shared limiter away, a node
// admits its share of the rate (limit ÷ live nodes), no more, no less.
func TestLeasedFallsBackToALocalShare(t *testing.T) {
	c := testclock.New(time.Unix(1_700_000_000, 0))
	shared := &countingLimiter{Limiter: &limit.Memory{Now: c.Now}, down: true}
	l := &limit.Leaser{Shared: shared, Now: c.Now, Nodes: func() int { return 4 }}
	b, err := l.Bucket(limit.Charge{Rule: "key_frames_per_second", Subject: "key:k", Rate: limit.PerSecond(400)})
	if err != nil {
		t.Fatal(err)
	}
	admitted := 0
	for range 1000 {
		if ok, _ := b.Take(context.Background()); ok {
			admitted++
		}
	}
	if admitted != 100 {
		t.Fatalf("with the shared limiter away a node of 4 admitted %d at once, want its share 100", admitted)
	}
	shared.mu.Lock()
	shared.down = false
	shared.mu.Unlock()
	c.Advance(time.Second)
	if ok, _ := b.Take(context.Background()); !ok {
		t.Fatal("the shared limiter is back but the bucket refuses")
	}
}

func TestBucketRelease(t *testing.T) {
	l := &limit.Leaser{Shared: &limit.Memory{}}
	ch := limit.Charge{Rule: "r", Subject: "s", Rate: limit.PerSecond(100)}
	a, _ := l.Bucket(ch)
	b, _ := l.Bucket(ch)
	if a != b {
		t.Fatal("two connections of one subject got different buckets")
	}
	a.Release()
	c, _ := l.Bucket(ch)
	if c != a {
		t.Fatal("a bucket still held was forgotten")
	}
	b.Release()
	c.Release()
	if d, _ := l.Bucket(ch); d == a {
		t.Fatal("a released bucket was kept")
	}
	if _, err := l.Bucket(limit.Charge{Rule: "r"}); !errors.Is(err, limit.ErrInvalid) {
		t.Fatalf("Bucket of an invalid charge: %v", err)
	}
}
