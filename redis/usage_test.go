package redis

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
	"github.com/sessionbridge/sessionbridge/usage"
	"github.com/sessionbridge/sessionbridge/usage/usagetest"
)

func TestUsageConformance(t *testing.T) {
	srv := redistest.Start(t)
	usagetest.Run(t, func(t *testing.T, now func() time.Time) usagetest.Store {
		u := newBackend(t, srv).Usage()
		u.now = now
		return u
	})
}

func TestUsageConformanceOnCluster(t *testing.T) {
	srv := redistest.StartCluster(t)
	usagetest.Run(t, func(t *testing.T, now func() time.Time) usagetest.Store {
		u := newBackend(t, srv).Usage()
		u.now = now
		return u
	})
}

// TestUsageLargeFlush: a flush of many subjects lands whole.
func TestUsageLargeFlush(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv)
	entries := make([]usage.Entry, 500)
	for i := range entries {
		entries[i] = usage.Entry{Subject: usage.Subject{Kind: usage.KindKey, ID: fmt.Sprintf("key-%03d", i)},
			Counts: map[string]int64{usage.FramesIn: int64(i + 1), usage.BytesIn: 10}}
	}
	if err := b.Usage().Write(context.Background(), time.Now(), entries); err != nil {
		t.Fatal(err)
	}
	top, err := b.Usage().Top(context.Background(), usage.KindKey, usage.FramesIn, time.Hour, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(top) != 500 || top[0] != (usage.Ranked{ID: "key-499", Value: 500}) || top[499] != (usage.Ranked{ID: "key-000", Value: 1}) {
		t.Fatalf("top has %d entries, first %+v", len(top), top[0])
	}
}

// TestUsageWriteUnavailable: with Redis away a write fails with
// ErrUnavailable (the Recorder keeps the counts for its next flush).
func TestUsageWriteUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv)
	srv.Stop()
	err := b.Usage().Write(context.Background(), time.Now(), []usage.Entry{{Subject: usage.Subject{Kind: usage.KindUser, ID: "a"}, Counts: map[string]int64{usage.Connects: 1}}})
	if !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Fatalf("Write with Redis away = %v, want ErrUnavailable", err)
	}
}

// TestUsageBucketsExpire: every bucket gets its expiry from the script that
// creates it, whatever the entry writes first (counts, a peak, a level
// alone), and later writes to a bucket that has it leave it be.
func TestUsageBucketsExpire(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv)
	u := b.Usage()
	ctx := context.Background()
	now := time.Now().UTC()
	s := func(id string) usage.Subject { return usage.Subject{Kind: usage.KindUser, ID: id} }
	entries := []usage.Entry{
		{Subject: s("counts"), Counts: map[string]int64{usage.FramesIn: 1}},
		{Subject: s("peak"), Peak: 2, Node: "a", Level: 2},
		{Subject: s("level"), Node: "a"},
		{Subject: s("hand-over"), Counts: map[string]int64{usage.ConnectedSeconds: 9}, Peak: 1, At: now.Add(-time.Hour)},
	}
	for range 2 {
		if err := u.Write(ctx, now, entries); err != nil {
			t.Fatal(err)
		}
	}
	keys, ok := srv.MustDo("KEYS", b.prefix+"us:*").([]any)
	// counts, peak and hand-over: three buckets each; level: its minute.
	if !ok || len(keys) != 10 {
		t.Fatalf("bucket keys %v", keys)
	}
	for _, k := range keys {
		if ttl, _ := srv.MustDo("PTTL", k.(string)).(int64); ttl <= 0 {
			t.Errorf("%s has no expiry (PTTL %d)", k, ttl)
		}
	}
	pts, err := u.Series(ctx, s("peak"), now, now, usage.Minute)
	if err != nil || pts[0].Counts[usage.PeakConnections] != 2 || len(pts[0].Counts) != 1 {
		t.Fatalf("Series = %v, %v", pts, err)
	}
}
