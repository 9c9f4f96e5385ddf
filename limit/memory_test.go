package limit_test

import (
	"context"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/internal/testclock"
	"github.com/sessionbridge/sessionbridge/limit"
	"github.com/sessionbridge/sessionbridge/limit/limittest"
)

func TestMemoryConformance(t *testing.T) {
	limittest.Run(t, func(t *testing.T) limit.Limiter { return &limit.Memory{} })
}

// TestSustainedRate checks the GCRA arithmetic on a fake clock: after the
// burst, one event per interval, and the retry time is exact.
func TestSustainedRate(t *testing.T) {
	c := testclock.New(time.Unix(1_700_000_000, 0))
	m := &limit.Memory{Now: c.Now}
	ch := limit.Charge{Rule: "frames", Subject: "conn:1", Rate: limit.PerSecond(10)}
	for range 10 {
		if d, _ := m.Allow(context.Background(), ch); !d.Allowed {
			t.Fatal("burst refused")
		}
	}
	d, _ := m.Allow(context.Background(), ch)
	if d.Allowed || d.RetryAfter != 100*time.Millisecond {
		t.Fatalf("after the burst: %+v, want a retry after 100ms", d)
	}
	c.Advance(99 * time.Millisecond)
	if d, _ := m.Allow(context.Background(), ch); d.Allowed || d.RetryAfter != time.Millisecond {
		t.Fatalf("1ms early: %+v", d)
	}
	c.Advance(time.Millisecond)
	if d, _ := m.Allow(context.Background(), ch); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("on time: %+v", d)
	}
	// Over 10 seconds at the limit: exactly 100 more events.
	admitted := 0
	for range 1000 {
		c.Advance(10 * time.Millisecond)
		if d, _ := m.Allow(context.Background(), ch); d.Allowed {
			admitted++
		}
	}
	if admitted != 100 {
		t.Fatalf("10 s at 10/s admitted %d", admitted)
	}
	c.Advance(time.Second)
	if d, _ := m.Allow(context.Background(), ch); !d.Allowed || d.Remaining != 9 || d.Reset != 100*time.Millisecond {
		t.Fatalf("after a quiet second the bucket should be full: %+v", d)
	}
}

// TestIdleSubjectsCostNothing: passed entries are dropped as the map grows.
func TestIdleSubjectsCostNothing(t *testing.T) {
	c := testclock.New(time.Unix(1_700_000_000, 0))
	m := &limit.Memory{Now: c.Now}
	for i := range 10000 {
		ch := limit.Charge{Rule: "r", Subject: string(rune(i)), Rate: limit.PerSecond(1)}
		if _, err := m.Allow(context.Background(), ch); err != nil {
			t.Fatal(err)
		}
		c.Advance(time.Millisecond)
	}
	if n := m.Len(); n > 2048 {
		t.Fatalf("%d subjects kept; those idle for over a second should be gone", n)
	}
}
