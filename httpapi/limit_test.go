package httpapi

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func TestFailureLimiter(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	l := &FailureLimiter{Max: 3, Window: time.Minute, Now: c.Now}
	for i := range 3 {
		if _, blocked := l.Blocked("ip:a", "user:x"); blocked {
			t.Fatalf("blocked after %d failures", i)
		}
		l.Fail("ip:a", "user:x")
		c.Advance(time.Second)
	}
	wait, blocked := l.Blocked("ip:b", "user:x")
	if !blocked || wait != 57*time.Second {
		t.Errorf("user key after 3 failures: blocked=%v wait=%v, want 57s", blocked, wait)
	}
	if _, blocked := l.Blocked("ip:b", "user:y"); blocked {
		t.Error("unrelated keys blocked")
	}
	l.Reset("user:x")
	if _, blocked := l.Blocked("ip:b", "user:x"); blocked {
		t.Error("user key blocked after Reset")
	}
	if _, blocked := l.Blocked("ip:a"); !blocked {
		t.Error("ip key forgot its failures")
	}
	c.Advance(time.Minute)
	if _, blocked := l.Blocked("ip:a"); blocked {
		t.Error("still blocked after the window")
	}

	// Memory stays bounded.
	small := &FailureLimiter{MaxKeys: 10, Now: c.Now}
	for i := range 1000 {
		small.Fail(fmt.Sprint("ip:", i))
	}
	if n := len(small.keys); n > 10 {
		t.Errorf("%d keys kept, want at most 10", n)
	}

	var none *FailureLimiter
	none.Fail("k")
	none.Reset("k")
	if _, blocked := none.Blocked("k"); blocked {
		t.Error("nil limiter blocked")
	}
}

func TestLoginThrottled(t *testing.T) {
	f := newFixture(t, func(f *fixture) { f.api.LoginLimiter = &FailureLimiter{Max: 3, Window: time.Hour} })
	for range 3 {
		expect(t, f.do(req{method: "POST", path: "/auth/login", body: `{"username":"alice","password":"wrong"}`}), http.StatusUnauthorized)
	}
	// Even the right password waits now: the guesser cannot tell.
	resp := f.do(req{method: "POST", path: "/auth/login", body: `{"username":"alice","password":"alice-password"}`})
	expect(t, resp, http.StatusTooManyRequests)
	if code := resp.errorCode(t); code != CodeRateLimited {
		t.Errorf("code %q", code)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 3500 || s > 3601 {
		t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	if resp.cookie("sb_session") != nil {
		t.Error("throttled login set a cookie")
	}

	// A success resets the username's count but not the address's.
	g := newFixture(t, func(f *fixture) { f.api.LoginLimiter = &FailureLimiter{Max: 3, Window: time.Hour} })
	for range 2 {
		expect(t, g.do(req{method: "POST", path: "/auth/login", body: `{"username":"bob","password":"wrong"}`}), http.StatusUnauthorized)
	}
	g.login("bob")
	expect(t, g.do(req{method: "POST", path: "/auth/login", body: `{"username":"carol","password":"wrong"}`}), http.StatusUnauthorized)
	expect(t, g.do(req{method: "POST", path: "/auth/login", body: `{"username":"bob","password":"bob-password"}`}), http.StatusTooManyRequests)
}
