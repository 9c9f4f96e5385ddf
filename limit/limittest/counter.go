package limittest

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sessionbridge/sessionbridge/limit"
)

// NewCounterFunc returns a fresh counter, isolated from every other one it
// returned, with its cleanup registered on t.
type NewCounterFunc func(t *testing.T) limit.Counter

// RunCounter runs the suite of [limit.Counter], one fresh counter per
// subtest.
func RunCounter(t *testing.T, newCounter NewCounterFunc) {
	tests := []struct {
		name string
		run  func(t *testing.T, c limit.Counter)
	}{
		{"UpToMax", testCounterMax},
		{"ReleaseFrees", testCounterRelease},
		{"AllOrNothing", testCounterAllOrNothing},
		{"DryRun", testCounterDryRun},
		{"ExactUnderConcurrency", testCounterConcurrency},
		{"Invalid", testCounterInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newCounter(t)) })
	}
}

func acquire(t *testing.T, c limit.Counter, slots ...limit.Slot) (limit.Decision, limit.Hold) {
	t.Helper()
	d, h, err := c.Acquire(bg, slots...)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if d.Allowed != (h != nil) {
		t.Fatalf("decision %+v with hold %v", d, h)
	}
	return d, h
}

func testCounterMax(t *testing.T, c limit.Counter) {
	s := limit.Slot{Rule: "max_connections", Subject: "user:alice", Max: 3}
	for i := range 3 {
		d, _ := acquire(t, c, s)
		if !d.Allowed || d.Remaining != 2-i || d.Limit != 3 || d.Rule != s.Rule {
			t.Fatalf("unit %d: %+v, want admitted with %d left of 3", i+1, d, 2-i)
		}
	}
	for range 5 {
		if d, _ := acquire(t, c, s); d.Allowed || d.Rule != s.Rule || d.Limit != 3 || d.Remaining != 0 {
			t.Fatalf("over the maximum: %+v", d)
		}
	}
	// The refusals took nothing: one release frees exactly one unit.
	other := limit.Slot{Rule: "max_connections", Subject: "user:bob", Max: 3}
	if d, _ := acquire(t, c, other); !d.Allowed {
		t.Fatal("another subject refused")
	}
}

func testCounterRelease(t *testing.T, c limit.Counter) {
	s := limit.Slot{Rule: "max_connections", Subject: "key:k", Max: 2}
	_, h1 := acquire(t, c, s)
	acquire(t, c, s)
	h1.Release(bg)
	h1.Release(bg) // a second release gives nothing back
	if d, _ := acquire(t, c, s); !d.Allowed {
		t.Fatal("a released unit is not free")
	}
	if d, _ := acquire(t, c, s); d.Allowed {
		t.Fatal("a hold released twice freed two units")
	}
}

func testCounterAllOrNothing(t *testing.T, c limit.Counter) {
	user := limit.Slot{Rule: "max_connections", Subject: "user:carol", Max: 5}
	key := limit.Slot{Rule: "max_connections", Subject: "key:c1", Max: 1}
	acquire(t, c, key)
	if d, _ := acquire(t, c, user, key); d.Allowed || d.Rule != "max_connections" {
		t.Fatalf("decision %+v, want refused by the key", d)
	}
	if d, _ := acquire(t, c, user); !d.Allowed || d.Remaining != 4 {
		t.Fatalf("after a refused decision the user has %d left (%+v), want 4", d.Remaining, d)
	}
}

func testCounterDryRun(t *testing.T, c limit.Counter) {
	s := limit.Slot{Rule: "max_connections", Subject: "user:dave", Max: 1, DryRun: true}
	for i := range 3 {
		d, _ := acquire(t, c, s)
		if !d.Allowed {
			t.Fatalf("unit %d refused by a dry-run slot", i+1)
		}
		if want := i > 0; want != slices.Contains(d.DryRefused, s.Rule) {
			t.Fatalf("unit %d: dry refused %v", i+1, d.DryRefused)
		}
	}
}

func testCounterConcurrency(t *testing.T, c limit.Counter) {
	s := limit.Slot{Rule: "max_connections", Subject: "user:erin", Max: 10}
	var admitted atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5 {
				d, _, err := c.Acquire(bg, s)
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
	if n := admitted.Load(); n != 10 {
		t.Fatalf("40 concurrent acquisitions of a maximum of 10 admitted %d", n)
	}
}

func testCounterInvalid(t *testing.T, c limit.Counter) {
	ok := limit.Slot{Rule: "r", Subject: "s", Max: 1}
	for _, s := range []limit.Slot{{Subject: "s", Max: 1}, {Rule: "r", Max: 1}, {Rule: "r", Subject: "s"}, {Rule: "r", Subject: "s", Max: -1}} {
		if _, _, err := c.Acquire(bg, ok, s); !errors.Is(err, limit.ErrInvalid) {
			t.Errorf("Acquire(%+v) = %v, want ErrInvalid", s, err)
		}
	}
	if d, _ := acquire(t, c, ok); !d.Allowed {
		t.Fatal("a refused invalid decision took its valid slot")
	}
}
