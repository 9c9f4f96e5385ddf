package redis

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/internal/redistest"
	"github.com/sessionbridge/sessionbridge/limit"
	"github.com/sessionbridge/sessionbridge/limit/limittest"
)

func TestCounterConformance(t *testing.T) {
	srv := redistest.Start(t)
	limittest.RunCounter(t, func(t *testing.T) limit.Counter { return newBackend(t, srv).Counter() })
}

func TestCounterConformanceOnCluster(t *testing.T) {
	srv := redistest.StartCluster(t)
	limittest.RunCounter(t, func(t *testing.T) limit.Counter { return newBackend(t, srv).Counter() })
}

// Two nodes on one Redis hold a subject to one maximum; a unit one node
// releases is free for the other.
func TestCounterSharedAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv, func(o *Options) { o.NodeID = "a" })
	b := newBackend(t, srv, func(o *Options) { o.NodeID = "b"; o.Prefix = a.prefix })
	ca, cb := a.Counter(), b.Counter()
	s := limit.Slot{Rule: "max_connections", Subject: "user:alice", Max: 4}
	var holds []limit.Hold
	for i := range 10 {
		c := ca
		if i%2 == 1 {
			c = cb
		}
		d, h, err := c.Acquire(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			holds = append(holds, h)
		}
	}
	if len(holds) != 4 {
		t.Fatalf("two nodes admitted %d of a maximum of 4", len(holds))
	}
	if ca.Nodes() != 2 || cb.Nodes() != 2 {
		t.Fatalf("live nodes seen: %d and %d, want 2", ca.Nodes(), cb.Nodes())
	}
	holds[1].Release(context.Background()) // node b's
	if d, _, _ := ca.Acquire(context.Background(), s); !d.Allowed {
		t.Fatal("a unit node b released is not free on node a")
	}
}

// The units of a node whose heartbeat stopped are dropped once it is older
// than three presence intervals.
func TestCounterForgetsDeadNodes(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv, func(o *Options) { o.NodeID = "a"; o.PresenceInterval = time.Second })
	b := newBackend(t, srv, func(o *Options) { o.NodeID = "b"; o.Prefix = a.prefix; o.PresenceInterval = time.Second })
	ca, cb := a.Counter(), b.Counter()
	s := limit.Slot{Rule: "max_connections", Subject: "user:alice", Max: 2}
	for range 2 {
		if d, _, err := cb.Acquire(context.Background(), s); err != nil || !d.Allowed {
			t.Fatalf("node b: %+v %v", d, err)
		}
	}
	if d, _, _ := ca.Acquire(context.Background(), s); d.Allowed {
		t.Fatal("node a admitted past node b's units")
	}
	// Node b dies: its last heartbeat is now four intervals old.
	old := strconv.FormatInt(time.Now().Add(-4*time.Second).UnixMilli(), 10)
	if _, err := srv.Do("ZADD", a.prefix+"p:nodes", old, "b"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if d, _, err := ca.Acquire(context.Background(), s); err != nil || !d.Allowed {
			t.Fatalf("after node b died: %+v %v", d, err)
		}
	}
	n, err := srv.Do("HLEN", a.prefix+"mc:{max_connections:user:alice}")
	if err != nil || n.(int64) != 1 {
		t.Fatalf("the hash has %v fields (%v), want node a's only", n, err)
	}
}

// A release that cannot reach Redis is kept and made once Redis is back.
func TestCounterOwesFailedReleases(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv, func(o *Options) { o.Timeout = 300 * time.Millisecond })
	c := b.Counter()
	s := limit.Slot{Rule: "max_connections", Subject: "user:alice", Max: 1}
	_, h, err := c.Acquire(context.Background(), s)
	if err != nil || h == nil {
		t.Fatal(err)
	}
	srv.Stop()
	h.Release(context.Background())
	if c.Owed() != 1 {
		t.Fatalf("owed %d releases, want 1", c.Owed())
	}
	if _, _, err := c.Acquire(context.Background(), s); err == nil {
		t.Fatal("Acquire decided with Redis away")
	}
	srv.RestartKeepingData()
	eventually(t, 10*time.Second, "the owed release paid", func() bool {
		d, _, err := c.Acquire(context.Background(), s)
		return err == nil && d.Allowed
	})
	if c.Owed() != 0 {
		t.Fatalf("still owes %d", c.Owed())
	}
}

// BenchmarkUpgradeDecision is the connects_per_minute decision of an
// upgrade made with an API key (IP, user and key in one script).
func BenchmarkUpgradeDecision(b *testing.B) {
	srv := redistest.Start(b)
	l := newBackend(b, srv).Limiter()
	rate := limit.Rate{N: 1e9, Period: time.Minute}
	charges := []limit.Charge{
		{Rule: "connects_per_minute", Subject: "ip:192.0.2.1", Rate: rate},
		{Rule: "connects_per_minute", Subject: "user:alice", Rate: rate},
		{Rule: "connects_per_minute", Subject: "key:k", Rate: rate},
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d, err := l.Allow(ctx, charges...); err != nil || !d.Allowed {
			b.Fatal(d, err)
		}
	}
}

// BenchmarkCounterAcquireRelease is the max_connections part of an upgrade
// and of its close (user and key): the live-node read, the script, the
// release.
func BenchmarkCounterAcquireRelease(b *testing.B) {
	srv := redistest.Start(b)
	c := newBackend(b, srv).Counter()
	slots := []limit.Slot{{Rule: "max_connections", Subject: "user:alice", Max: 1 << 30}, {Rule: "max_connections", Subject: "key:k", Max: 1 << 30}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, h, err := c.Acquire(ctx, slots...)
		if err != nil || h == nil {
			b.Fatal(err)
		}
		h.Release(ctx)
	}
}
