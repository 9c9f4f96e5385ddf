package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/limit"
	"github.com/sessionbridge/sessionbridge/users"
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
	_ = l.Reset(t.Context(), "user:x")
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
	_ = none.Reset(t.Context(), "k")
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

func TestFailureLimiterReserve(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	l := &FailureLimiter{Max: 3, Window: time.Minute, Now: c.Now}
	var held []limit.Reservation
	for i := range 3 {
		r, _, ok, _ := l.Reserve(t.Context(), "ip:a", "user:x")
		if !ok {
			t.Fatalf("attempt %d refused", i)
		}
		held = append(held, r)
	}
	// The attempts in flight count: a fourth cannot start.
	if _, wait, ok, _ := l.Reserve(t.Context(), "ip:b", "user:x"); ok || wait != time.Minute {
		t.Fatalf("fourth attempt: ok=%v wait=%v, want refused for 1m", ok, wait)
	}
	if _, blocked := l.Blocked("user:x"); !blocked {
		t.Error("Blocked does not see the reserved attempts")
	}
	// A refunded attempt (a success, or one never evaluated) makes room for
	// exactly one more; refunding twice gives back nothing more.
	held[0].Refund(t.Context())
	held[0].Refund(t.Context())
	if _, _, ok, _ := l.Reserve(t.Context(), "ip:a", "user:x"); !ok {
		t.Fatal("refused after a refund")
	}
	if _, _, ok, _ := l.Reserve(t.Context(), "ip:a", "user:y"); ok {
		t.Fatal("a double refund gave back two attempts")
	}
	// A refund after the window passed leaves the new window's count alone.
	c.Advance(time.Minute)
	fresh, _, ok, _ := l.Reserve(t.Context(), "ip:a")
	if !ok {
		t.Fatal("refused in a new window")
	}
	held[1].Refund(t.Context())
	held[2].Refund(t.Context())
	for range 2 {
		if _, _, ok, _ := l.Reserve(t.Context(), "ip:a"); !ok {
			t.Fatal("refused below the limit in the new window")
		}
	}
	if _, _, ok, _ := l.Reserve(t.Context(), "ip:a"); ok {
		t.Fatal("old refunds raised the new window's limit")
	}
	fresh.Refund(t.Context())

	var none *FailureLimiter
	r, _, ok, _ := none.Reserve(t.Context(), "k")
	if !ok {
		t.Error("nil limiter refused")
	}
	r.Refund(t.Context())
}

// gatedUsers is a UserVerifier whose checks wait until the test releases
// them; it counts the checks in flight and the most ever in flight at once.
type gatedUsers struct {
	fakeUsers
	release chan struct{}
	opened  sync.Once

	mu                    sync.Mutex
	inFlight, most, total int
}

// gatedFixture returns a fixture whose users are a gatedUsers; opts adjust
// the API further. The gate opens when the test ends, before the server
// closes, so that no handler is left waiting.
func gatedFixture(t *testing.T, opts func(*API)) (*fixture, *gatedUsers) {
	g := &gatedUsers{fakeUsers: fakeUsers{"alice": "alice-password"}, release: make(chan struct{})}
	f := newFixture(t, func(f *fixture) {
		f.api.Users = g
		opts(f.api)
	})
	t.Cleanup(g.open)
	return f, g
}

// open lets every check through, now and from now on.
func (g *gatedUsers) open() { g.opened.Do(func() { close(g.release) }) }

func (g *gatedUsers) Verify(username, password string) (users.User, bool) {
	g.mu.Lock()
	g.inFlight++
	g.total++
	g.most = max(g.most, g.inFlight)
	g.mu.Unlock()
	<-g.release
	g.mu.Lock()
	g.inFlight--
	g.mu.Unlock()
	return g.fakeUsers.Verify(username, password)
}

func (g *gatedUsers) counts() (inFlight, most, total int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inFlight, g.most, g.total
}

// waitUntil polls cond until it holds, failing the test after 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// loginResult is the answer to one of several concurrent sign-ins.
type loginResult struct {
	status     int
	retryAfter string
	err        error
}

// loginAsync posts a sign-in from a goroutine and delivers its answer on out.
func (f *fixture) loginAsync(username, password string, out chan<- loginResult) {
	go func() {
		body := `{"username":"` + username + `","password":"` + password + `"}`
		resp, err := f.srv.Client().Post(f.srv.URL+"/auth/login", "application/json", strings.NewReader(body))
		if err != nil {
			out <- loginResult{err: err}
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		out <- loginResult{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	}()
}

// TestConcurrentLoginsKeepTheLimit sends 40 bad sign-ins at once, holding
// every password check until all 40 are either in a check or answered: the
// documented limit (10 per IP and per username) holds, the rest get 429.
func TestConcurrentLoginsKeepTheLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		user func(i int) string
	}{
		{"one user", func(int) string { return "alice" }},
		{"one address, many users", func(i int) string { return fmt.Sprint("user", i) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, g := gatedFixture(t, func(a *API) {
				a.LoginLimiter = &FailureLimiter{Window: time.Hour}
				a.LoginConcurrency = 64 // the check slots are not under test here
			})
			const n = 40
			out := make(chan loginResult, n)
			for i := range n {
				f.loginAsync(tc.user(i), "wrong", out)
			}
			var results []loginResult
			waitUntil(t, "every sign-in checked or answered", func() bool {
				for len(out) > 0 {
					results = append(results, <-out)
				}
				inFlight, _, _ := g.counts()
				return inFlight+len(results) >= n
			})
			g.open()
			for len(results) < n {
				results = append(results, <-out)
			}
			count := map[int]int{}
			for _, r := range results {
				if r.err != nil {
					t.Fatal(r.err)
				}
				count[r.status]++
				if r.status == http.StatusTooManyRequests {
					if s, err := strconv.Atoi(r.retryAfter); err != nil || s < 1 {
						t.Errorf("429 with Retry-After %q", r.retryAfter)
					}
				}
			}
			if count[http.StatusUnauthorized] != DefaultMaxFailures || count[http.StatusTooManyRequests] != n-DefaultMaxFailures {
				t.Errorf("answers %v, want %d × 401 and %d × 429", count, DefaultMaxFailures, n-DefaultMaxFailures)
			}
			if _, _, total := g.counts(); total != DefaultMaxFailures {
				t.Errorf("%d passwords checked, want %d", total, DefaultMaxFailures)
			}
		})
	}
}

// TestLoginHashesBounded holds every password check and releases them one
// at a time: no more than LoginConcurrency ever run at once, and the sign-ins
// beyond it wait their turn instead of failing.
func TestLoginHashesBounded(t *testing.T) {
	const limit, n = 3, 12
	f, g := gatedFixture(t, func(a *API) {
		a.LoginLimiter = nil
		a.LoginConcurrency = limit
		a.LoginQueueWait = time.Hour
	})
	out := make(chan loginResult, n)
	for i := range n {
		f.loginAsync(fmt.Sprint("user", i), "wrong", out)
	}
	for done := 0; done < n; done++ {
		want := min(limit, n-done)
		waitUntil(t, fmt.Sprintf("%d checks in flight", want), func() bool {
			inFlight, _, _ := g.counts()
			return inFlight == want
		})
		g.release <- struct{}{}
		if r := <-out; r.err != nil || r.status != http.StatusUnauthorized {
			t.Fatalf("sign-in %d: %+v, want 401", done, r)
		}
	}
	if _, most, total := g.counts(); most != limit || total != n {
		t.Errorf("at most %d checks at once (want %d), %d in all (want %d)", most, limit, total, n)
	}
}

// TestLoginRefusedWhenHashesBusy: a sign-in that finds every check slot busy
// past LoginQueueWait gets 429, and its attempt is not counted as a failure.
func TestLoginRefusedWhenHashesBusy(t *testing.T) {
	f, g := gatedFixture(t, func(a *API) {
		a.LoginLimiter = &FailureLimiter{Max: 2, Window: time.Hour}
		a.LoginConcurrency = 1
		a.LoginQueueWait = time.Millisecond
	})
	held := make(chan loginResult, 1)
	f.loginAsync("alice", "wrong", held)
	waitUntil(t, "the only slot taken", func() bool {
		inFlight, _, _ := g.counts()
		return inFlight == 1
	})
	busy := make(chan loginResult, 1)
	f.loginAsync("bob", "wrong", busy)
	select {
	case r := <-busy:
		if r.err != nil || r.status != http.StatusTooManyRequests || r.retryAfter != "1" {
			t.Fatalf("sign-in while the only slot is taken: %+v, want 429 with Retry-After 1", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a sign-in waited 10s for a slot; LoginQueueWait is 1ms")
	}
	g.open()
	if r := <-held; r.err != nil || r.status != http.StatusUnauthorized {
		t.Fatalf("held sign-in: %+v", r)
	}
	// The address has one failure (alice's); bob's refused attempt was given
	// back, so one more is evaluated before the limit of 2.
	expect(t, f.do(req{method: "POST", path: "/auth/login", body: `{"username":"bob","password":"wrong"}`}), http.StatusUnauthorized)
	expect(t, f.do(req{method: "POST", path: "/auth/login", body: `{"username":"bob","password":"wrong"}`}), http.StatusTooManyRequests)
	if _, _, total := g.counts(); total != 2 {
		t.Errorf("%d passwords checked, want 2", total)
	}
}

// brokenFailures is a limit.Failures whose store is away.
type brokenFailures struct{}

func (brokenFailures) Reserve(context.Context, ...string) (limit.Reservation, time.Duration, bool, error) {
	return nil, 0, false, errors.New("store unreachable")
}
func (brokenFailures) Reset(context.Context, string) error { return errors.New("store unreachable") }

// TestLoginFailsClosedWhenFailuresCannotBeCounted: a sign-in whose attempt
// cannot be counted is refused 503 without checking the password, even the
// right one, so the limit does not fall with its store.
func TestLoginFailsClosedWhenFailuresCannotBeCounted(t *testing.T) {
	f, g := gatedFixture(t, func(a *API) { a.LoginLimiter = brokenFailures{} })
	g.open()
	resp := f.do(req{method: "POST", path: "/auth/login", body: `{"username":"alice","password":"alice-password"}`})
	expect(t, resp, http.StatusServiceUnavailable)
	if code := resp.errorCode(t); code != CodeUnavailable {
		t.Errorf("code %q, want %q", code, CodeUnavailable)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	if resp.cookie("sb_session") != nil {
		t.Error("a sign-in that was not counted set a cookie")
	}
	if _, _, total := g.counts(); total != 0 {
		t.Errorf("%d passwords checked without counting the attempt", total)
	}
}
