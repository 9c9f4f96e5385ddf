// Package usage counts what API keys and users do — connects, frames, bytes,
// errors, refusals, connected time, peak sockets — and keeps exact counts in
// time buckets (minute, hour, day) that can be queried and ranked.
//
// A [Recorder] aggregates in memory on each node (an Add is a map update
// under a mutex, no I/O) and hands its totals to a [Sink] once per flush
// interval, in one batch whatever the traffic: idle subjects cost nothing,
// connected but quiet ones two small writes an hour, and a crash loses at most
// one interval of counts (and the connected time of the hour under way). The
// redis package implements Sink and [Source] on the Redis the cluster
// already runs.
package usage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
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
// since the last flush, the highest peak seen, and the subject's level on
// the node.
type Entry struct {
	Subject Subject
	Counts  map[string]int64
	Peak    int64
	// At, when set, is the time whose buckets the entry goes to instead of
	// the Write's: connected time handed over for the hour that ended.
	At time.Time
	// Node names the node that counted the entry, and Level is how many
	// sockets the subject holds open there after it. A store keeps the
	// latest Level of every node in the minute bucket (see LevelField), and
	// a query carries it into the minutes that follow within the hour (see
	// Carry): a connected subject that does nothing writes nothing until
	// the next hour, yet every minute shows its steady peak. Only entries
	// for the Write's own moment have a level (see HasLevel).
	Node  string
	Level int64
}

// HasLevel reports whether a store records e's Level: not for an entry
// with At, whose moment is past (the last moment of an hour, whose level
// no later minute of that hour would read).
func (e *Entry) HasLevel() bool { return e.At.IsZero() }

// PeakIn returns the peak a store keeps for e in its bucket of step st:
// none in a minute bucket when e's level is as high, as a query counts the
// levels written in a minute among its peaks (see Carry). A later write of
// the node in that minute with a lower level has a peak at least as high
// as this level (the Recorder starts an entry's peak at the subject's
// level), and keeps it.
func (e *Entry) PeakIn(st Step) int64 {
	if st == Minute && e.HasLevel() && e.Peak <= e.Level {
		return 0
	}
	return e.Peak
}

// When returns the time whose buckets e goes to, given the Write's at.
func (e *Entry) When(at time.Time) time.Time {
	if !e.At.IsZero() {
		return e.At
	}
	return at
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

// levelPrefix begins the fields of a minute bucket that hold the nodes'
// levels; no metric begins so.
const levelPrefix = "level:"

// LevelField is the field of a minute bucket that holds node's level: how
// many sockets the subject held open on node after its latest write in
// that minute.
func LevelField(node string) string { return levelPrefix + node }

// ReadRange validates a Series query and returns the starts of the buckets
// a store reads to answer it: those of the answer and, by minute, the
// earlier minutes of from's hour, whose levels carry into the answer's
// first minutes (see Carry).
func ReadRange(from, to time.Time, step Step) ([]time.Time, error) {
	starts, err := CheckRange(from, to, step)
	if err != nil || step != Minute {
		return starts, err
	}
	hour := starts[0].Truncate(time.Hour)
	n := int(starts[0].Sub(hour) / time.Minute)
	out := make([]time.Time, n, n+len(starts))
	for i := range out {
		out[i] = hour.Add(time.Duration(i) * time.Minute)
	}
	return append(out, starts...), nil
}

// Carry turns the buckets a store read for ReadRange(from, to, step) into
// the answer of Series. It takes the levels out of the counts, and gives
// every minute at least, as its peak_connections, the levels its nodes
// wrote in it and, if it has begun by now, the level each node had at its
// start: that of the node's latest write earlier in the same hour (the
// highest of them all, as a bucket's peak is the highest one node saw).
// Levels do not carry past the end of their hour: every connected subject
// writes in every hour (see Recorder). It drops the buckets read before
// from, and may reuse read.
func Carry(read []Point, from, now time.Time, step Step) []Point {
	first := from.UTC().Truncate(time.Duration(step))
	levels := make(map[string]int64)
	var hour time.Time
	out := read[:0]
	for _, p := range read {
		if h := p.Start.Truncate(time.Hour); !h.Equal(hour) {
			clear(levels)
			hour = h
		}
		var peak int64
		if !p.Start.After(now) {
			for _, n := range levels {
				peak = max(peak, n)
			}
		}
		for k, n := range p.Counts {
			if strings.HasPrefix(k, levelPrefix) {
				levels[k] = n
				peak = max(peak, n)
				delete(p.Counts, k)
			}
		}
		if peak > p.Counts[PeakConnections] {
			p.Counts[PeakConnections] = peak
		}
		if !p.Start.Before(first) {
			out = append(out, p)
		}
	}
	return out
}

// DefaultFlushInterval is how often a Recorder flushes by default.
const DefaultFlushInterval = time.Second

// Recorder aggregates usage in memory and flushes it to Sink. Add, AddAll
// and Connected never block on I/O. Run it for the life of the node.
type Recorder struct {
	sink     Sink
	node     string
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
	inflight map[Subject]*Entry
	// retry are the entries with At of a failed write: written again as
	// they are, so that their counts stay in the buckets of their At.
	retry []Entry
	live  map[Subject]liveSubject
	// spread is the part of the first minute of every hour over which
	// quiet subjects' hourly writes are spread (see phaseOf): a flush must
	// come after the last point within that minute.
	spread time.Duration
	// lastSlot is the point of the hour hourlyLocked last visited the live
	// subjects at, and doneHour the hour (Unix minute of its start) by
	// whose writes it found every live subject written: a subject that
	// opens later in the hour is written by its connect.
	lastSlot int64
	doneHour int32
	// totals are the sums of every count added since the Recorder was
	// made, by kind of subject and metric, for Prometheus.
	totals map[string]map[string]int64
}

// liveSubject is what a Recorder keeps of a subject with sockets open on
// its node: their number, their connected time not yet handed over, and
// which hour's buckets last received its peak. 32 bytes, once per subject,
// not per socket.
type liveSubject struct {
	n int32 // sockets open
	// phase is how far into the first minute of every hour (ms) the
	// subject's hourly write is due, so that a node's quiet subjects are
	// written a few at each flush, not all at the first flush of the hour.
	phase int32
	// acc is the socket-time (ns) not handed over yet, brought up to date
	// at since (Unix ns).
	since, acc int64
	// peakHour is the hour (Unix minute of its start) whose buckets last
	// received the subject's peak and level; creditHour is the hour up to
	// whose start its connected time was handed over.
	peakHour, creditHour int32
}

// accrue brings the socket-time up to t (Unix ns).
func (l *liveSubject) accrue(t int64) {
	if t > l.since {
		l.acc += int64(l.n) * (t - l.since)
		l.since = t
	}
}

// takeSeconds hands over the whole seconds of socket-time accrued, keeping
// the fraction for the next hand-over.
func (l *liveSubject) takeSeconds() int64 {
	secs := l.acc / int64(time.Second)
	l.acc -= secs * int64(time.Second)
	return secs
}

// unixMinute is the minute of t, in minutes since the Unix epoch.
func unixMinute(t time.Time) int32 { return int32(t.Unix() / 60) }

// hourlySlots is how many points of a minute the hourly writes of quiet
// subjects are spread over. Each point costs Redis a few round trips of its
// own, so a point per flush (60 a minute) would cost more round trips than
// it saves in burst size; six keep each burst to a sixth of the subjects.
const hourlySlots = 6

// phaseOf spreads subjects over hourlySlots points of the first spread of
// every hour, by a hash of the subject (FNV-1a): the same subject always
// at the same point.
func (r *Recorder) phaseOf(s Subject) int32 {
	if r.spread <= 0 {
		return 0
	}
	h := uint64(14695981039346656037)
	for _, str := range [2]string{s.Kind, s.ID} {
		for i := 0; i < len(str); i++ {
			h ^= uint64(str[i])
			h *= 1099511628211
		}
	}
	return int32(h % hourlySlots * uint64(r.spread/hourlySlots/time.Millisecond))
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
	// Node names this node in the levels it writes (see Entry.Level): the
	// nodes writing to one store must have distinct names.
	Node   string
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Interval returns the flush interval.
func (r *Recorder) Interval() time.Duration { return r.interval }

// NewRecorder returns a Recorder that flushes to sink.
func NewRecorder(sink Sink, o RecorderOptions) *Recorder {
	r := &Recorder{sink: sink, node: o.Node, interval: o.FlushInterval, log: o.Logger, now: o.Now,
		pending: make(map[Subject]*Entry), live: make(map[Subject]liveSubject), totals: make(map[string]map[string]int64),
		doneHour: -1}
	if r.interval <= 0 {
		r.interval = DefaultFlushInterval
	}
	// A subject's hourly write is due at its phase and made by the first
	// flush past it, which must come within the hour's first minute, so
	// that only that minute can lack the subject's level (levels do not
	// carry across hours, see Carry).
	r.spread = max(time.Minute-r.interval, 0)
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
		e = &Entry{Subject: s, Counts: make(map[string]int64, 4), Peak: int64(r.live[s].n)}
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
	return int64(r.live[s].n)
}

// Connected records a socket opening (delta +1) or closing (-1) for each
// subject, for the peak of concurrent sockets and their connected time: a
// subject's connected seconds are its sockets' time open, handed over at
// the start of every hour (for the hour that ended) and when its last
// socket on this node closes, in whole seconds (the fraction left then is
// dropped).
func (r *Recorder) Connected(delta int64, subjects ...Subject) {
	now := r.now()
	t := now.UnixNano()
	r.mu.Lock()
	for _, s := range subjects {
		l, ok := r.live[s]
		if !ok {
			hour := unixMinute(now)
			hour -= hour % 60
			// Its first write, in this flush, gives this hour's buckets
			// its peak and level.
			l = liveSubject{phase: r.phaseOf(s), since: t, peakHour: hour, creditHour: hour}
		}
		l.accrue(t)
		before := int64(l.n)
		n := max(before+delta, 0)
		l.n = int32(n)
		e := r.entry(s)
		// The bucket of this moment saw the count before the change too.
		e.Peak = max(e.Peak, before, n)
		if n > 0 {
			r.live[s] = l
			continue
		}
		delete(r.live, s)
		if secs := l.takeSeconds(); secs > 0 {
			e.Counts[ConnectedSeconds] += secs
			r.totalLocked(s.Kind)[ConnectedSeconds] += secs
		}
	}
	r.mu.Unlock()
}

// hourlyLocked adds to entries what the live subjects owe at now, once an
// hour each, at the first flush past its phase in the hour: the connected
// time of the hour that ended, in that hour's buckets; and, unless the
// subject was written in this hour already, its peak and level in the new
// hour's buckets, from which queries carry the level through the quiet
// minutes of the hour (see Carry). So a quiet subject costs two small
// writes an hour, spread over the hour's first minute, and none in its
// other minutes.
func (r *Recorder) hourlyLocked(now time.Time, entries []Entry) []Entry {
	minute := unixMinute(now)
	hour := minute - minute%60
	if hour == r.doneHour {
		return entries
	}
	hourStart := time.Unix(int64(hour)*60, 0)
	into := now.Sub(hourStart)
	// Phases fall on hourlySlots points of the hour's first minute: nothing
	// new can be due until the next one, so the live subjects are visited
	// at most six times an hour, not at every flush.
	slot := int64(hour) * (hourlySlots + 1)
	if r.spread > 0 {
		slot += min(int64(into/(r.spread/hourlySlots)), hourlySlots)
	}
	if slot == r.lastSlot {
		return entries
	}
	r.lastSlot = slot
	done := true
	for s, l := range r.live {
		if l.creditHour == hour && l.peakHour == hour {
			continue
		}
		if into < time.Duration(l.phase)*time.Millisecond {
			done = false
			continue
		}
		if l.creditHour < hour {
			l.accrue(hourStart.UnixNano())
			l.creditHour = hour
			if secs := l.takeSeconds(); secs > 0 {
				r.totalLocked(s.Kind)[ConnectedSeconds] += secs
				// The last moment of the hour that ended: its buckets,
				// which have the subject's peak from its write in that
				// hour.
				entries = append(entries, Entry{Subject: s, Counts: map[string]int64{ConnectedSeconds: secs},
					At: hourStart.Add(-time.Millisecond)})
			}
		}
		if l.peakHour < hour {
			entries = append(entries, Entry{Subject: s, Peak: int64(l.n)})
			l.peakHour = hour
		}
		r.live[s] = l
	}
	if done {
		r.doneHour = hour
	}
	return entries
}

// Flush hands what was counted since the last flush to the sink, in one
// Write; concurrent calls take turns. On failure the counts are kept for
// the next flush, so a Redis outage delays usage but loses none of it
// (while the node lives).
//
// Every entry carries the node's name and the subject's level on it
// after the flush. Quiet connected subjects are written as hourlyLocked
// says: once an hour, at their own point of the hour's first minute.
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
	minute := unixMinute(now)
	var entries []Entry
	for s, e := range r.pending {
		if l, ok := r.live[s]; ok {
			// The entry carries the subject's peak and level into this
			// hour's buckets.
			l.peakHour = minute - minute%60
			r.live[s] = l
		}
		entries = append(entries, *e)
	}
	entries = r.hourlyLocked(now, append(entries, r.retry...))
	r.retry = nil
	if len(entries) == 0 {
		r.mu.Unlock()
		return nil
	}
	for i := range entries {
		entries[i].Node = r.node
		entries[i].Level = int64(r.live[entries[i].Subject].n)
	}
	batch := r.pending
	// Not sized like the batch: after a burst of connects the next batches
	// are small, and a map keeps the room it was made with.
	r.pending = make(map[Subject]*Entry)
	r.inflight = batch
	r.mu.Unlock()
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
		if !old.At.IsZero() {
			r.retry = append(r.retry, old)
			continue
		}
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
	add := func(e *Entry) {
		if out == nil {
			out = make(map[string]int64, len(e.Counts))
		}
		for m, n := range e.Counts {
			out[m] += n
		}
	}
	for _, batch := range []map[Subject]*Entry{r.pending, r.inflight} {
		if e := batch[s]; e != nil {
			add(e)
		}
	}
	for i := range r.retry {
		if r.retry[i].Subject == s {
			add(&r.retry[i])
		}
	}
	return out
}
