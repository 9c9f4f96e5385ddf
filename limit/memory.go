package limit

import (
	"context"
	"sync"
	"time"
)

// Memory is a [Limiter] for one process. Its state is a map of TATs under
// one mutex; entries whose TAT has passed are dropped as the map grows, so
// idle subjects cost nothing. The zero value is ready to use.
type Memory struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu    sync.Mutex
	tats  map[string]time.Duration
	epoch time.Time
	sweep int // map size at which to drop passed entries next
}

var _ Limiter = (*Memory)(nil)

func (m *Memory) now() time.Duration {
	t := time.Now()
	if m.Now != nil {
		t = m.Now()
	}
	if m.epoch.IsZero() {
		m.epoch = t.Add(-time.Hour) // keep "now" positive for any clock
	}
	return t.Sub(m.epoch)
}

func stateKey(c Charge) string { return c.Rule + "\x00" + c.Subject }

// Allow decides charges against the process's own state.
func (m *Memory) Allow(_ context.Context, charges ...Charge) (Decision, error) {
	for _, c := range charges {
		if err := c.Check(); err != nil {
			return Decision{}, err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tats == nil {
		m.tats = make(map[string]time.Duration)
	}
	now := m.now()
	steps := make([]Step, len(charges))
	for i, c := range charges {
		steps[i] = Evaluate(c, m.tats[stateKey(c)], now)
	}
	d := Combine(charges, steps)
	for i, ok := range Charged(d, steps) {
		if ok {
			m.tats[stateKey(charges[i])] = steps[i].NewTAT
		}
	}
	m.compact(now)
	return d, nil
}

// compact drops passed TATs once the map has doubled since the last sweep,
// so that the cost is amortised over the writes.
func (m *Memory) compact(now time.Duration) {
	if len(m.tats) < max(m.sweep, 1024) {
		return
	}
	for k, tat := range m.tats {
		if tat <= now {
			delete(m.tats, k)
		}
	}
	m.sweep = 2 * len(m.tats)
}

// Len returns the number of subjects with state, for tests and metrics.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.tats)
}
