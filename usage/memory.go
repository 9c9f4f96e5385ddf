package usage

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"
)

// Memory is a [Sink] and [Source] for one process: buckets in maps, pruned
// past their retention. The zero value is ready to use.
type Memory struct {
	// Now is the clock for Top's window and pruning; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	buckets map[bucketKey]map[string]int64
	writes  int
}

type bucketKey struct {
	subject Subject
	step    Step
	start   int64 // Unix seconds
}

var (
	_ Sink   = (*Memory)(nil)
	_ Source = (*Memory)(nil)
)

func (m *Memory) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Write adds entries to the buckets of at (or of their own At), and sets
// their nodes' levels in the minute buckets.
func (m *Memory) Write(_ context.Context, at time.Time, entries []Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.buckets == nil {
		m.buckets = make(map[bucketKey]map[string]int64)
	}
	for _, e := range entries {
		when := e.When(at).UTC()
		for _, st := range Steps {
			k := bucketKey{e.Subject, st, when.Truncate(time.Duration(st)).Unix()}
			b := m.buckets[k]
			if b == nil {
				b = make(map[string]int64, len(e.Counts)+1)
				m.buckets[k] = b
			}
			for metric, n := range e.Counts {
				b[metric] += n
			}
			if peak := e.PeakIn(st); peak > b[PeakConnections] {
				b[PeakConnections] = peak
			}
			if st == Minute && e.HasLevel() {
				b[LevelField(e.Node)] = e.Level
			}
		}
	}
	m.writes++
	if m.writes%1024 == 0 {
		m.prune()
	}
	return nil
}

func (m *Memory) prune() {
	now := m.now()
	for k := range m.buckets {
		if now.Sub(time.Unix(k.start, 0)) > k.step.Retention()+time.Duration(k.step) {
			delete(m.buckets, k)
		}
	}
}

// Series returns the subject's buckets from from to to.
func (m *Memory) Series(_ context.Context, s Subject, from, to time.Time, step Step) ([]Point, error) {
	starts, err := ReadRange(from, to, step)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Point, len(starts))
	for i, start := range starts {
		counts := make(map[string]int64)
		for metric, n := range m.buckets[bucketKey{s, step, start.Unix()}] {
			counts[metric] = n
		}
		out[i] = Point{Start: start, Counts: counts}
	}
	return Carry(out, from, m.now(), step), nil
}

// Top ranks the subjects of kind by metric over the hours of window.
func (m *Memory) Top(_ context.Context, kind, metric string, window time.Duration, limit int) ([]Ranked, error) {
	hours, err := TopHours(m.now(), window, limit)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	sums := make(map[string]int64)
	for k, b := range m.buckets {
		if k.step != Hour || k.subject.Kind != kind || b[metric] == 0 {
			continue
		}
		if t := time.Unix(k.start, 0); !t.Before(hours[0]) && !t.After(hours[len(hours)-1]) {
			sums[k.subject.ID] += b[metric]
		}
	}
	m.mu.Unlock()
	return Rank(sums, limit), nil
}

// MaxTopWindow and MaxTopLimit bound Top queries.
const (
	MaxTopWindow = 90 * 24 * time.Hour
	MaxTopLimit  = 1000
)

// TopHours validates a Top query and returns the hour buckets its window
// covers, oldest first: the current hour and the whole hours before it.
func TopHours(now time.Time, window time.Duration, limit int) ([]time.Time, error) {
	if window <= 0 || window > MaxTopWindow {
		return nil, errInvalidf("window must be between 1h and %s", MaxTopWindow)
	}
	if limit <= 0 || limit > MaxTopLimit {
		return nil, errInvalidf("limit must be between 1 and %d", MaxTopLimit)
	}
	n := int((window + time.Hour - 1) / time.Hour)
	last := now.UTC().Truncate(time.Hour)
	out := make([]time.Time, n)
	for i := range out {
		out[i] = last.Add(-time.Duration(n-1-i) * time.Hour)
	}
	return out, nil
}

// Rank sorts sums highest first (ties by ID) and keeps limit of them; stores
// that gather sums themselves share it.
func Rank(sums map[string]int64, limit int) []Ranked {
	out := make([]Ranked, 0, len(sums))
	for id, v := range sums {
		out = append(out, Ranked{ID: id, Value: v})
	}
	slices.SortFunc(out, func(a, b Ranked) int { return cmp.Or(cmp.Compare(b.Value, a.Value), cmp.Compare(a.ID, b.ID)) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}
