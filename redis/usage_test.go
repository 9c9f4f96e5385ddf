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
