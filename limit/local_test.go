package limit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/internal/testclock"
	"github.com/sessionbridge/sessionbridge/limit"
	"github.com/sessionbridge/sessionbridge/limit/limittest"
)

func TestLocalCounterConformance(t *testing.T) {
	limittest.RunCounter(t, func(*testing.T) limit.Counter { return &limit.LocalCounter{} })
}

func TestLocalBurstAndRate(t *testing.T) {
	p := limit.NewPace(10, time.Second, 20)
	var l limit.Local
	now := int64(time.Hour)
	for i := range 20 {
		if ok, _ := l.Take(p, now, 1); !ok {
			t.Fatalf("unit %d of a burst of 20 refused", i+1)
		}
	}
	ok, retry := l.Take(p, now, 1)
	if ok || retry <= 0 || retry > 100*time.Millisecond {
		t.Fatalf("unit 21: %v, retry %s; want refused for at most one interval", ok, retry)
	}
	// Refusals are not charged: one interval later exactly one passes.
	for range 10 {
		l.Take(p, now, 1)
	}
	now += int64(100 * time.Millisecond)
	if ok, _ := l.Take(p, now, 1); !ok {
		t.Fatal("refused after an interval")
	}
	if ok, _ := l.Take(p, now, 1); ok {
		t.Fatal("two passed after one interval")
	}
}

func TestLocalCheckCommit(t *testing.T) {
	p := limit.NewPace(1, time.Second, 1)
	var l limit.Local
	next, ok, _ := l.Check(p, 1000, 1)
	if !ok {
		t.Fatal("first unit refused")
	}
	// Not committed: still whole.
	if _, ok, _ := l.Check(p, 1000, 1); !ok {
		t.Fatal("Check charged")
	}
	l.Commit(next)
	if _, ok, _ := l.Check(p, 1000, 1); ok {
		t.Fatal("Commit did not charge")
	}
}

func TestLocalCostLargerThanBurst(t *testing.T) {
	p := limit.NewPace(100, time.Second, 200) // bytes
	var l limit.Local
	if ok, _ := l.Take(p, 1, 500); !ok {
		t.Fatal("a frame larger than the burst refused with the burst whole")
	}
	if ok, _ := l.Take(p, 1, 1); ok {
		t.Fatal("the large frame did not empty the burst")
	}
}

func TestPaceOff(t *testing.T) {
	var l limit.Local
	for _, p := range []limit.Pace{{}, limit.NewPace(0, time.Second, 0), limit.NewPace(5, 0, 0)} {
		if p.On() {
			t.Fatalf("%+v is on", p)
		}
		for range 1000 {
			if ok, _ := l.Take(p, 1, 1<<20); !ok {
				t.Fatal("an off pace refused")
			}
		}
	}
}

func TestLocalTakeAllocatesNothing(t *testing.T) {
	p := limit.NewPace(1000, time.Second, 2000)
	var l limit.Local
	now := int64(0)
	if n := testing.AllocsPerRun(1000, func() {
		now += 1000
		l.Take(p, now, 100)
	}); n != 0 {
		t.Fatalf("%v allocations per decision", n)
	}
}

// failing is a Limiter and Counter that cannot answer.
type failing struct{}

func (failing) Allow(context.Context, ...limit.Charge) (limit.Decision, error) {
	return limit.Decision{}, errDown
}

func (failing) Acquire(context.Context, ...limit.Slot) (limit.Decision, limit.Hold, error) {
	return limit.Decision{}, nil, errDown
}

// While the shared limiter is away, each node admits its share: the rate
// divided by the live nodes, never everything and never nothing.
func TestFallbackSharesTheRate(t *testing.T) {
	c := testclock.New(time.Unix(1_700_000_000, 0))
	var fell int
	f := &limit.Fallback{Shared: failing{}, Nodes: func() int { return 4 }, Now: c.Now, OnFallback: func(_ string, err error) {
		if !errors.Is(err, errDown) {
			t.Errorf("fallback for %v", err)
		}
		fell++
	}}
	ch := limit.Charge{Rule: "connects_per_minute", Subject: "user:a", Rate: limit.PerMinute(40)}
	admitted := 0
	for range 100 {
		d, err := f.Allow(context.Background(), ch)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			admitted++
		}
	}
	if admitted != 10 || fell != 100 {
		t.Fatalf("admitted %d of a share of 10 (%d fallbacks)", admitted, fell)
	}
	// A share is at least one.
	ch.Subject, ch.Rate = "user:b", limit.PerMinute(2)
	if d, _ := f.Allow(context.Background(), ch); !d.Allowed {
		t.Fatal("a share smaller than one refused everything")
	}
	// Invalid charges are refused, not decided locally.
	if _, err := f.Allow(context.Background(), limit.Charge{}); !errors.Is(err, limit.ErrInvalid) {
		t.Fatalf("invalid charge: %v", err)
	}
}

func TestFallbackCounterSharesTheMaximum(t *testing.T) {
	f := &limit.FallbackCounter{Shared: failing{}, Nodes: func() int { return 2 }}
	s := limit.Slot{Rule: "max_connections", Subject: "user:a", Max: 6}
	var holds []limit.Hold
	for {
		d, h, err := f.Acquire(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if !d.Allowed {
			break
		}
		holds = append(holds, h)
	}
	if len(holds) != 3 {
		t.Fatalf("admitted %d of a share of 3", len(holds))
	}
	holds[0].Release(context.Background())
	if d, _, _ := f.Acquire(context.Background(), s); !d.Allowed {
		t.Fatal("a released local unit is not free")
	}
}

func BenchmarkLocalTake(b *testing.B) {
	p := limit.NewPace(1e9, time.Second, 2e9)
	var l limit.Local
	now := int64(0)
	b.ReportAllocs()
	for b.Loop() {
		now++
		l.Take(p, now, 100)
	}
}

// BenchmarkMemoryUpgradeDecision is the connects_per_minute decision of
// an upgrade made with an API key, on one node: IP, user and key at once.
func BenchmarkMemoryUpgradeDecision(b *testing.B) {
	m := &limit.Memory{}
	rate := limit.Rate{N: 1e9, Period: time.Minute}
	charges := []limit.Charge{
		{Rule: "connects_per_minute", Subject: "ip:192.0.2.1", Rate: rate},
		{Rule: "connects_per_minute", Subject: "user:alice", Rate: rate},
		{Rule: "connects_per_minute", Subject: "key:k", Rate: rate},
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d, err := m.Allow(ctx, charges...); err != nil || !d.Allowed {
			b.Fatal(d, err)
		}
	}
}

// BenchmarkLocalCounterAcquireRelease is the max_connections part of an
// upgrade and of its close, on one node: user and key.
func BenchmarkLocalCounterAcquireRelease(b *testing.B) {
	c := &limit.LocalCounter{}
	slots := []limit.Slot{{Rule: "max_connections", Subject: "user:alice", Max: 1 << 30}, {Rule: "max_connections", Subject: "key:k", Max: 1 << 30}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, h, err := c.Acquire(ctx, slots...)
		if err != nil || h == nil {
			b.Fatal(err)
		}
		h.Release(ctx)
	}
}
