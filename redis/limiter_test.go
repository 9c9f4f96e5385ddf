package redis

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
	"github.com/sessionbridge/sessionbridge/limit"
	"github.com/sessionbridge/sessionbridge/limit/limittest"
)

func TestLimiterConformance(t *testing.T) {
	srv := redistest.Start(t)
	limittest.Run(t, func(t *testing.T) limit.Limiter { return newBackend(t, srv).Limiter() })
}

func TestLimiterConformanceOnCluster(t *testing.T) {
	srv := redistest.StartCluster(t)
	limittest.Run(t, func(t *testing.T) limit.Limiter { return newBackend(t, srv).Limiter() })
}

// TestLimiterSharedAcrossNodes: two nodes on one Redis share one allowance.
func TestLimiterSharedAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv)
	b := newBackend(t, srv, func(o *Options) { o.Prefix = a.prefix })
	c := limit.Charge{Rule: "connects_per_minute", Subject: "user:alice", Rate: limit.Rate{N: 10, Period: time.Hour}}
	admitted := 0
	for i := range 30 {
		node := a
		if i%2 == 1 {
			node = b
		}
		d, err := node.Limiter().Allow(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			admitted++
		}
	}
	if admitted != 10 {
		t.Fatalf("two nodes admitted %d of a limit of 10", admitted)
	}
}

// TestLimiterStateExpires: a subject's state lives no longer than its TAT.
func TestLimiterStateExpires(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv)
	c := limit.Charge{Rule: "frames", Subject: "conn:x", Rate: limit.PerSecond(1)}
	if _, err := b.Limiter().Allow(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	ttl, err := b.Client().Do(context.Background(), b.Client().B().Pttl().Key(b.Limiter().stateKey(c)).Build()).AsInt64()
	if err != nil || ttl <= 0 || ttl > 1001 {
		t.Fatalf("state TTL %d ms, %v; want at most the 1 s interval, rounded up", ttl, err)
	}
}

// TestLimiterUnavailable: with Redis away the limiter says so (callers fall
// back to a local share) and works again when Redis is back.
func TestLimiterUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv)
	c := limit.Charge{Rule: "r", Subject: "s", Rate: limit.PerMinute(10)}
	srv.Stop()
	if _, err := b.Limiter().Allow(context.Background(), c); !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Fatalf("Allow with Redis away = %v, want ErrUnavailable", err)
	}
	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err := b.Limiter().Allow(context.Background(), c)
		if err == nil {
			if !d.Allowed || d.Remaining != 9 {
				t.Fatalf("first decision after the restart: %+v", d)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Allow after Redis came back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
