package usage_test

import (
	"context"
	"errors"
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
	r := usage.NewRecorder(s, usage.RecorderOptions{Now: clock})
	for range 3 {
		r.Connected(1, key)
	}
	r.Connected(-1, key)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e := s.last()[key]; e.Peak != 3 {
		t.Fatalf("peak %d, want 3", e.Peak)
	}
	// Later in the same minute nothing happens: no write.
	mu.Lock()
	now = now.Add(20 * time.Second)
	mu.Unlock()
	if err := r.Flush(context.Background()); err != nil || s.count() != 1 {
		t.Fatalf("a quiet flush within the minute wrote (%d writes, %v)", s.count(), err)
	}
	// The next minute carries the steady count of the two open sockets.
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.count() != 2 || s.last()[key].Peak != 2 {
		t.Fatalf("the first flush of a minute wrote %d times, peak %+v; want the steady 2", s.count(), s.last()[key])
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
