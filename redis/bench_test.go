package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

// benchSession creates a session through writer, so that the reader under
// measurement has no write of its own to it (which would bypass its cache).
func benchSession(b *testing.B, writer *Backend) *sessionbridge.Session {
	b.Helper()
	s := newSession(b, "bench-user")
	s.Data = json.RawMessage(`{"theme":"dark","cart":[1,2,3],"locale":"en-GB","flags":{"beta":true}}`)
	if err := writer.Store().Create(bg, s, sessionbridge.Event{Source: sessionbridge.SourceAPI, NodeID: "bench"}); err != nil {
		b.Fatal(err)
	}
	return s
}

func benchGet(b *testing.B, disableCache bool) {
	srv := redistest.Start(b)
	writer := newBackend(b, srv)
	reader := newBackend(b, srv, func(o *Options) { o.Prefix = writer.prefix; o.DisableClientCache = disableCache })
	s := benchSession(b, writer)
	if _, err := reader.Store().Get(bg, s.ID); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := reader.Store().Get(bg, s.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetCached is Store.Get with a warm client-side cache: no round
// trip to Redis.
func BenchmarkGetCached(b *testing.B) { benchGet(b, false) }

// BenchmarkGetUncached is Store.Get with the client cache off: one HGETALL
// round trip.
func BenchmarkGetUncached(b *testing.B) { benchGet(b, true) }

// BenchmarkGetCachedParallel is BenchmarkGetCached from GOMAXPROCS
// goroutines, as concurrent HTTP requests would read.
func BenchmarkGetCachedParallel(b *testing.B) {
	srv := redistest.Start(b)
	writer := newBackend(b, srv)
	reader := newBackend(b, srv, func(o *Options) { o.Prefix = writer.prefix })
	s := benchSession(b, writer)
	if _, err := reader.Store().Get(bg, s.ID); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := reader.Store().Get(bg, s.ID); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkUpdate is one Store.Update: the version-checked write of the
// whole session and its PUBLISH, one EVALSHA.
func BenchmarkUpdate(b *testing.B) {
	srv := redistest.Start(b)
	a := newBackend(b, srv)
	s := benchSession(b, a)
	ev := sessionbridge.Event{Source: sessionbridge.SourceHTTP, NodeID: "bench", Updates: json.RawMessage(`{"cart":[1,2,3,4]}`)}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		next := s.Clone()
		next.Version = s.Version + 1
		ev.Version = next.Version
		if err := a.Store().Update(bg, next, s.Version, ev); err != nil {
			b.Fatal(err)
		}
		s = next
	}
}

// BenchmarkManagerTouch is a recorded touch (the interval throttles nothing
// here): the conditional write of the deadline and its PUBLISH.
func BenchmarkTouch(b *testing.B) {
	srv := redistest.Start(b)
	a := newBackend(b, srv)
	s := benchSession(b, a)
	seen := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		seen = seen.Add(time.Millisecond)
		wrote, err := a.Store().Touch(bg, s.ID, seen, seen.Add(30*time.Minute), seen, sessionbridge.Event{NodeID: "bench"})
		if err != nil || !wrote {
			b.Fatal(wrote, err)
		}
	}
}

// hop signals each received event on a channel.
type hop struct{ got chan struct{} }

func (h hop) HandleEvent(sessionbridge.Event) { h.got <- struct{}{} }
func (h hop) HandleGap()                      {}

// BenchmarkEventHop is one event from Publish on one node to HandleEvent on
// another (two Backends, two connections), one at a time: the latency of
// the bus.
func BenchmarkEventHop(b *testing.B) {
	srv := redistest.Start(b)
	pub := newBackend(b, srv)
	sub := newBackend(b, srv, func(o *Options) { o.Prefix = pub.prefix })
	h := hop{got: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { done <- sub.Bus().Subscribe(ctx, h) }()
	defer func() { cancel(); <-done }()
	ev := sessionbridge.Event{
		Type: sessionbridge.EventUpdated, SessionID: "abCDEFGHIJKLMNOPQR", UserID: "user-123456",
		Source: sessionbridge.SourceHTTP, Timestamp: time.Now(), NodeID: "node-a", Version: 7,
		Updates: json.RawMessage(`{"theme":"dark"}`), ExpiresAt: time.Now().Add(time.Hour),
	}
	// Wait until the subscription delivers.
	warm := time.After(10 * time.Second)
	for delivered := false; !delivered; {
		if err := pub.Bus().Publish(bg, ev); err != nil {
			b.Fatal(err)
		}
		select {
		case <-h.got:
			delivered = true
		case <-time.After(20 * time.Millisecond):
		case <-warm:
			b.Fatal("subscription never delivered")
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := pub.Bus().Publish(bg, ev); err != nil {
			b.Fatal(err)
		}
		<-h.got
	}
}

// BenchmarkClaimExpiredIdle is one expiry sweep that finds nothing due: one
// pipelined round trip over the 256 shard indexes. Every node runs one per
// second (the server's default expiry interval).
func BenchmarkClaimExpiredIdle(b *testing.B) {
	srv := redistest.Start(b)
	a := newBackend(b, srv)
	for range 100 {
		benchSession(b, a) // deadlines an hour away: present, not due
	}
	tmpl := sessionbridge.Event{Source: sessionbridge.SourceSystem, NodeID: "bench"}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		got, err := a.Store().ClaimExpired(bg, time.Now(), 1000, tmpl)
		if err != nil || len(got) != 0 {
			b.Fatal(len(got), err)
		}
	}
}

// BenchmarkRouterFollow is the router's share of a connect in a storm: one
// follow of a new session channel and the flush that subscribes it (one
// SSUBSCRIBE and PING round trip), with held channels followed already.
// The cost must not grow with held, the node's sockets.
func BenchmarkRouterFollow(b *testing.B) {
	for _, held := range []int{0, 20000} {
		b.Run("held="+strconv.Itoa(held), func(b *testing.B) {
			srv := redistest.Start(b)
			node := newBackend(b, srv)
			rec := &recorder{}
			subscribe(b, node, rec)
			topics := make([]sessionbridge.Topic, held)
			for i := range topics {
				topics[i] = sessionbridge.SessionTopic(sessionIDIn(b, fmt.Sprintf("%02x", i%256)))
			}
			follow(b, node, rec, topics...)
			b.ReportAllocs()
			for b.Loop() {
				node.router.follow(sessionbridge.SessionTopic(sessionIDIn(b, "00")))
				if err := node.router.flush(bg, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkClaimExpiredIdleWatched is BenchmarkClaimExpiredIdle on a node
// whose bus is subscribed, as every serving node's is: the expiry hints are
// heard, so a claim that finds nothing due reads no index (but every
// expiryRecheck).
func BenchmarkClaimExpiredIdleWatched(b *testing.B) {
	srv := redistest.Start(b)
	a := newBackend(b, srv)
	for range 100 {
		benchSession(b, a)
	}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan struct{})
	h := &recorder{}
	go func() { defer close(done); _ = a.Bus().Subscribe(ctx, h) }()
	b.Cleanup(func() { cancel(); <-done })
	eventually(b, 10*time.Second, "the subscription", func() bool { return h.gapCount() >= 1 })
	tmpl := sessionbridge.Event{Source: sessionbridge.SourceSystem, NodeID: "bench"}
	before := commandCalls(b, srv, "zrange")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		got, err := a.Store().ClaimExpired(bg, time.Now(), 1000, tmpl)
		if err != nil || len(got) != 0 {
			b.Fatal(len(got), err)
		}
	}
	b.ReportMetric(float64(commandCalls(b, srv, "zrange")-before)/float64(b.N), "zrange/op")
}

// BenchmarkRevalidate is one re-validation read of 1 000 unchanged sessions,
// as a node does after following new topics and on its sweep: "whole" reads
// every session whole (pipelined HGETALL: how re-validation read before
// ChangedVersions, and still reads the changed ones), "versions" asks which
// changed (ChangedVersions: pipelined HGET of the version). redis-µs/session
// is Redis's own time per session, from INFO commandstats.
func BenchmarkRevalidate(b *testing.B) {
	srv := redistest.Start(b)
	a := newBackend(b, srv)
	const n = 1000
	ids := make([]string, n)
	held := make([]sessionbridge.SessionVersion, n)
	for i := range n {
		s := benchSession(b, a)
		ids[i], held[i] = s.ID, sessionbridge.SessionVersion{ID: s.ID, Version: s.Version}
	}
	run := func(b *testing.B, cmd string, read func() error) {
		before := commandUsec(b, srv, cmd)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if err := read(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(commandUsec(b, srv, cmd)-before)/float64(b.N*n), "redis-µs/session")
	}
	b.Run("whole", func(b *testing.B) {
		run(b, "hgetall", func() error {
			m, err := a.Store().GetMany(bg, ids)
			if err == nil && len(m) != n {
				err = fmt.Errorf("read %d sessions, want %d", len(m), n)
			}
			return err
		})
	})
	b.Run("versions", func(b *testing.B) {
		run(b, "hget", func() error {
			changed, err := a.Store().ChangedVersions(bg, held)
			if err == nil && len(changed) != 0 {
				err = fmt.Errorf("%d changed, want none", len(changed))
			}
			return err
		})
	})
}

// commandUsec returns the microseconds srv spent in cmd (lower case) since
// its start, from INFO commandstats.
func commandUsec(b *testing.B, srv *redistest.Server, cmd string) int64 {
	b.Helper()
	info, _ := srv.MustDo("INFO", "commandstats").(string)
	for line := range strings.Lines(info) {
		rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":")
		if !ok {
			continue
		}
		for f := range strings.SplitSeq(strings.TrimSpace(rest), ",") {
			if v, ok := strings.CutPrefix(f, "usec="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					b.Fatalf("INFO commandstats line %q: %v", line, err)
				}
				return n
			}
		}
	}
	return 0
}
