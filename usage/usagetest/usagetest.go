// Package usagetest is the conformance suite for usage stores: every
// implementation of [usage.Sink] and [usage.Source] runs it.
package usagetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/usage"
)

// Store is a usage store under test.
type Store interface {
	usage.Sink
	usage.Source
}

// NewFunc returns a fresh, isolated store whose Top window ends at now.
type NewFunc func(t *testing.T, now func() time.Time) Store

// Run runs the suite, one fresh store per subtest.
func Run(t *testing.T, newStore NewFunc) {
	tests := []struct {
		name string
		run  func(t *testing.T, st Store, now time.Time)
	}{
		{"SumsPerBucket", testSums},
		{"PeakIsAMaximum", testPeak},
		{"MinuteOnlyAndAt", testMinuteOnlyAndAt},
		{"EmptyBucketsIncluded", testEmpty},
		{"Top", testTop},
		{"BadQueries", testBad},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Real time, so that a networked store's retention applies as
			// in production; the minute is fixed by the test, not waited on.
			now := time.Now().UTC().Truncate(time.Hour).Add(30 * time.Minute)
			tc.run(t, newStore(t, func() time.Time { return now }), now)
		})
	}
}

var bg = context.Background()

var (
	alice = usage.Subject{Kind: usage.KindUser, ID: "alice"}
	key1  = usage.Subject{Kind: usage.KindKey, ID: "00aaaaaaaaaaaaaa"}
	key2  = usage.Subject{Kind: usage.KindKey, ID: "00bbbbbbbbbbbbbb"}
	key3  = usage.Subject{Kind: usage.KindKey, ID: "00cccccccccccccc"}
)

func write(t *testing.T, st Store, at time.Time, entries ...usage.Entry) {
	t.Helper()
	if err := st.Write(bg, at, entries); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

func series(t *testing.T, st Store, s usage.Subject, from, to time.Time, step usage.Step) []usage.Point {
	t.Helper()
	pts, err := st.Series(bg, s, from, to, step)
	if err != nil {
		t.Fatalf("Series: %v", err)
	}
	return pts
}

func testSums(t *testing.T, st Store, now time.Time) {
	m0, m1 := now.Add(-2*time.Minute), now.Add(-time.Minute)
	write(t, st, m0, usage.Entry{Subject: alice, Counts: map[string]int64{usage.FramesIn: 3, usage.BytesIn: 100}})
	write(t, st, m0.Add(30*time.Second), usage.Entry{Subject: alice, Counts: map[string]int64{usage.FramesIn: 4}})
	write(t, st, m1, usage.Entry{Subject: alice, Counts: map[string]int64{usage.FramesIn: 10, usage.Refused("rate_limited"): 2}})

	pts := series(t, st, alice, m0, m1, usage.Minute)
	if len(pts) != 2 || !pts[0].Start.Equal(m0) || pts[0].Counts[usage.FramesIn] != 7 || pts[0].Counts[usage.BytesIn] != 100 ||
		pts[1].Counts[usage.FramesIn] != 10 || pts[1].Counts["connects_refused:rate_limited"] != 2 {
		t.Fatalf("minute series = %+v", pts)
	}
	hour := series(t, st, alice, now, now, usage.Hour)
	day := series(t, st, alice, now, now, usage.Day)
	if len(hour) != 1 || hour[0].Counts[usage.FramesIn] != 17 || day[0].Counts[usage.FramesIn] != 17 {
		t.Fatalf("hour %+v, day %+v; want 17 frames in each", hour, day)
	}
	if pts := series(t, st, key1, m0, m1, usage.Minute); pts[0].Counts[usage.FramesIn] != 0 {
		t.Fatal("another subject's counts leaked")
	}
}

func testPeak(t *testing.T, st Store, now time.Time) {
	write(t, st, now, usage.Entry{Subject: key1, Counts: map[string]int64{}, Peak: 5})
	write(t, st, now, usage.Entry{Subject: key1, Counts: map[string]int64{}, Peak: 3})
	write(t, st, now.Add(-time.Minute), usage.Entry{Subject: key1, Counts: map[string]int64{}, Peak: 8})
	if pts := series(t, st, key1, now, now, usage.Minute); pts[0].Counts[usage.PeakConnections] != 5 {
		t.Fatalf("minute peak = %d, want 5 (the maximum, not the sum)", pts[0].Counts[usage.PeakConnections])
	}
	if pts := series(t, st, key1, now, now, usage.Hour); pts[0].Counts[usage.PeakConnections] != 8 {
		t.Fatalf("hour peak = %d, want 8", pts[0].Counts[usage.PeakConnections])
	}
}

// A MinuteOnly entry reaches the minute bucket alone; an entry with At goes
// to the buckets of At, and its counts to the ranking of At's hour.
func testMinuteOnlyAndAt(t *testing.T, st Store, now time.Time) {
	write(t, st, now,
		usage.Entry{Subject: alice, Peak: 4, MinuteOnly: true},
		usage.Entry{Subject: key1, Counts: map[string]int64{usage.ConnectedSeconds: 90}, Peak: 1, At: now.Add(-time.Hour)})
	if p := series(t, st, alice, now, now, usage.Minute); p[0].Counts[usage.PeakConnections] != 4 {
		t.Fatalf("minute bucket of a MinuteOnly entry = %v", p[0].Counts)
	}
	for _, step := range []usage.Step{usage.Hour, usage.Day} {
		if p := series(t, st, alice, now, now, step); len(p[0].Counts) != 0 {
			t.Fatalf("%s bucket of a MinuteOnly entry = %v, want empty", step, p[0].Counts)
		}
	}
	if p := series(t, st, key1, now.Add(-time.Hour), now, usage.Hour); p[0].Counts[usage.ConnectedSeconds] != 90 || len(p[1].Counts) != 0 {
		t.Fatalf("hour buckets of an entry with At = %+v", p)
	}
	top, err := st.Top(bg, usage.KindKey, usage.ConnectedSeconds, 2*time.Hour, 10)
	if err != nil || len(top) != 1 || top[0] != (usage.Ranked{ID: key1.ID, Value: 90}) {
		t.Fatalf("Top = %v, %v", top, err)
	}
}

func testEmpty(t *testing.T, st Store, now time.Time) {
	write(t, st, now, usage.Entry{Subject: key2, Counts: map[string]int64{usage.Connects: 1}})
	pts := series(t, st, key2, now.Add(-9*time.Minute), now, usage.Minute)
	if len(pts) != 10 {
		t.Fatalf("%d points for 10 minutes", len(pts))
	}
	for i, p := range pts[:9] {
		if len(p.Counts) != 0 || !p.Start.Equal(now.Truncate(time.Minute).Add(time.Duration(i-9)*time.Minute)) {
			t.Fatalf("point %d = %+v, want an empty bucket", i, p)
		}
	}
	if pts[9].Counts[usage.Connects] != 1 {
		t.Fatalf("last point = %+v", pts[9])
	}
}

func testTop(t *testing.T, st Store, now time.Time) {
	write(t, st, now,
		usage.Entry{Subject: key1, Counts: map[string]int64{usage.FramesIn: 5}},
		usage.Entry{Subject: key2, Counts: map[string]int64{usage.FramesIn: 50}},
		usage.Entry{Subject: key3, Counts: map[string]int64{usage.BytesIn: 500}},
		usage.Entry{Subject: alice, Counts: map[string]int64{usage.FramesIn: 5000}},
	)
	write(t, st, now.Add(-2*time.Hour), usage.Entry{Subject: key1, Counts: map[string]int64{usage.FramesIn: 100}})

	top, err := st.Top(bg, usage.KindKey, usage.FramesIn, time.Hour, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []usage.Ranked{{ID: key2.ID, Value: 50}, {ID: key1.ID, Value: 5}}
	if !slices.Equal(top, want) {
		t.Fatalf("top over 1h = %+v, want %+v", top, want)
	}
	top, err = st.Top(bg, usage.KindKey, usage.FramesIn, 3*time.Hour, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := []usage.Ranked{{ID: key1.ID, Value: 105}}; !slices.Equal(top, want) {
		t.Fatalf("top 1 over 3h = %+v, want %+v", top, want)
	}
}

func testBad(t *testing.T, st Store, now time.Time) {
	if _, err := st.Series(bg, alice, now, now.Add(-time.Hour), usage.Minute); !errors.Is(err, usage.ErrInvalid) {
		t.Errorf("to before from: %v", err)
	}
	if _, err := st.Series(bg, alice, now.Add(-30*24*time.Hour), now, usage.Minute); !errors.Is(err, usage.ErrInvalid) {
		t.Errorf("too many points: %v", err)
	}
	if _, err := st.Series(bg, alice, now, now, usage.Step(time.Second)); !errors.Is(err, usage.ErrInvalid) {
		t.Errorf("unknown step: %v", err)
	}
	for _, q := range []struct {
		window time.Duration
		limit  int
	}{{0, 10}, {usage.MaxTopWindow + time.Hour, 10}, {time.Hour, 0}, {time.Hour, usage.MaxTopLimit + 1}} {
		if _, err := st.Top(bg, usage.KindKey, usage.FramesIn, q.window, q.limit); !errors.Is(err, usage.ErrInvalid) {
			t.Errorf("Top(%s, %d) = %v, want ErrInvalid", q.window, q.limit, err)
		}
	}
}
