// Package usagetest is the conformance suite for usage stores: every
// implementation of [usage.Sink] and [usage.Source] runs it.
package usagetest

import (
	"context"
	"errors"
	"slices"
	"sync"
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
		{"At", testAt},
		{"LevelCarriesThroughQuietMinutes", testLevelCarries},
		{"LevelsOfSeveralNodes", testLevelsOfNodes},
		{"LevelFallsWithinAMinute", testLevelFalls},
		{"LevelsStopAtTheHour", testLevelsStopAtTheHour},
		{"QueryStartsInAQuietStretch", testQueryInQuietStretch},
		{"RecorderQuietHourOnTwoNodes", testRecorderQuietHour},
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

// An entry with At goes to the buckets of At, and its counts to the
// ranking of At's hour.
func testAt(t *testing.T, st Store, now time.Time) {
	write(t, st, now, usage.Entry{Subject: key1, Counts: map[string]int64{usage.ConnectedSeconds: 90}, Peak: 1, At: now.Add(-time.Hour)})
	if p := series(t, st, key1, now.Add(-time.Hour), now, usage.Hour); p[0].Counts[usage.ConnectedSeconds] != 90 || len(p[1].Counts) != 0 {
		t.Fatalf("hour buckets of an entry with At = %+v", p)
	}
	top, err := st.Top(bg, usage.KindKey, usage.ConnectedSeconds, 2*time.Hour, 10)
	if err != nil || len(top) != 1 || top[0] != (usage.Ranked{ID: key1.ID, Value: 90}) {
		t.Fatalf("Top = %v, %v", top, err)
	}
}

// peaks returns the peak_connections of every point, and fails if a point
// shows a level or anything but a peak.
func peaks(t *testing.T, pts []usage.Point) []int64 {
	t.Helper()
	out := make([]int64, len(pts))
	for i, p := range pts {
		for m := range p.Counts {
			if m != usage.PeakConnections {
				t.Fatalf("point %s shows %q: %v", p.Start.Format("15:04"), m, p.Counts)
			}
		}
		out[i] = p.Counts[usage.PeakConnections]
	}
	return out
}

// repeat returns n copies of v.
func repeat(v int64, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func checkPeaks(t *testing.T, what string, pts []usage.Point, want []int64) {
	t.Helper()
	if got := peaks(t, pts); !slices.Equal(got, want) {
		t.Fatalf("%s: peaks by minute\n got %v\nwant %v", what, got, want)
	}
}

// A node's level carries from its write through the quiet minutes that
// follow, up to now and no further; the hour and day buckets have the peak.
func testLevelCarries(t *testing.T, st Store, now time.Time) {
	hour := now.Truncate(time.Hour)
	write(t, st, hour.Add(10*time.Minute+5*time.Second), usage.Entry{Subject: alice, Counts: map[string]int64{usage.Connects: 3}, Peak: 3, Node: "a", Level: 3})
	pts := series(t, st, alice, hour, now.Add(5*time.Minute), usage.Minute)
	if len(pts) != 36 || pts[10].Counts[usage.Connects] != 3 || pts[11].Counts[usage.Connects] != 0 {
		t.Fatalf("series %+v", pts)
	}
	delete(pts[10].Counts, usage.Connects)
	// 10 quiet minutes before the write, the write's minute and 20 quiet
	// ones after it up to now, 5 minutes still to come.
	checkPeaks(t, "one write", pts, slices.Concat(repeat(0, 10), repeat(3, 21), repeat(0, 5)))
	for _, step := range []usage.Step{usage.Hour, usage.Day} {
		if p := series(t, st, alice, now, now, step); p[0].Counts[usage.PeakConnections] != 3 || len(p[0].Counts) != 2 {
			t.Fatalf("%s bucket %v; want the peak and the connects", step, p[0].Counts)
		}
	}
}

// The nodes' levels carry each on its own, a quiet minute shows the highest,
// and a node whose subject left (level 0) stops carrying its level.
func testLevelsOfNodes(t *testing.T, st Store, now time.Time) {
	hour := now.Truncate(time.Hour)
	at := func(m int) time.Time { return hour.Add(time.Duration(m)*time.Minute + 30*time.Second) }
	write(t, st, at(5), usage.Entry{Subject: alice, Peak: 2, Node: "a", Level: 2})
	write(t, st, at(8), usage.Entry{Subject: alice, Peak: 5, Node: "b", Level: 5})
	// b goes from 5 to 1 in minute 12; a leaves in minute 15 and b in 25.
	write(t, st, at(12), usage.Entry{Subject: alice, Peak: 5, Node: "b", Level: 1})
	write(t, st, at(15), usage.Entry{Subject: alice, Peak: 2, Node: "a", Level: 0})
	write(t, st, at(25), usage.Entry{Subject: alice, Peak: 1, Node: "b", Level: 0})
	pts := series(t, st, alice, hour, now, usage.Minute)
	checkPeaks(t, "two nodes", pts, slices.Concat(
		repeat(0, 5), repeat(2, 3), // a alone from minute 5
		repeat(5, 5),  // b's 5 from minute 8, and in its minute 12
		repeat(2, 3),  // a's 2 over b's 1, and in a's last minute 15
		repeat(1, 10), // b's 1, and in its last minute 25
		repeat(0, 5))) // nobody
	if p := series(t, st, alice, now, now, usage.Hour); p[0].Counts[usage.PeakConnections] != 5 {
		t.Fatalf("hour bucket %v", p[0].Counts)
	}
}

// A level written in a minute counts as a peak of that minute, and a later
// write of the node in the minute with a lower level keeps the minute's
// peak.
func testLevelFalls(t *testing.T, st Store, now time.Time) {
	m := now.Truncate(time.Minute).Add(-3 * time.Minute)
	write(t, st, m.Add(10*time.Second), usage.Entry{Subject: key3, Peak: 4, Node: "a", Level: 4})
	write(t, st, m.Add(40*time.Second), usage.Entry{Subject: key3, Peak: 4, Node: "a", Level: 1})
	write(t, st, m.Add(time.Minute+20*time.Second), usage.Entry{Subject: key3, Peak: 2, Node: "a", Level: 2})
	checkPeaks(t, "falling level", series(t, st, key3, m, now, usage.Minute), []int64{4, 2, 2, 2})
}

// Levels do not carry into the next hour: a subject's first write of an
// hour (the Recorder makes one for every connected subject) starts them
// again.
func testLevelsStopAtTheHour(t *testing.T, st Store, now time.Time) {
	hour := now.Truncate(time.Hour)
	write(t, st, hour.Add(-10*time.Minute), usage.Entry{Subject: key1, Peak: 3, Node: "a", Level: 3})
	pts := series(t, st, key1, hour.Add(-15*time.Minute), hour.Add(5*time.Minute), usage.Minute)
	checkPeaks(t, "before the hourly write", pts, slices.Concat(repeat(0, 5), repeat(3, 10), repeat(0, 6)))
	write(t, st, hour.Add(2*time.Minute), usage.Entry{Subject: key1, Peak: 3, Node: "a", Level: 3})
	pts = series(t, st, key1, hour.Add(-15*time.Minute), hour.Add(5*time.Minute), usage.Minute)
	checkPeaks(t, "after it", pts, slices.Concat(repeat(0, 5), repeat(3, 10), repeat(0, 2), repeat(3, 4)))
}

// A query that starts in a quiet stretch reads back to the start of the
// hour for the levels, and answers only the minutes asked for.
func testQueryInQuietStretch(t *testing.T, st Store, now time.Time) {
	hour := now.Truncate(time.Hour)
	write(t, st, hour.Add(3*time.Minute), usage.Entry{Subject: key2, Counts: map[string]int64{usage.FramesIn: 1}, Peak: 4, Node: "a", Level: 2})
	from := hour.Add(20*time.Minute + 10*time.Second)
	pts := series(t, st, key2, from, from.Add(5*time.Minute), usage.Minute)
	if len(pts) != 6 || !pts[0].Start.Equal(hour.Add(20*time.Minute)) {
		t.Fatalf("%d points from %s", len(pts), pts[0].Start)
	}
	checkPeaks(t, "quiet stretch", pts, repeat(2, 6))
	// The whole hour: the write's minute has its peak and counts.
	pts = series(t, st, key2, hour, now, usage.Minute)
	if pts[3].Counts[usage.PeakConnections] != 4 || pts[3].Counts[usage.FramesIn] != 1 || len(pts[2].Counts) != 0 || pts[4].Counts[usage.PeakConnections] != 2 {
		t.Fatalf("minutes 2 to 4: %v", pts[2:5])
	}
}

// countingSink counts the writes a Recorder makes.
type countingSink struct {
	usage.Sink
	mu      sync.Mutex
	entries int
}

func (c *countingSink) Write(ctx context.Context, at time.Time, entries []usage.Entry) error {
	c.mu.Lock()
	c.entries += len(entries)
	c.mu.Unlock()
	return c.Sink.Write(ctx, at, entries)
}

func (c *countingSink) take() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.entries
	c.entries = 0
	return n
}

// Two nodes' Recorders, flushing every second across an hour boundary:
// their quiet minutes write nothing, and every minute shows the steady
// peak (the highest of the nodes).
func testRecorderQuietHour(t *testing.T, st Store, now time.Time) {
	hour := now.Truncate(time.Hour)
	clock := hour.Add(-2 * time.Minute)
	tick := func() time.Time { return clock }
	sinks := [2]*countingSink{{Sink: st}, {Sink: st}}
	recs := [2]*usage.Recorder{
		usage.NewRecorder(sinks[0], usage.RecorderOptions{Node: "a", Now: tick}),
		usage.NewRecorder(sinks[1], usage.RecorderOptions{Node: "b", Now: tick}),
	}
	flushUntil := func(end time.Time) (writes int) {
		t.Helper()
		for ; clock.Before(end); clock = clock.Add(time.Second) {
			for _, r := range recs {
				if err := r.Flush(bg); err != nil {
					t.Fatal(err)
				}
			}
		}
		return sinks[0].take() + sinks[1].take()
	}
	clock = clock.Add(10 * time.Second)
	recs[0].Connected(1, alice)
	recs[0].Connected(1, alice)
	flushUntil(hour.Add(-time.Minute))
	for range 3 {
		recs[1].Connected(1, alice)
	}
	flushUntil(hour)
	// In the first minute of the hour each node hands over the hour that
	// ended and writes its level to the new hour: two entries a node.
	if n := flushUntil(hour.Add(time.Minute)); n != 4 {
		t.Fatalf("%d entries written in the first minute of the hour, want 4", n)
	}
	if n := flushUntil(hour.Add(10 * time.Minute)); n != 0 {
		t.Fatalf("%d entries written in 9 quiet minutes, want none", n)
	}
	for range 3 {
		recs[1].Connected(-1, alice)
	}
	flushUntil(now)
	pts := series(t, st, alice, hour.Add(-2*time.Minute), now, usage.Minute)
	// The hand-over lands in the last minute of the hour that ended.
	if pts[1].Counts[usage.ConnectedSeconds] != 2*110+3*60 {
		t.Fatalf("connected seconds handed over %d, want 400", pts[1].Counts[usage.ConnectedSeconds])
	}
	delete(pts[1].Counts, usage.ConnectedSeconds)
	delete(pts[12].Counts, usage.ConnectedSeconds)
	checkPeaks(t, "two recorders", pts, slices.Concat(repeat(2, 1), repeat(3, 12), repeat(2, 20)))
	if p := series(t, st, alice, hour, hour, usage.Hour); p[0].Counts[usage.PeakConnections] != 3 || p[0].Counts[usage.ConnectedSeconds] != 3*600 {
		t.Fatalf("hour bucket %v", p[0].Counts)
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
