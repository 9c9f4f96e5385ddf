package gateway

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"sync"
	"testing"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/usage"
)

// countingSink is a usage store that counts its writes.
type countingSink struct {
	*usage.Memory
	mu     sync.Mutex
	writes int
}

func (s *countingSink) Write(ctx context.Context, at time.Time, entries []usage.Entry) error {
	s.mu.Lock()
	s.writes++
	s.mu.Unlock()
	return s.Memory.Write(ctx, at, entries)
}

func (s *countingSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

// usageEnv is a gateway whose usage goes to a memory store, on the env's
// fake clock.
type usageEnv struct {
	*env
	rec  *usage.Recorder
	sink *countingSink
}

func newUsageEnv(t *testing.T, tweak func(*Config)) *usageEnv {
	t.Helper()
	u := &usageEnv{}
	u.env = newEnv(t, func(c *Config) {
		// c.Now is the env's fake clock: the store and the Recorder read
		// the time the gateway decides with.
		u.sink = &countingSink{Memory: &usage.Memory{Now: c.Now}}
		u.rec = usage.NewRecorder(u.sink, usage.RecorderOptions{Now: c.Now})
		c.Usage = u.rec
		if tweak != nil {
			tweak(c)
		}
	})
	return u
}

// hour returns the subject's counts in the current hour bucket.
func (u *usageEnv) hour(s usage.Subject) map[string]int64 {
	u.t.Helper()
	now := u.clock.Now()
	pts, err := u.sink.Series(context.Background(), s, now, now, usage.Hour)
	if err != nil {
		u.t.Fatal(err)
	}
	return pts[0].Counts
}

// flushUntil flushes until the subject's hour bucket holds want (the
// writer counts a frame just after the client may have read it).
func (u *usageEnv) flushUntil(s usage.Subject, want map[string]int64) {
	u.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := u.rec.Flush(context.Background()); err != nil {
			u.t.Fatal(err)
		}
		got := u.hour(s)
		ok := true
		for m, n := range want {
			if got[m] != n {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			u.t.Fatalf("usage of %v = %v, want %v", s, got, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func userSubject(id string) usage.Subject { return usage.Subject{Kind: usage.KindUser, ID: id} }
func keySubject(id string) usage.Subject  { return usage.Subject{Kind: usage.KindKey, ID: id} }

// A session socket counts for its user; a key socket for its key and its
// owner: connects, frames and bytes both ways, error frames by code, peaks.
func TestUsagePerUserAndKey(t *testing.T) {
	u := newUsageEnv(t, nil)
	_, tok := u.session("alice")
	key, keyID := u.key("alice", 0, "ws:connect", "ping")

	sc, sw := u.dial(bearer(tok), "")
	kc, kw := u.dial(bearer(key), "")
	var inUser, inKey int64
	send := func(c *client, typ, id string) int64 {
		b := fmt.Appendf(nil, `{"type":%q,"id":%q}`, typ, id)
		c.sendRaw(b)
		return int64(len(b))
	}
	for i := range 3 {
		inUser += send(sc, TypePing, fmt.Sprint(i))
		sc.readType(TypePong)
	}
	for i := range 2 {
		n := send(kc, TypePing, fmt.Sprint(i))
		inUser, inKey = inUser+n, inKey+n
		kc.readType(TypePong)
	}
	// Not in the key's scopes: error forbidden, counted as forbidden too.
	n := send(kc, TypeSessionGet, "x")
	inUser, inKey = inUser+n, inKey+n
	if d := errorOf(t, kc.read()); d.Code != CodeForbidden {
		t.Fatalf("error %q, want forbidden", d.Code)
	}
	n = send(kc, "no.such", "y")
	inUser, inKey = inUser+n, inKey+n
	if d := errorOf(t, kc.read()); d.Code != CodeForbidden {
		t.Fatalf("error %q, want forbidden", d.Code)
	}
	_ = sw
	_ = kw

	u.flushUntil(keySubject(keyID), map[string]int64{
		usage.Connects: 1, usage.FramesIn: 4, usage.BytesIn: inKey,
		usage.FramesOut:            1 + 2 + 2, // welcome, two pongs, two errors
		usage.Error(CodeForbidden): 2, usage.Forbidden: 2, usage.PeakConnections: 1,
	})
	u.flushUntil(userSubject("alice"), map[string]int64{
		usage.Connects: 2, usage.FramesIn: 3 + 4, usage.BytesIn: inUser,
		usage.FramesOut: 4 + 5, usage.Error(CodeForbidden): 2, usage.PeakConnections: 2,
	})
	got := u.hour(userSubject("alice"))
	if got[usage.BytesOut] <= 0 || got[usage.BytesOut] <= u.hour(keySubject(keyID))[usage.BytesOut] {
		t.Fatalf("bytes out: user %d, key %d", got[usage.BytesOut], u.hour(keySubject(keyID))[usage.BytesOut])
	}
	if tot := u.rec.Totals(usage.KindUser); tot[usage.FramesIn] != 7 || tot[usage.Connects] != 2 {
		t.Fatalf("totals %v", tot)
	}
}

// Refused upgrades of a verified principal count by reason; refusals
// before a credential is verified count for nobody.
func TestUsageRefusals(t *testing.T) {
	u := newUsageEnv(t, func(c *Config) {
		c.MaxConnsPerUser = 1
		// Every dial comes from 127.0.0.1: alice's connect takes the IP's
		// one attempt a minute, so carol's is refused rate_limited (alice's
		// second is refused by the socket cap first, before any charge).
		c.Limits = RateLimits{Defaults: sb.Limits{ConnectsPerMinute: 1}}
	})
	_, tok := u.session("alice")
	u.dial(bearer(tok), "")
	refused := func(h http.Header, status int) {
		t.Helper()
		_, resp, err := u.tryDial(h, "")
		if err == nil || resp == nil || resp.StatusCode != status {
			t.Fatalf("dial: %v, want %d", err, status)
		}
	}
	refused(bearer(tok), http.StatusTooManyRequests)
	noConnect, keyID := u.key("bob", 0, "chat.**")
	refused(bearer(noConnect), http.StatusForbidden)
	_, carol := u.session("carol")
	refused(bearer(carol), http.StatusTooManyRequests)
	refused(bearer("not-a-token"), http.StatusUnauthorized)

	u.flushUntil(userSubject("alice"), map[string]int64{usage.Connects: 1, usage.Refused("too_many_connections"): 1})
	u.flushUntil(keySubject(keyID), map[string]int64{usage.Refused("forbidden"): 1, usage.Forbidden: 1, usage.Connects: 0})
	u.flushUntil(userSubject("bob"), map[string]int64{usage.Refused("forbidden"): 1})
	u.flushUntil(userSubject("carol"), map[string]int64{usage.Refused("rate_limited"): 1, usage.RateLimited: 1})
	tot := u.rec.Totals(usage.KindUser)
	for m := range tot {
		if m == usage.Refused("unauthorized") {
			t.Fatal("an unverified credential's refusal was counted")
		}
	}
	if tot[usage.BytesOut] <= 0 {
		t.Fatalf("the welcome's bytes were not counted: %v", tot)
	}
	delete(tot, usage.BytesOut)
	want := map[string]int64{usage.Connects: 1, usage.FramesOut: 1, usage.Refused("too_many_connections"): 1, usage.Refused("forbidden"): 1,
		usage.Forbidden: 1, usage.Refused("rate_limited"): 1, usage.RateLimited: 1}
	if !maps.Equal(tot, want) {
		t.Fatalf("user totals %v, want %v", tot, want)
	}
}

// Peaks are the most sockets at once; connected seconds are the sockets'
// time open, handed over when the user's last socket closes (and at the
// start of every hour), whole seconds in all.
func TestUsagePeaksAndConnectedSeconds(t *testing.T) {
	u := newUsageEnv(t, nil)
	_, tok := u.session("alice")
	a, _ := u.dial(bearer(tok), "")
	b, _ := u.dial(bearer(tok), "")
	c, _ := u.dial(bearer(tok), "")
	_ = a.ws.Close()
	alice := userSubject("alice")
	// The close is handed to the Recorder after the registry forgets the
	// socket: wait for the Recorder, or the clock below would move first.
	waitFor(t, "the close", func() bool { return u.rec.Live(alice) == 2 })
	u.flushUntil(alice, map[string]int64{usage.PeakConnections: 3, usage.Connects: 3, usage.ConnectedSeconds: 0})

	// A minute and a half later, within the hour, nothing is handed over.
	u.clock.Advance(90 * time.Second)
	if err := u.rec.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := u.hour(alice)[usage.ConnectedSeconds]; got != 0 {
		t.Fatalf("connected seconds after 90 s = %d, want 0 until the hour ends or the sockets close", got)
	}
	// Closing the last two hands over their time: 2 × 100.5 s.
	u.clock.Advance(10500 * time.Millisecond)
	_ = b.ws.Close()
	_ = c.ws.Close()
	waitFor(t, "the closes", func() bool { return u.rec.Live(alice) == 0 })
	u.flushUntil(alice, map[string]int64{usage.ConnectedSeconds: 201, usage.PeakConnections: 3})
	minute := u.clock.Now()
	pts, err := u.sink.Series(context.Background(), alice, minute, minute, usage.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if pts[0].Counts[usage.PeakConnections] != 2 {
		t.Fatalf("peak of the second minute = %d, want the steady 2", pts[0].Counts[usage.PeakConnections])
	}
}

// One flush is one write whatever the traffic, and a flush with nothing new
// writes nothing.
func TestUsageOneWritePerFlush(t *testing.T) {
	u := newUsageEnv(t, nil)
	_, tok := u.session("alice")
	var clients []*client
	for range 4 {
		c, _ := u.dial(bearer(tok), "")
		clients = append(clients, c)
	}
	for i := range 25 {
		for _, c := range clients {
			c.send(TypePing, fmt.Sprint(i), nil)
			c.readType(TypePong)
		}
	}
	u.flushUntil(userSubject("alice"), map[string]int64{usage.FramesIn: 100, usage.FramesOut: 104})
	before := u.sink.count()
	if err := u.rec.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if u.sink.count() != before {
		t.Fatalf("an idle flush within the minute wrote (%d writes, was %d)", u.sink.count(), before)
	}
	clients[0].send(TypePing, "last", nil)
	clients[0].readType(TypePong)
	u.flushUntil(userSubject("alice"), map[string]int64{usage.FramesIn: 101, usage.FramesOut: 105})
	if got := u.sink.count() - before; got < 1 {
		t.Fatalf("%d writes for the last frame", got)
	}
}

// The per-frame counting allocates nothing.
func TestUsageCountingDoesNotAllocate(t *testing.T) {
	c := &Conn{counting: true}
	allocs := testing.AllocsPerRun(1000, func() {
		c.countIn(42)
		c.countOut(42)
		c.countError(CodeRateLimited)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame", allocs)
	}
	var buf [16]usage.Delta
	d := c.use.take(buf[:0])
	want := map[string]int64{usage.FramesIn: 1001, usage.BytesIn: 42042, usage.FramesOut: 1001, usage.BytesOut: 42042,
		usage.Error(CodeRateLimited): 1001, usage.RateLimited: 1001}
	got := map[string]int64{}
	for _, x := range d {
		got[x.Metric] += x.N
	}
	if !maps.Equal(got, want) {
		t.Fatalf("took %v, want %v", got, want)
	}
}

func BenchmarkUsageCountFrame(b *testing.B) {
	c := &Conn{counting: true}
	b.ReportAllocs()
	for b.Loop() {
		c.countIn(64)
		c.countOut(64)
	}
}
