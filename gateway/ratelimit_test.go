package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/keys"
	"github.com/sessionbridge/sessionbridge/memory"
)

// withLimits returns a Config tweak that sets the default rules.
func withLimits(l sb.Limits) func(*Config) {
	return func(c *Config) { c.Limits.Defaults = l }
}

// limitedKey issues an API key of user with its own limits.
func (e *env) limitedKey(user string, l sb.Limits) (string, string) {
	e.t.Helper()
	key, k, err := e.keys.Create(context.Background(), keys.NewKey{UserID: user, Name: "limited", Scopes: []string{"**"}, Limits: l})
	if err != nil {
		e.t.Fatal(err)
	}
	return key, k.ID
}

// refused429 dials with h and checks a 429 refusal with code and rule in its
// body and the rate limit headers; it returns the response's headers.
func refused429(t *testing.T, e *env, h http.Header, code, rule string) http.Header {
	t.Helper()
	c, resp, err := e.tryDial(h, "")
	if err == nil {
		_ = c.ws.Close()
		t.Fatalf("upgrade accepted, want 429 %s by %s", code, rule)
	}
	if resp == nil {
		t.Fatalf("no response: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body struct{ Error, Message, Rule string }
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	if resp.StatusCode != http.StatusTooManyRequests || body.Error != code || body.Rule != rule || body.Message == "" {
		t.Fatalf("got %d %+v, want 429 %s by %s", resp.StatusCode, body, code, rule)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	return resp.Header
}

func TestConnectsPerMinute(t *testing.T) {
	e := newEnv(t, withLimits(sb.Limits{ConnectsPerMinute: 2}))
	_, tok := e.session("alice")
	for range 2 {
		c, _ := e.dial(bearer(tok), "")
		_ = c.ws.Close()
	}
	h := refused429(t, e, bearer(tok), "rate_limited", sb.RuleConnectsPerMinute)
	// 2 a minute: the next attempt passes in 30 s.
	if got := h.Get("Retry-After"); got != "30" {
		t.Fatalf("Retry-After %q, want 30", got)
	}
	if got := h.Get("RateLimit-Policy"); got != `"connects_per_minute";q=2;w=60` {
		t.Fatalf("RateLimit-Policy %q", got)
	}
	if got := h.Get("RateLimit"); got != `"connects_per_minute";r=0;t=30` {
		t.Fatalf("RateLimit %q", got)
	}
	if got := e.counter("sessionbridge_rate_limited_total", map[string]string{"rule": sb.RuleConnectsPerMinute, "result": "refused"}); got != 1 {
		t.Fatalf("refusals counted: %v", got)
	}
	if got := e.counter("sessionbridge_connects_total", map[string]string{"result": "rate_limited"}); got != 1 {
		t.Fatalf("connects counted: %v", got)
	}
	// The refusals cost nothing: half a minute later exactly one passes.
	for range 5 {
		refused429(t, e, bearer(tok), "rate_limited", sb.RuleConnectsPerMinute)
	}
	e.clock.Advance(30 * time.Second)
	e.dial(bearer(tok), "")
	refused429(t, e, bearer(tok), "rate_limited", sb.RuleConnectsPerMinute)
}

// The IP is a subject of its own: another user from the same address
// shares its allowance.
func TestConnectsPerMinuteByIP(t *testing.T) {
	e := newEnv(t, withLimits(sb.Limits{ConnectsPerMinute: 1}))
	_, alice := e.session("alice")
	_, bob := e.session("bob")
	e.dial(bearer(alice), "")
	refused429(t, e, bearer(bob), "rate_limited", sb.RuleConnectsPerMinute)
}

// Attempts refused before the limits (bad credentials) or by another rule
// (max_connections) are not charged.
func TestRefusedAttemptsAreNotCharged(t *testing.T) {
	e := newEnv(t, withLimits(sb.Limits{ConnectsPerMinute: 2, MaxConnections: 1}))
	for range 5 {
		expectRefusal(t, e, bearer("not-a-token"), "", http.StatusUnauthorized, "unauthorized")
	}
	_, tok := e.session("alice")
	first, _ := e.dial(bearer(tok), "")
	for range 5 {
		refused429(t, e, bearer(tok), "too_many_connections", sb.RuleMaxConnections)
	}
	_ = first.ws.Close()
	waitFor(t, "the first socket gone", func() bool { return e.g.Len() == 0 })
	// The second of two attempts a minute is still there.
	e.dial(bearer(tok), "")
}

func TestMaxConnections(t *testing.T) {
	e := newEnv(t, withLimits(sb.Limits{MaxConnections: 2}))
	_, tok1 := e.session("alice")
	_, tok2 := e.session("alice")
	_, bob := e.session("bob")
	a, _ := e.dial(bearer(tok1), "")
	e.dial(bearer(tok2), "")
	h := refused429(t, e, bearer(tok1), "too_many_connections", sb.RuleMaxConnections)
	if got := h.Get("RateLimit-Policy"); got != `"max_connections";q=2` {
		t.Fatalf("RateLimit-Policy %q", got)
	}
	if got := h.Get("RateLimit"); got != `"max_connections";r=0` {
		t.Fatalf("RateLimit %q", got)
	}
	e.dial(bearer(bob), "")
	_ = a.ws.Close()
	waitFor(t, "a slot freed", func() bool { return e.g.Len() == 2 })
	e.dial(bearer(tok1), "")
}

// A key's own limits override the defaults for its connections; the key is
// a subject of its own beside its user.
func TestKeyLimitsOverrideDefaults(t *testing.T) {
	e := newEnv(t, withLimits(sb.Limits{MaxConnections: 1}))
	key, _ := e.limitedKey("alice", sb.Limits{MaxConnections: 3})
	for range 3 {
		e.dial(bearer(key), "")
	}
	refused429(t, e, bearer(key), "too_many_connections", sb.RuleMaxConnections)
	// Another key of the same user gets the default, and the user holds
	// three already.
	other, _ := e.limitedKey("alice", sb.Limits{})
	refused429(t, e, bearer(other), "too_many_connections", sb.RuleMaxConnections)
}

func TestDryRunCountsWithoutRefusing(t *testing.T) {
	e := newEnv(t, withLimits(sb.Limits{ConnectsPerMinute: 1, FramesPerSecond: 1, DryRun: []string{sb.RuleConnectsPerMinute, sb.RuleFramesPerSecond}}))
	_, tok := e.session("alice")
	var c *client
	for range 3 {
		c, _ = e.dial(bearer(tok), "")
	}
	if got := e.counter("sessionbridge_rate_limited_total", map[string]string{"rule": sb.RuleConnectsPerMinute, "result": "dry_run"}); got != 2 {
		t.Fatalf("dry-run refusals of connects counted: %v, want 2", got)
	}
	for i := range 5 {
		c.send(TypePing, fmt.Sprint(i), nil)
		if f := c.read(); f.Type != TypePong {
			t.Fatalf("ping %d: %+v", i, f)
		}
	}
	// A burst of 2, then 3 would-be refusals.
	if got := e.counter("sessionbridge_rate_limited_total", map[string]string{"rule": sb.RuleFramesPerSecond, "result": "dry_run"}); got != 3 {
		t.Fatalf("dry-run refusals of frames counted: %v, want 3", got)
	}
	if got := e.counter("sessionbridge_rate_limited_total", map[string]string{"rule": sb.RuleFramesPerSecond, "result": "refused"}); got != 0 {
		t.Fatalf("enforced refusals: %v", got)
	}
	if !strings.Contains(e.logs.String(), "rate limit dry run") {
		t.Fatal("no dry-run log line")
	}
}

// expectLimited reads a rate_limited error for frame id refused by rule.
func expectLimited(t *testing.T, c *client, id, rule string) {
	t.Helper()
	f := c.read()
	d := errorOf(t, f)
	if d.Code != CodeRateLimited || f.ID != id || d.Rule != rule || d.RetryAfterMS <= 0 {
		t.Fatalf("frame %s: %+v %s, want rate_limited by %s with retry_after_ms", id, f, f.Data, rule)
	}
}

func TestFramesPerSecond(t *testing.T) {
	e := newEnv(t, withLimits(sb.Limits{FramesPerSecond: 1}))
	_, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	// A rate of 1 admits a burst of 2.
	for i := range 2 {
		c.send(TypePing, fmt.Sprint(i), nil)
		if f := c.read(); f.Type != TypePong {
			t.Fatalf("frame %d within the burst: %+v", i, f)
		}
	}
	c.send(TypePing, "over", nil)
	expectLimited(t, c, "over", sb.RuleFramesPerSecond)
	e.clock.Advance(time.Second) // one frame back
	c.send(TypePing, "again", nil)
	if f := c.read(); f.Type != TypePong {
		t.Fatalf("after a second: %+v", f)
	}
	if got := e.counter("sessionbridge_rate_limited_total", map[string]string{"rule": sb.RuleFramesPerSecond, "result": "refused"}); got != 1 {
		t.Fatalf("refusals counted: %v", got)
	}
	// A client that keeps pushing is closed.
	for range maxRefusedFrames + 1 {
		c.send(TypePing, "", nil)
	}
	c.expectClose(CloseRateLimited, ReasonRateLimited)
}

func TestBytesPerSecond(t *testing.T) {
	e := newEnv(t, withLimits(sb.Limits{BytesPerSecond: 100}))
	_, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	frame := func(id string) []byte {
		// 90 bytes each: two fit the burst of 200, a third does not.
		b := fmt.Appendf(nil, `{"type":"ping","id":%q,"data":{"pad":"%s"}}`, id, strings.Repeat("x", 90-42))
		if len(b) != 90 {
			t.Fatalf("frame of %d bytes", len(b))
		}
		return b
	}
	for _, id := range []string{"a", "b"} {
		c.sendRaw(frame(id))
		if f := c.read(); f.Type != TypePong {
			t.Fatalf("frame %s: %+v", id, f)
		}
	}
	c.sendRaw(frame("c"))
	expectLimited(t, c, "c", sb.RuleBytesPerSecond)
	// A small frame passes where the large one did not.
	e.clock.Advance(200 * time.Millisecond)
	c.send(TypePing, "d", nil)
	if f := c.read(); f.Type != TypePong {
		t.Fatalf("small frame: %+v", f)
	}
}

// The user and key frame rules are shared by all the connections of the
// user or key.
func TestUserAndKeyFrameRules(t *testing.T) {
	t.Run("user", func(t *testing.T) {
		e := newEnv(t, withLimits(sb.Limits{UserFramesPerSecond: 1}))
		_, tok1 := e.session("alice")
		_, tok2 := e.session("alice")
		a, _ := e.dial(bearer(tok1), "")
		b, _ := e.dial(bearer(tok2), "")
		a.send(TypePing, "1", nil)
		a.read()
		b.send(TypePing, "2", nil)
		b.read()
		a.send(TypePing, "3", nil)
		expectLimited(t, a, "3", sb.RuleUserFramesPerSecond)
		b.send(TypePing, "4", nil)
		expectLimited(t, b, "4", sb.RuleUserFramesPerSecond)
		// Another user is not affected.
		_, bob := e.session("bob")
		c, _ := e.dial(bearer(bob), "")
		c.send(TypePing, "5", nil)
		if f := c.read(); f.Type != TypePong {
			t.Fatalf("bob: %+v", f)
		}
	})
	t.Run("key", func(t *testing.T) {
		e := newEnv(t, nil)
		key, _ := e.limitedKey("alice", sb.Limits{KeyFramesPerSecond: 2})
		a, _ := e.dial(bearer(key), "")
		b, _ := e.dial(bearer(key), "")
		for i := range 4 {
			c := a
			if i%2 == 1 {
				c = b
			}
			c.send(TypePing, fmt.Sprint(i), nil)
			if f := c.read(); f.Type != TypePong {
				t.Fatalf("frame %d of a burst of 4: %+v", i, f)
			}
		}
		a.send(TypePing, "over", nil)
		expectLimited(t, a, "over", sb.RuleKeyFramesPerSecond)
		// The same user without the key is not held by the key's rule.
		_, tok := e.session("alice")
		c, _ := e.dial(bearer(tok), "")
		c.send(TypePing, "s", nil)
		if f := c.read(); f.Type != TypePong {
			t.Fatalf("session of the key's user: %+v", f)
		}
	})
}

func TestInvalidDefaultLimitsAreRefused(t *testing.T) {
	for _, l := range []sb.Limits{
		{FramesPerSecond: -1},
		{DryRun: []string{"frames_per_minute"}},
	} {
		bus := memory.NewBus()
		_, err := New(Config{Manager: newManager(t, sb.Backend{Store: memory.NewStore(bus), Bus: bus}), Limits: RateLimits{Defaults: l}})
		if !errors.Is(err, sb.ErrInvalidLimits) {
			t.Fatalf("limits %+v: New said %v", l, err)
		}
	}
}

// Changing a key's limit keeps what the key used: the new rate applies to
// the same state, no fresh burst.
func TestKeyLimitChangeKeepsState(t *testing.T) {
	e := newEnv(t, nil)
	key, id := e.limitedKey("alice", sb.Limits{ConnectsPerMinute: 2})
	for range 2 {
		e.dial(bearer(key), "")
	}
	refused429(t, e, bearer(key), "rate_limited", sb.RuleConnectsPerMinute)
	raised := sb.Limits{ConnectsPerMinute: 4}
	if _, err := e.keys.Update(context.Background(), id, keys.Change{Limits: &raised}, 0); err != nil {
		t.Fatal(err)
	}
	// Two attempts used a minute's worth at 2 a minute: at 4 a minute, no
	// room yet; a fresh state would admit four at once.
	refused429(t, e, bearer(key), "rate_limited", sb.RuleConnectsPerMinute)
	e.clock.Advance(15 * time.Second) // one interval at the new rate
	e.dial(bearer(key), "")
	refused429(t, e, bearer(key), "rate_limited", sb.RuleConnectsPerMinute)
}
