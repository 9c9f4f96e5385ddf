package limit

import (
	"context"
	"fmt"
	"sync"
)

// Slot asks for one unit of a concurrency rule (max_connections) for one
// subject: admitted while the subject holds fewer than Max.
type Slot struct {
	Rule    string
	Subject string
	Max     int
	// DryRun takes the slot even over Max, and reports that it would have
	// been refused.
	DryRun bool
}

// Check reports whether s can be decided.
func (s Slot) Check() error {
	switch {
	case s.Rule == "" || s.Subject == "":
		return fmt.Errorf("%w: rule and subject are required", ErrInvalid)
	case s.Max <= 0:
		return fmt.Errorf("%w: rule %s: the maximum must be positive", ErrInvalid, s.Rule)
	}
	return nil
}

// Hold is what an admitted Acquire took; Release gives it back, once.
type Hold interface {
	// Release gives the slots back. It does not fail: an implementation
	// that cannot reach its store now retries later.
	Release(ctx context.Context)
}

// Counter counts concurrent holders, such as the live sockets of a user.
// Implementations are safe for concurrent use.
type Counter interface {
	// Acquire takes one unit of every slot if every enforced one is under
	// its Max, and none otherwise, and returns the Hold to release them
	// with (nil when refused). In the Decision, Limit is the refusing (or,
	// when admitted, the fullest) slot's Max and Remaining what it has
	// left; RetryAfter and Reset are zero: a unit frees when a holder
	// leaves, which nothing predicts. It returns an error wrapping
	// ErrInvalid for a slot that cannot be decided, and the
	// implementation's error when it cannot decide now.
	Acquire(ctx context.Context, slots ...Slot) (Decision, Hold, error)
}

// CombineSlots turns the counts each slot holds now (before this
// acquisition) into the decision.
func CombineSlots(slots []Slot, held []int) Decision {
	d := Decision{Allowed: true, Remaining: -1}
	for i, s := range slots {
		left := s.Max - held[i]
		if left <= 0 {
			if s.DryRun {
				d.DryRefused = append(d.DryRefused, s.Rule)
				continue
			}
			if d.Allowed {
				d.Allowed, d.Rule, d.Limit, d.Remaining = false, s.Rule, s.Max, 0
			}
			continue
		}
		if d.Allowed && (d.Remaining < 0 || left-1 < d.Remaining) {
			d.Rule, d.Limit, d.Remaining = s.Rule, s.Max, left-1
		}
	}
	if d.Remaining < 0 {
		d.Remaining = 0
	}
	return d
}

// LocalCounter is a [Counter] for one process: exact counts under one
// mutex, a subject forgotten when its count returns to zero. The zero value
// is ready to use.
type LocalCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

var _ Counter = (*LocalCounter)(nil)

func slotKey(s Slot) string { return s.Rule + "\x00" + s.Subject }

// Acquire decides slots against the process's own counts.
func (c *LocalCounter) Acquire(_ context.Context, slots ...Slot) (Decision, Hold, error) {
	for _, s := range slots {
		if err := s.Check(); err != nil {
			return Decision{}, nil, err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = make(map[string]int)
	}
	held := make([]int, len(slots))
	for i, s := range slots {
		held[i] = c.counts[slotKey(s)]
	}
	d := CombineSlots(slots, held)
	if !d.Allowed {
		return d, nil, nil
	}
	keys := make([]string, len(slots))
	for i, s := range slots {
		keys[i] = slotKey(s)
		c.counts[keys[i]]++
	}
	return d, &localHold{c: c, keys: keys}, nil
}

// Held returns how many units of rule subject are held, for tests and
// metrics.
func (c *LocalCounter) Held(rule, subject string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[slotKey(Slot{Rule: rule, Subject: subject})]
}

type localHold struct {
	c    *LocalCounter
	once sync.Once
	keys []string
}

func (h *localHold) Release(context.Context) {
	h.once.Do(func() {
		h.c.mu.Lock()
		defer h.c.mu.Unlock()
		for _, k := range h.keys {
			if h.c.counts[k]--; h.c.counts[k] <= 0 {
				delete(h.c.counts, k)
			}
		}
	})
}
