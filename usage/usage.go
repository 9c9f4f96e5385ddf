// Package usage counts what API keys and users do — connects, frames, bytes,
// errors, refusals, connected time, peak sockets — and keeps exact counts in
// time buckets (minute, hour, day) that can be queried and ranked.
//
// A [Recorder] aggregates in memory on each node (an Add is a map update
// under a mutex, no I/O) and hands its totals to a [Sink] once per flush
// interval, in one batch whatever the traffic: idle subjects cost nothing,
// and a crash loses at most one interval. The redis package implements Sink
// and [Source] on the Redis the cluster already runs.
package usage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"
)

// Kinds of subject.
const (
	KindKey  = "key"
	KindUser = "user"
)

// Metric names. Refused connects and errors are counted per reason or code,
// as "connects_refused:<reason>" and "errors:<code>".
const (
	Connects         = "connects"
	ConnectsRefused  = "connects_refused"
	FramesIn         = "frames_in"
	FramesOut        = "frames_out"
	BytesIn          = "bytes_in"
	BytesOut         = "bytes_out"
	Errors           = "errors"
	RateLimited      = "rate_limited"
	Forbidden        = "forbidden"
	ConnectedSeconds = "connected_seconds"
	// PeakConnections is the most sockets a subject held at once within a
	// bucket; it is a maximum, not a sum.
	PeakConnections = "peak_connections"
)

// Refused returns the metric of connects refused for reason.
func Refused(reason string) string { return ConnectsRefused + ":" + reason }

// Error returns the metric of errors with code.
func Error(code string) string { return Errors + ":" + code }

// Subject is who usage is counted for.
type Subject struct {
	Kind string
	ID   string
}

// Entry is what a Recorder hands to its Sink for one subject: the sums
// since the last flush, and the highest peak seen.
type Entry struct {
	Subject Subject
	Counts  map[string]int64
	Peak    int64
}

// Sink stores flushed entries, adding them to the buckets of at.
type Sink interface {
	// Write stores entries. On failure the Recorder writes them again at
	// its next flush; a sink that stored some of them returns a
	// *PartialError naming the others, so that none is counted twice.
	Write(ctx context.Context, at time.Time, entries []Entry) error
}

// PartialError is a Write that stored some entries and not others.
type PartialError struct {
	// Failed are the indexes, in the entries given to Write, of those not
	// stored.
	Failed []int
	Err    error
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("%d entries not stored: %v", len(e.Failed), e.Err)
}

func (e *PartialError) Unwrap() error { return e.Err }

// Step is the width of a bucket.
type Step time.Duration

// Bucket widths and how long each is kept.
const (
	Minute = Step(time.Minute)
	Hour   = Step(time.Hour)
	Day    = Step(24 * time.Hour)
)

// Steps lists the bucket widths, narrowest first.
var Steps = []Step{Minute, Hour, Day}

// Retention returns how long buckets of s are kept: minutes 48 hours,
// hours 90 days, days 2 years.
func (s Step) Retention() time.Duration {
	switch s {
	case Minute:
		return 48 * time.Hour
	case Hour:
		return 90 * 24 * time.Hour
	case Day:
		return 2 * 365 * 24 * time.Hour
	}
	return 0
}

// String returns "1m", "1h" or "1d".
func (s Step) String() string {
	switch s {
	case Minute:
		return "1m"
	case Hour:
		return "1h"
	case Day:
		return "1d"
	}
	return time.Duration(s).String()
}

// ParseStep parses "1m", "1h" or "1d".
func ParseStep(v string) (Step, error) {
	for _, s := range Steps {
		if s.String() == v {
			return s, nil
		}
	}
	return 0, fmt.Errorf("%w: step %q: want 1m, 1h or 1d", ErrInvalid, v)
}

// ErrInvalid is wrapped by errors about a query that cannot be answered.
var ErrInvalid = errors.New("usage: invalid query")

func errInvalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// MaxPoints bounds the buckets one query may span.
const MaxPoints = 2000

// Point is one bucket of a series.
type Point struct {
	Start  time.Time
	Counts map[string]int64
}

// Ranked is one subject in a Top answer.
type Ranked struct {
	ID    string
	Value int64
}

// Source answers usage queries.
type Source interface {
	// Series returns the buckets of step from from to to (aligned down to
	// step), empty ones included, for one subject.
	Series(ctx context.Context, s Subject, from, to time.Time, step Step) ([]Point, error)
	// Top returns the subjects of kind with the highest metric over the
	// window ending now (rounded out to whole hours), highest first.
	Top(ctx context.Context, kind, metric string, window time.Duration, limit int) ([]Ranked, error)
}

// CheckRange validates a Series query and returns its bucket starts.
func CheckRange(from, to time.Time, step Step) ([]time.Time, error) {
	if step.Retention() == 0 {
		return nil, fmt.Errorf("%w: unknown step", ErrInvalid)
	}
	d := time.Duration(step)
	from, to = from.UTC().Truncate(d), to.UTC().Truncate(d)
	if to.Before(from) {
		return nil, fmt.Errorf("%w: to is before from", ErrInvalid)
	}
	n := int(to.Sub(from)/d) + 1
	if n > MaxPoints {
		return nil, fmt.Errorf("%w: %d buckets, at most %d", ErrInvalid, n, MaxPoints)
	}
	out := make([]time.Time, n)
	for i := range out {
		out[i] = from.Add(time.Duration(i) * d)
	}
	return out, nil
}

// DefaultFlushInterval is how often a Recorder flushes by default.
const DefaultFlushInterval = time.Second

// Recorder aggregates usage in memory and flushes it to Sink. Add, AddAll
// and Connected never block on I/O. Run it for the life of the node.
type Recorder struct {
	sink     Sink
	interval time.Duration
	log      *slog.Logger
	now      func() time.Time

	// fmu makes flushes take turns.
	fmu sync.Mutex
	// collectors are called at the start of every Flush (see Collect).
	cmu        sync.Mutex
	collectors []func(now time.Time)

	mu      sync.Mutex
	pending map[Subject]*Entry
	// inflight is the batch a Flush is writing, until it is written or put
	// back into pending.
	inflight   map[Subject]*Entry
	live       map[Subject]int64
	lastMinute time.Time // the minute of the last flush
	// totals are the sums of every count added since the Recorder was
	// made, by kind of subject and metric, for Prometheus.
	totals map[string]map[string]int64
}

// Delta is one metric's increment, for AddAll.
type Delta struct {
	Metric string
	N      int64
}

// RecorderOptions configure a Recorder; the zero value works.
type RecorderOptions struct {
	// FlushInterval defaults to DefaultFlushInterval.
	FlushInterval time.Duration
	Logger        *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Interval returns the flush interval.
func (r *Recorder) Interval() time.Duration { return r.interval }

// NewRecorder returns a Recorder that flushes to sink.
func NewRecorder(sink Sink, o RecorderOptions) *Recorder {
	r := &Recorder{sink: sink, interval: o.FlushInterval, log: o.Logger, now: o.Now,
		pending: make(map[Subject]*Entry), live: make(map[Subject]int64), totals: make(map[string]map[string]int64)}
	if r.interval <= 0 {
		r.interval = DefaultFlushInterval
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	return r
}

func (r *Recorder) entry(s Subject) *Entry {
	e := r.pending[s]
	if e == nil {
		e = &Entry{Subject: s, Counts: make(map[string]int64, 4), Peak: r.live[s]}
		r.pending[s] = e
	}
	return e
}

// Add adds n to metric for each subject.
func (r *Recorder) Add(metric string, n int64, subjects ...Subject) {
	if n == 0 {
		return
	}
	r.mu.Lock()
	for _, s := range subjects {
		r.entry(s).Counts[metric] += n
		r.totalLocked(s.Kind)[metric] += n
	}
	r.mu.Unlock()
}

// AddAll adds every delta to each subject, under one lock: a source that
// hands over what it counted on its own (see Collect) pays one lock per
// batch, not one per metric.
func (r *Recorder) AddAll(deltas []Delta, subjects ...Subject) {
	r.mu.Lock()
	for _, s := range subjects {
		var e *Entry
		tot := r.totalLocked(s.Kind)
		for _, d := range deltas {
			if d.N == 0 {
				continue
			}
			if e == nil {
				e = r.entry(s)
			}
			e.Counts[d.Metric] += d.N
			tot[d.Metric] += d.N
		}
	}
	r.mu.Unlock()
}

func (r *Recorder) totalLocked(kind string) map[string]int64 {
	t := r.totals[kind]
	if t == nil {
		t = make(map[string]int64)
		r.totals[kind] = t
	}
	return t
}

// Totals returns the sums of every count added for subjects of kind since
// the Recorder was made, by metric (peaks are not counts and are absent).
// Every socket counts for its user, so the totals of KindUser are the
// node's totals.
func (r *Recorder) Totals(kind string) map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.totals[kind])
}

// Collect registers f to be called at the start of every Flush, with the
// flush's time, before the pending counts are taken: a source that counts
// on its own without the Recorder's lock (the gateway's per-connection
// counters) hands its counts over there, with Add or AddAll, so that they
// ride in that very flush. f must not call Flush.
func (r *Recorder) Collect(f func(now time.Time)) {
	r.cmu.Lock()
	r.collectors = append(r.collectors, f)
	r.cmu.Unlock()
}

// Live returns how many sockets s holds open, as Connected counted them.
func (r *Recorder) Live(s Subject) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live[s]
}

// Connected records a socket opening (delta +1) or closing (-1) for each
// subject, for the peak of concurrent sockets.
func (r *Recorder) Connected(delta int64, subjects ...Subject) {
	r.mu.Lock()
	for _, s := range subjects {
		n := max(r.live[s]+delta, 0)
		if n == 0 {
			delete(r.live, s)
		} else {
			r.live[s] = n
		}
		if e := r.entry(s); n > e.Peak {
			e.Peak = n
		}
	}
	r.mu.Unlock()
}

// Flush hands what was counted since the last flush to the sink, in one
// Write; concurrent calls take turns. On failure the counts are kept for the next flush, so a Redis
// outage delays usage but loses none of it (while the node lives).
//
// The first flush of each minute also carries the number of sockets every
// connected subject holds, so that the peak of a quiet minute is its
// steady count: that costs one write a minute per connected subject.
func (r *Recorder) Flush(ctx context.Context) error {
	r.fmu.Lock()
	defer r.fmu.Unlock()
	now := r.now()
	r.cmu.Lock()
	collectors := r.collectors
	r.cmu.Unlock()
	for _, f := range collectors {
		f(now)
	}
	r.mu.Lock()
	if minute := now.UTC().Truncate(time.Minute); !minute.Equal(r.lastMinute) {
		r.lastMinute = minute
		for s := range r.live {
			r.entry(s)
		}
	}
	if len(r.pending) == 0 {
		r.mu.Unlock()
		return nil
	}
	batch := r.pending
	r.pending = make(map[Subject]*Entry, len(batch))
	r.inflight = batch
	r.mu.Unlock()
	entries := make([]Entry, 0, len(batch))
	for _, e := range batch {
		entries = append(entries, *e)
	}
	err := r.sink.Write(ctx, now, entries)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inflight = nil
	if err == nil {
		return nil
	}
	keep := entries
	if pe, ok := errors.AsType[*PartialError](err); ok {
		// The entries the sink stored must not be written twice.
		keep = make([]Entry, 0, len(pe.Failed))
		for _, i := range pe.Failed {
			if i >= 0 && i < len(entries) {
				keep = append(keep, entries[i])
			}
		}
	}
	for _, old := range keep {
		e := r.entry(old.Subject)
		for m, n := range old.Counts {
			e.Counts[m] += n
		}
		e.Peak = max(e.Peak, old.Peak)
	}
	return fmt.Errorf("usage: flush: %w", err)
}

// Run flushes every interval until ctx is done, then flushes once more
// (with a short deadline of its own) and returns nil.
func (r *Recorder) Run(ctx context.Context) error {
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			if err := r.Flush(fctx); err != nil {
				r.log.Warn("usage: final flush failed", "err", err)
			}
			return nil
		case <-tick.C:
			if err := r.Flush(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("usage: flush failed; counts kept for the next one", "err", err)
			}
		}
	}
}

// Pending returns the counts of s not written yet (waiting for the next
// flush, or in a write under way), for tests and diagnostics.
func (r *Recorder) Pending(s Subject) map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out map[string]int64
	for _, batch := range []map[Subject]*Entry{r.pending, r.inflight} {
		if e := batch[s]; e != nil {
			if out == nil {
				out = make(map[string]int64, len(e.Counts))
			}
			for m, n := range e.Counts {
				out[m] += n
			}
		}
	}
	return out
}
