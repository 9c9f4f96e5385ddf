// Package limittest is the conformance suite for [limit.Limiter]
// implementations. Rates are per hour, so that the seconds a networked
// limiter takes cannot change a decision and no test waits for time to pass.
package limittest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/limit"
)

// NewFunc returns a fresh limiter, isolated from every other one it
// returned, with its cleanup registered on t.
type NewFunc func(t *testing.T) limit.Limiter

// Run runs the suite, one fresh limiter per subtest.
func Run(t *testing.T, newLimiter NewFunc) {
	tests := []struct {
		name string
		run  func(t *testing.T, l limit.Limiter)
	}{
		{"BurstThenRefuse", testBurst},
		{"RefusalIsNotCharged", testRefusalNotCharged},
		{"AllOrNothing", testAllOrNothing},
		{"LimitChangeKeepsState", testLimitChange},
		{"DryRun", testDryRun},
		{"Cost", testCost},
		{"SubjectsAreIndependent", testSubjects},
		{"ExactUnderConcurrency", testConcurrency},
		{"InvalidCharges", testInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newLimiter(t)) })
	}
}

var bg = context.Background()

func perHour(n int) limit.Rate { return limit.Rate{N: n, Period: time.Hour} }

func allow(t *testing.T, l limit.Limiter, charges ...limit.Charge) limit.Decision {
	t.Helper()
	d, err := l.Allow(bg, charges...)
	if err != nil {
		t.Fatalf("Allow: %v", err)
	}
	return d
}

func testBurst(t *testing.T, l limit.Limiter) {
	c := limit.Charge{Rule: "connects", Subject: "ip:192.0.2.1", Rate: perHour(5)}
	for i := range 5 {
		d := allow(t, l, c)
		if !d.Allowed || d.Remaining != 4-i || d.Limit != 5 || d.Rule != "connects" {
			t.Fatalf("attempt %d: %+v, want allowed with %d left of 5", i+1, d, 4-i)
		}
	}
	d := allow(t, l, c)
	interval := time.Hour / 5
	if d.Allowed || d.Rule != "connects" || d.RetryAfter <= 0 || d.RetryAfter > interval || d.Remaining != 0 {
		t.Fatalf("attempt 6: %+v, want refused with a retry within %s", d, interval)
	}
}

func testRefusalNotCharged(t *testing.T, l limit.Limiter) {
	c := limit.Charge{Rule: "connects", Subject: "user:alice", Rate: perHour(3)}
	for range 3 {
		allow(t, l, c)
	}
	first := allow(t, l, c)
	for range 50 {
		allow(t, l, c)
	}
	last := allow(t, l, c)
	if first.Allowed || last.Allowed {
		t.Fatal("an exhausted rule admitted")
	}
	// Were refusals charged, the wait would have grown by 50 intervals.
	if last.RetryAfter > first.RetryAfter {
		t.Fatalf("refusals were charged: retry after %s, then %s", first.RetryAfter, last.RetryAfter)
	}
}

func testAllOrNothing(t *testing.T, l limit.Limiter) {
	ip := limit.Charge{Rule: "ip", Subject: "ip:192.0.2.7", Rate: perHour(1)}
	user := limit.Charge{Rule: "user", Subject: "user:bob", Rate: perHour(10)}
	allow(t, l, ip)
	if d := allow(t, l, user, ip); d.Allowed || d.Rule != "ip" {
		t.Fatalf("decision %+v, want refused by ip", d)
	}
	if d := allow(t, l, user); !d.Allowed || d.Remaining != 9 {
		t.Fatalf("after a refused decision, user has %d left (%+v), want 9: it was charged", d.Remaining, d)
	}
}

func testLimitChange(t *testing.T, l limit.Limiter) {
	c := limit.Charge{Rule: "connects", Subject: "key:k1", Rate: perHour(5)}
	for range 5 {
		allow(t, l, c)
	}
	for _, n := range []int{10, 2, 5} {
		c.Rate = perHour(n)
		if d := allow(t, l, c); d.Allowed {
			t.Fatalf("after the limit changed to %d/h, an exhausted subject got a fresh allowance: %+v", n, d)
		}
	}
	// Doubling the rate doubles the burst: the subject used 5 of 10.
	c.Rate = limit.Rate{N: 10, Period: time.Hour, Burst: 20}
	for i := range 10 {
		if d := allow(t, l, c); !d.Allowed {
			t.Fatalf("with a burst of 20 after using 5+, attempt %d refused: %+v", i+1, d)
		}
	}
}

func testDryRun(t *testing.T, l limit.Limiter) {
	dry := limit.Charge{Rule: "frames", Subject: "conn:1", Rate: perHour(1), DryRun: true}
	real := limit.Charge{Rule: "user", Subject: "user:carol", Rate: perHour(10)}
	for i := range 3 {
		d := allow(t, l, dry, real)
		if !d.Allowed {
			t.Fatalf("attempt %d refused by a dry-run rule: %+v", i+1, d)
		}
		if wantDry := i > 0; wantDry != slices.Contains(d.DryRefused, "frames") {
			t.Fatalf("attempt %d: dry refused %v", i+1, d.DryRefused)
		}
	}
	if d := allow(t, l, real); d.Remaining != 6 {
		t.Fatalf("the enforced rule has %d left, want 6 (three charged, this one included)", d.Remaining)
	}
}

func testCost(t *testing.T, l limit.Limiter) {
	c := limit.Charge{Rule: "bytes", Subject: "conn:2", Rate: perHour(100), Cost: 60}
	if d := allow(t, l, c); !d.Allowed || d.Remaining != 40 {
		t.Fatalf("cost 60 of 100: %+v", d)
	}
	if d := allow(t, l, c); d.Allowed {
		t.Fatalf("cost 60 with 40 left admitted: %+v", d)
	}
	c.Cost = 40
	if d := allow(t, l, c); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("cost 40 with 40 left: %+v", d)
	}
}

func testSubjects(t *testing.T, l limit.Limiter) {
	for i := range 20 {
		c := limit.Charge{Rule: "r", Subject: fmt.Sprintf("ip:198.51.100.%d", i), Rate: perHour(1)}
		if d := allow(t, l, c); !d.Allowed {
			t.Fatalf("subject %d refused on its first attempt", i)
		}
	}
	a := limit.Charge{Rule: "one", Subject: "user:dave", Rate: perHour(1)}
	b := limit.Charge{Rule: "two", Subject: "user:dave", Rate: perHour(1)}
	if !allow(t, l, a).Allowed || !allow(t, l, b).Allowed {
		t.Fatal("two rules of one subject share state")
	}
}

func testConcurrency(t *testing.T, l limit.Limiter) {
	c := limit.Charge{Rule: "connects", Subject: "user:eve", Rate: perHour(20)}
	var admitted atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10 {
				d, err := l.Allow(bg, c)
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := admitted.Load(); n != 20 {
		t.Fatalf("80 concurrent attempts at 20/h admitted %d", n)
	}
}

func testInvalid(t *testing.T, l limit.Limiter) {
	ok := limit.Charge{Rule: "r", Subject: "s", Rate: perHour(1)}
	bad := []limit.Charge{
		{Subject: "s", Rate: perHour(1)},
		{Rule: "r", Rate: perHour(1)},
		{Rule: "r", Subject: "s", Rate: perHour(0)},
		{Rule: "r", Subject: "s", Rate: limit.Rate{N: 1}},
		{Rule: "r", Subject: "s", Rate: limit.Rate{N: 1, Period: time.Hour, Burst: -1}},
		{Rule: "r", Subject: "s", Rate: perHour(2), Cost: 3},
	}
	for _, c := range bad {
		if _, err := l.Allow(bg, ok, c); !errors.Is(err, limit.ErrInvalid) {
			t.Errorf("Allow(%+v) = %v, want ErrInvalid", c, err)
		}
	}
	if d := allow(t, l, ok); !d.Allowed {
		t.Fatal("a refused invalid decision charged its valid rule")
	}
}
