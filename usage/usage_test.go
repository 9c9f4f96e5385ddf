package usage_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/usage"
	"github.com/sessionbridge/sessionbridge/usage/usagetest"
)

func TestMemoryConformance(t *testing.T) {
	usagetest.Run(t, func(t *testing.T, now func() time.Time) usagetest.Store { return &usage.Memory{Now: now} })
}

// sink records what a Recorder writes, and can fail.
type sink struct {
	mu     sync.Mutex
	writes [][]usage.Entry
	fail   bool
}

func (s *sink) Write(_ context.Context, _ time.Time, entries []usage.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("sink down")
	}
	s.writes = append(s.writes, entries)
	return nil
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.writes)
}

func (s *sink) last() map[usage.Subject]usage.Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[usage.Subject]usage.Entry{}
	for _, e := range s.writes[len(s.writes)-1] {
		out[e.Subject] = e
	}
	return out
}

var (
	key  = usage.Subject{Kind: usage.KindKey, ID: "k1"}
	user = usage.Subject{Kind: usage.KindUser, ID: "alice"}
)

func TestRecorderOneWritePerFlush(t *testing.T) {
	s := &sink{}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	r := usage.NewRecorder(s, usage.RecorderOptions{Now: func() time.Time { return now }})
	for range 1000 {
		r.Add(usage.FramesIn, 1, key, user)
		r.Add(usage.BytesIn, 10, key, user)
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.count() != 1 {
		t.Fatalf("%d writes for one flush", s.count())
	}
	got := s.last()
	if got[key].Counts[usage.FramesIn] != 1000 || got[user].Counts[usage.BytesIn] != 10000 || len(got) != 2 {
		t.Fatalf("flushed %+v", got)
	}
	if err := r.Flush(context.Background()); err != nil || s.count() != 1 {
		t.Fatalf("an idle flush wrote (%d writes, %v): idle subjects must cost nothing", s.count(), err)
	}
}

func TestRecorderKeepsCountsWhenTheSinkFails(t *testing.T) {
	s := &sink{fail: true}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	r := usage.NewRecorder(s, usage.RecorderOptions{Now: func() time.Time { return now }})
	r.Add(usage.Connects, 2, key)
	r.Connected(1, key)
	r.Connected(1, key)
	if err := r.Flush(context.Background()); err == nil {
		t.Fatal("a failed write was not reported")
	}
	r.Add(usage.Connects, 3, key)
	r.Connected(-1, key)
	s.mu.Lock()
	s.fail = false
	s.mu.Unlock()
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e := s.last()[key]; e.Counts[usage.Connects] != 5 || e.Peak != 2 {
		t.Fatalf("after an outage, flushed %+v; want the 5 connects and the peak of 2", e)
	}
}

func TestRecorderPeaksAndQuietMinutes(t *testing.T) {
	s := &sink{}
	var mu sync.Mutex
	now := time.Date(2026, 3, 1, 12, 0, 10, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := usage.NewRecorder(s, usage.RecorderOptions{Now: clock, Node: "n1"})
	for range 3 {
		r.Connected(1, key)
	}
	r.Connected(-1, key)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e := s.last()[key]; e.Peak != 3 || e.Level != 2 || e.Node != "n1" {
		t.Fatalf("flushed %+v; want the peak of 3 and the level of 2 on n1", e)
	}
	// The rest of the hour nothing happens: no write, the stores carry the
	// level through the quiet minutes.
	for range 59 * 60 {
		mu.Lock()
		now = now.Add(time.Second)
		mu.Unlock()
		if err := r.Flush(context.Background()); err != nil || s.count() != 1 {
			t.Fatalf("a quiet flush at %s wrote (%d writes, %v)", clock().Format("15:04:05"), s.count(), err)
		}
	}
	// A close is written with the level after it.
	r.Connected(-1, key)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e := s.last()[key]; e.Peak != 2 || e.Level != 1 {
		t.Fatalf("flushed %+v; want the peak of 2 and the level of 1", e)
	}
}

// A quiet subject's hourly writes are spread over the first minute of the
// hour: each subject is written once, at one of a few points, not all at
// the first flush.
func TestRecorderSpreadsHourlyWrites(t *testing.T) {
	s := &sink{}
	now := time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)
	r := usage.NewRecorder(s, usage.RecorderOptions{Now: func() time.Time { return now }})
	const n = 600
	for i := range n {
		r.Connected(1, usage.Subject{Kind: usage.KindUser, ID: fmt.Sprint("u", i)})
	}
	if err := r.Flush(context.Background()); err != nil || s.count() != 1 {
		t.Fatalf("the connects were not written in one flush: %d writes, %v", s.count(), err)
	}
	now = now.Truncate(time.Hour).Add(time.Hour)
	written := map[usage.Subject]int{}
	most := 0
	for range 120 {
		before := s.count()
		if err := r.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if s.count() > before {
			if now.Sub(now.Truncate(time.Hour)) >= time.Minute {
				t.Fatalf("a write at %s, after the hour's first minute", now.Format("15:04:05"))
			}
			batch := s.writes[len(s.writes)-1]
			most = max(most, len(batch)/2)
			for _, e := range batch {
				if !e.At.IsZero() {
					continue // the connected time of the hour that ended
				}
				if e.Peak != 1 || e.Level != 1 || len(e.Counts) != 0 {
					t.Fatalf("hourly write %+v", e)
				}
				written[e.Subject]++
			}
		}
		now = now.Add(time.Second)
	}
	if len(written) != n {
		t.Fatalf("%d of %d subjects written in the hour's first minute", len(written), n)
	}
	for sub, k := range written {
		if k != 1 {
			t.Fatalf("%v written %d times in one hour", sub, k)
		}
	}
	// Six points: a sixth each, give or take the hash.
	if most > n/4 {
		t.Fatalf("one flush wrote %d of %d quiet subjects: not spread", most, n)
	}
}

// Connected time is handed over once an hour, into the buckets of the hour
// that ended, and when the subject's last socket closes; the hourly write
// also gives the new hour's buckets the subject's peak and level.
func TestRecorderConnectedTimeHourly(t *testing.T) {
	s := &sink{}
	now := time.Date(2026, 3, 1, 12, 0, 10, 0, time.UTC)
	r := usage.NewRecorder(s, usage.RecorderOptions{Now: func() time.Time { return now }})
	r.Connected(1, key)
	r.Connected(1, key)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e := s.last()[key]; e.Counts[usage.ConnectedSeconds] != 0 || e.Peak != 2 {
		t.Fatalf("connect flushed %+v", e)
	}
	// At the end of the first minute of the next hour the subject has
	// handed over the hour that ended and written its peak to the new
	// hour's buckets.
	now = time.Date(2026, 3, 1, 13, 0, 59, 0, time.UTC)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var handed, steady *usage.Entry
	for _, e := range s.writes[len(s.writes)-1] {
		if e.Subject != key {
			continue
		}
		if e.At.IsZero() {
			steady = &e
		} else {
			handed = &e
		}
	}
	if handed == nil || handed.Counts[usage.ConnectedSeconds] != 2*(3600-10) || handed.Peak != 0 || handed.HasLevel() ||
		!handed.At.Equal(time.Date(2026, 3, 1, 12, 59, 59, 999e6, time.UTC)) {
		t.Fatalf("hand-over %+v; want 7180 s in the buckets of 12:59:59.999", handed)
	}
	if steady == nil || steady.Peak != 2 || steady.Level != 2 {
		t.Fatalf("hourly write %+v; want the peak and level of 2", steady)
	}
	// The close hands over the rest: 2 × 600.5 s.
	now = time.Date(2026, 3, 1, 13, 10, 0, 5e8, time.UTC)
	r.Connected(-1, key)
	r.Connected(-1, key)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e := s.last()[key]; e.Counts[usage.ConnectedSeconds] != 1201 || e.Peak != 2 {
		t.Fatalf("close flushed %+v; want 1201 s and the peak of 2", e)
	}
	if got := r.Totals(usage.KindKey)[usage.ConnectedSeconds]; got != 7180+1201 {
		t.Fatalf("total connected seconds %d", got)
	}
	if r.Live(key) != 0 {
		t.Fatal("the subject is still live")
	}
}

func TestRecorderRunFlushesOnStop(t *testing.T) {
	s := &sink{}
	r := usage.NewRecorder(s, usage.RecorderOptions{FlushInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	r.Add(usage.FramesOut, 7, key)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s.count() != 1 || s.last()[key].Counts[usage.FramesOut] != 7 {
		t.Fatal("stopping Run did not flush what was pending")
	}
}

func TestParseStep(t *testing.T) {
	for _, st := range usage.Steps {
		got, err := usage.ParseStep(st.String())
		if err != nil || got != st {
			t.Fatalf("ParseStep(%q) = %v, %v", st.String(), got, err)
		}
	}
	for _, bad := range []string{"", "1s", "60m", "1M"} {
		if _, err := usage.ParseStep(bad); !errors.Is(err, usage.ErrInvalid) {
			t.Errorf("ParseStep(%q) = %v", bad, err)
		}
	}
}

// A collector hands its counts over inside the flush that calls it; AddAll
// adds a batch under one lock; Totals keep the sums by kind.
func TestRecorderCollectAndTotals(t *testing.T) {
	s := &sink{}
	r := usage.NewRecorder(s, usage.RecorderOptions{})
	calls := 0
	r.Collect(func(time.Time) {
		calls++
		r.AddAll([]usage.Delta{{Metric: usage.FramesIn, N: 3}, {Metric: usage.BytesIn, N: 0}}, key, user)
	})
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if calls != 1 || s.count() != 1 {
		t.Fatalf("%d collector calls, %d writes for one flush", calls, s.count())
	}
	e := s.last()[key]
	if e.Counts[usage.FramesIn] != 3 || len(e.Counts) != 1 {
		t.Fatalf("flushed %+v; a zero delta must not add a metric", e)
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := r.Totals(usage.KindUser); got[usage.FramesIn] != 6 || len(got) != 1 {
		t.Fatalf("user totals %v", got)
	}
	if got := r.Totals(usage.KindKey); got[usage.FramesIn] != 6 {
		t.Fatalf("key totals %v", got)
	}
}

// blockingSink holds every Write until released.
type blockingSink struct {
	entered chan struct{}
	release chan struct{}
}

func (b *blockingSink) Write(context.Context, time.Time, []usage.Entry) error {
	b.entered <- struct{}{}
	<-b.release
	return errors.New("down")
}

// Counts being written are still pending until the write succeeds.
func TestRecorderPendingIncludesTheWriteUnderWay(t *testing.T) {
	b := &blockingSink{entered: make(chan struct{}), release: make(chan struct{})}
	r := usage.NewRecorder(b, usage.RecorderOptions{})
	r.Add(usage.Connects, 2, key)
	done := make(chan error)
	go func() { done <- r.Flush(context.Background()) }()
	<-b.entered
	if got := r.Pending(key)[usage.Connects]; got != 2 {
		t.Fatalf("pending during the write = %d, want 2", got)
	}
	r.Add(usage.Connects, 1, key)
	if got := r.Pending(key)[usage.Connects]; got != 3 {
		t.Fatalf("pending = %d, want 3", got)
	}
	close(b.release)
	if err := <-done; err == nil {
		t.Fatal("the failed write was not reported")
	}
	if got := r.Pending(key)[usage.Connects]; got != 3 {
		t.Fatalf("pending after the failed write = %d, want 3", got)
	}
}

// partialSink stores every entry but those of one subject.
type partialSink struct {
	stored map[usage.Subject]int64
	refuse usage.Subject
}

func (p *partialSink) Write(_ context.Context, _ time.Time, entries []usage.Entry) error {
	var failed []int
	for i, e := range entries {
		if e.Subject == p.refuse {
			failed = append(failed, i)
			continue
		}
		p.stored[e.Subject] += e.Counts[usage.FramesIn]
	}
	if failed != nil {
		return &usage.PartialError{Failed: failed, Err: errors.New("one slot down")}
	}
	return nil
}

// After a partial write only the entries not stored are written again.
func TestRecorderPartialWrite(t *testing.T) {
	p := &partialSink{stored: map[usage.Subject]int64{}, refuse: key}
	r := usage.NewRecorder(p, usage.RecorderOptions{})
	r.Add(usage.FramesIn, 4, key, user)
	if err := r.Flush(context.Background()); err == nil {
		t.Fatal("the partial write was not reported")
	}
	if got := r.Pending(user); got != nil {
		t.Fatalf("the stored entry is pending again: %v", got)
	}
	p.refuse = usage.Subject{}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p.stored[key] != 4 || p.stored[user] != 4 {
		t.Fatalf("stored %v; want 4 each, none twice", p.stored)
	}
}

// An hourly write that fails is written by the next flush that succeeds:
// the connected time still into the hour that ended, the peak with the
// subject's level then (the stores carry it from there).
func TestRecorderHourlyWriteOutlivesAFailure(t *testing.T) {
	s := &sink{}
	now := time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)
	r := usage.NewRecorder(s, usage.RecorderOptions{Now: func() time.Time { return now }, Node: "n1"})
	r.Connected(1, key)
	r.Connected(1, key)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.fail = true
	s.mu.Unlock()
	now = time.Date(2026, 3, 1, 13, 0, 59, 0, time.UTC)
	if err := r.Flush(context.Background()); err == nil {
		t.Fatal("the failed hourly write was not reported")
	}
	s.mu.Lock()
	s.fail = false
	s.mu.Unlock()
	now = now.Add(2 * time.Minute)
	r.Connected(1, key)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var handed, peak int
	for _, e := range s.writes[len(s.writes)-1] {
		switch {
		case e.At.Equal(time.Date(2026, 3, 1, 12, 59, 59, 999e6, time.UTC)) && e.Counts[usage.ConnectedSeconds] == 2*1800:
			handed++
		case e.At.IsZero() && e.Peak == 3 && e.Level == 3 && e.Node == "n1" && len(e.Counts) == 0:
			peak++
		default:
			t.Fatalf("after the outage, flushed %+v", e)
		}
	}
	if handed != 1 || peak != 1 {
		t.Fatalf("after the outage, %d hand-overs into 12:59 and %d peaks of 3; want one each", handed, peak)
	}
}
