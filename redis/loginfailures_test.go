package redis

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
	"github.com/sessionbridge/sessionbridge/limit"
)

func TestLoginFailures(t *testing.T) {
	t.Run("standalone", func(t *testing.T) { testLoginFailures(t, redistest.Start(t)) })
	t.Run("cluster", func(t *testing.T) { testLoginFailures(t, redistest.StartCluster(t)) })
}

func testLoginFailures(t *testing.T, srv *redistest.Server) {
	ctx := context.Background()
	b := newBackend(t, srv)
	reserve := func(f *LoginFailures, keys ...string) (limit.Reservation, time.Duration, bool) {
		t.Helper()
		r, wait, ok, err := f.Reserve(ctx, keys...)
		if err != nil {
			t.Fatalf("Reserve(%v): %v", keys, err)
		}
		return r, wait, ok
	}

	t.Run("max and refund", func(t *testing.T) {
		f := b.LoginFailures(3, time.Hour)
		var held []limit.Reservation
		for i := range 3 {
			r, _, ok := reserve(f, "ip:a", "user:x")
			if !ok {
				t.Fatalf("attempt %d refused", i)
			}
			held = append(held, r)
		}
		_, wait, ok := reserve(f, "ip:b", "user:x")
		if ok || wait <= 59*time.Minute || wait > time.Hour {
			t.Fatalf("fourth attempt: ok=%v wait=%v, want refused for about an hour", ok, wait)
		}
		// The refused attempt counted nothing under ip:b, even where keys
		// are reserved one by one.
		for range 3 {
			if _, _, ok := reserve(f, "ip:b"); !ok {
				t.Fatal("a refused attempt was counted under its other key")
			}
		}
		if _, _, ok := reserve(f, "ip:b"); ok {
			t.Fatal("ip:b passed its limit")
		}
		// A refund makes room for one more; refunding twice, no more.
		held[0].Refund(ctx)
		held[0].Refund(ctx)
		if _, _, ok := reserve(f, "ip:a", "user:x"); !ok {
			t.Fatal("refused after a refund")
		}
		if _, _, ok := reserve(f, "ip:a", "user:y"); ok {
			t.Fatal("a double refund gave back two attempts")
		}
	})

	t.Run("reset", func(t *testing.T) {
		f := b.LoginFailures(2, time.Hour)
		for range 2 {
			reserve(f, "ip:c", "user:z")
		}
		if err := f.Reset(ctx, "user:z"); err != nil {
			t.Fatal(err)
		}
		if _, _, ok := reserve(f, "ip:d", "user:z"); !ok {
			t.Fatal("refused after a reset")
		}
		if _, _, ok := reserve(f, "ip:c"); ok {
			t.Fatal("a reset of the user cleared the address")
		}
	})

	t.Run("window", func(t *testing.T) {
		f := b.LoginFailures(1, 300*time.Millisecond)
		old, _, ok := reserve(f, "ip:w")
		if !ok {
			t.Fatal("first attempt refused")
		}
		if _, _, ok := reserve(f, "ip:w"); ok {
			t.Fatal("second attempt in the window admitted")
		}
		var fresh limit.Reservation
		eventually(t, 5*time.Second, "a new window", func() bool {
			r, _, ok := reserve(f, "ip:w")
			fresh = r
			return ok
		})
		// The old window's refund leaves the new window's count alone.
		old.Refund(ctx)
		if _, _, ok := reserve(f, "ip:w"); ok {
			t.Fatal("a refund from an old window raised the new window's limit")
		}
		fresh.Refund(ctx)
	})

	t.Run("no raw key in Redis", func(t *testing.T) {
		f := b.LoginFailures(5, time.Hour)
		reserve(f, "ip:203.0.113.9", "user:hunter2-secret")
		c := b.Client()
		for _, key := range []string{"ip:203.0.113.9", "user:hunter2-secret"} {
			k := f.failureKey(key)
			if !strings.HasPrefix(k, b.prefix+"lf:{") || strings.Contains(k, "hunter2") || strings.Contains(k, "203.0.113") {
				t.Fatalf("failure key %q names its subject", k)
			}
			n, err := c.Do(ctx, c.B().Hget().Key(k).Field("n").Build()).AsInt64()
			if err != nil || n != 1 {
				t.Fatalf("count under %q: %d, %v; want 1", k, n, err)
			}
		}
	})

	t.Run("concurrency", func(t *testing.T) {
		// Two nodes on one Redis: 40 attempts at once, exactly max pass.
		f1 := b.LoginFailures(10, time.Hour)
		f2 := newBackend(t, srv, func(o *Options) { o.Prefix = b.prefix }).LoginFailures(10, time.Hour)
		var admitted atomic.Int32
		var wg sync.WaitGroup
		for i := range 40 {
			f := f1
			if i%2 == 1 {
				f = f2
			}
			wg.Go(func() {
				_, _, ok, err := f.Reserve(ctx, "ip:e", "user:crowd")
				if err != nil {
					t.Error(err)
				}
				if ok {
					admitted.Add(1)
				}
			})
		}
		wg.Wait()
		if n := admitted.Load(); n != 10 {
			t.Fatalf("%d of 40 concurrent attempts admitted, want exactly 10", n)
		}
	})
}

// TestLoginFailuresRedisAway: with Redis gone, Reserve reports the store
// unavailable instead of admitting the attempt.
func TestLoginFailuresRedisAway(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv, func(o *Options) { o.Timeout = 300 * time.Millisecond })
	f := b.LoginFailures(10, time.Hour)
	srv.Stop()
	r, _, ok, err := f.Reserve(context.Background(), "ip:a", "user:x")
	if ok || r != nil || err == nil {
		t.Fatalf("Reserve with Redis away: ok=%v r=%v err=%v", ok, r, err)
	}
	if !errors.Is(err, sessionbridge.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want unavailable", err)
	}
}
