package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/limit"
)

// RateLimits configures the rate limits of the gateway (see
// docs/rate-limits.md): connection attempts and concurrent sockets at the
// upgrade, frames and bytes on every connection.
type RateLimits struct {
	// Defaults are the rules of every principal; an API key's own limits
	// override them rule by rule (sb.Limits.Over) for the connections made
	// with it. A rule that is zero in both is off. New refuses defaults that
	// do not validate.
	Defaults sb.Limits
	// Limiter decides connects_per_minute for the client IP, the user and
	// the API key of an upgrade, all or nothing; nil means one limit.Memory
	// of this gateway (exact for one node). Give every node the Redis
	// limiter (behind limit.Fallback) to be exact across the cluster.
	Limiter limit.Limiter
	// Conns counts max_connections per user and per API key; nil means a
	// limit.LocalCounter (exact for one node).
	Conns limit.Counter
	// Leaser spends key_frames_per_second and user_frames_per_second from
	// tokens leased in bulk; nil means a limit.Leaser over Limiter.
	Leaser *limit.Leaser
}

// Subjects of the rules, prefixed so that no user ID can pass for an IP.
const (
	subjectIP   = "ip:"
	subjectUser = "user:"
	subjectKey  = "key:"
)

// maxRefusedFrames is how many frames in a row a client may send over its
// rate limits before the connection is closed with 4429.
const maxRefusedFrames = 32

// limitLogEvery spaces the log lines of refusals and dry-run refusals.
const limitLogEvery = time.Second

// Dry-run bits of connLimits.dry.
const (
	dryFrames uint8 = 1 << iota
	dryBytes
	dryKeyFrames
	dryUserFrames
)

// frameRules are the frame rules and their dry-run bits.
var frameRules = []struct {
	name string
	bit  uint8
}{
	{sb.RuleFramesPerSecond, dryFrames}, {sb.RuleBytesPerSecond, dryBytes},
	{sb.RuleKeyFramesPerSecond, dryKeyFrames}, {sb.RuleUserFramesPerSecond, dryUserFrames},
}

// rateLimiter holds the gateway's limit machinery, built once by New.
type rateLimiter struct {
	defaults sb.Limits
	limiter  limit.Limiter
	conns    limit.Counter
	leaser   *limit.Leaser
	lastLog  atomic.Int64 // Unix ns of the last refusal log line
}

func newRateLimiter(g *Gateway, cfg RateLimits) (*rateLimiter, error) {
	if err := cfg.Defaults.Validate(); err != nil {
		return nil, fmt.Errorf("gateway: rate limits: %w", err)
	}
	now := func() time.Time { return g.clock.Now() }
	rl := &rateLimiter{defaults: cfg.Defaults, limiter: cfg.Limiter, conns: cfg.Conns, leaser: cfg.Leaser}
	rl.defaults.DryRun = slices.Clone(cfg.Defaults.DryRun)
	if rl.limiter == nil {
		rl.limiter = &limit.Memory{Now: now}
	}
	if rl.conns == nil {
		rl.conns = &limit.LocalCounter{}
	}
	if rl.leaser == nil {
		rl.leaser = &limit.Leaser{Shared: rl.limiter, Now: now}
	}
	return rl, nil
}

// limitsOf returns the rules that apply to p's connections.
func (rl *rateLimiter) limitsOf(p *sb.Principal) sb.Limits {
	if p.Method == sb.AuthAPIKey {
		return p.Limits.Over(rl.defaults)
	}
	return rl.defaults
}

// connLimits is one connection's rate limit state. The read loop alone
// uses the frame state; a frame decision takes no lock of the connection
// and allocates nothing.
type connLimits struct {
	framePace, bytePace limit.Pace
	frames, bytes       limit.Local
	// key and user are the connection's shares of the cluster-wide frame
	// rules, nil when off.
	key, user *limit.Bucket
	// dry has a bit per frame rule in dry run.
	dry uint8
	// refused counts the frames refused in a row.
	refused uint8
	// hold is the connection's max_connections units.
	hold limit.Hold
}

// on reports whether any frame rule applies.
func (l *connLimits) on() bool {
	return l.framePace.On() || l.bytePace.On() || l.key != nil || l.user != nil
}

// release gives back what the connection holds: its max_connections units
// and its shares of the cluster frame rules. Safe to call more than once.
func (l *connLimits) release(ctx context.Context) {
	if l.hold != nil {
		l.hold.Release(ctx)
		l.hold = nil
	}
	if l.key != nil {
		l.key.Release()
		l.key = nil
	}
	if l.user != nil {
		l.user.Release()
		l.user = nil
	}
}

// admit decides the rate limits of an upgrade that passed authentication
// and the node's connection caps: first max_connections (a unit taken,
// given back if anything later refuses), then connects_per_minute (charged
// last, so that an attempt refused by any rule is never charged). It
// returns the connection's limit state, or the refusal.
func (g *Gateway) admit(ctx context.Context, ip string, p *sb.Principal) (connLimits, *refusal) {
	rl := g.rl
	lim := rl.limitsOf(p)
	dry := func(rule string) bool { return slices.Contains(lim.DryRun, rule) }
	var cl connLimits
	if n := lim.MaxConnections; n > 0 {
		slots := []limit.Slot{{Rule: sb.RuleMaxConnections, Subject: subjectUser + p.UserID, Max: n, DryRun: dry(sb.RuleMaxConnections)}}
		if p.KeyID != "" {
			slots = append(slots, limit.Slot{Rule: sb.RuleMaxConnections, Subject: subjectKey + p.KeyID, Max: n, DryRun: slots[0].DryRun})
		}
		d, hold, err := rl.conns.Acquire(ctx, slots...)
		if err != nil {
			g.log.Error("gateway: counting connections", "err", err)
			return cl, &refuseLimits
		}
		g.dryRefused(ctx, d.DryRefused, p)
		if !d.Allowed {
			g.limitRefused(ctx, d.Rule, p)
			rf := refusal{
				status: http.StatusTooManyRequests, code: "too_many_connections", rule: d.Rule,
				msg:    fmt.Sprintf("at most %d live connections", d.Limit),
				result: "too_many_connections", reason: "max_connections", retryAfter: connCapRetry,
				policy: fmt.Sprintf("%q;q=%d", d.Rule, d.Limit), state: fmt.Sprintf("%q;r=0", d.Rule),
			}
			return cl, &rf
		}
		cl.hold = hold
	}
	if n := lim.ConnectsPerMinute; n > 0 {
		rate, isDry := limit.PerMinute(n), dry(sb.RuleConnectsPerMinute)
		charges := []limit.Charge{
			{Rule: sb.RuleConnectsPerMinute, Subject: subjectIP + ip, Rate: rate, DryRun: isDry},
			{Rule: sb.RuleConnectsPerMinute, Subject: subjectUser + p.UserID, Rate: rate, DryRun: isDry},
		}
		if p.KeyID != "" {
			charges = append(charges, limit.Charge{Rule: sb.RuleConnectsPerMinute, Subject: subjectKey + p.KeyID, Rate: rate, DryRun: isDry})
		}
		d, err := rl.limiter.Allow(ctx, charges...)
		if err != nil {
			cl.release(ctx)
			g.log.Error("gateway: deciding connection attempts", "err", err)
			return cl, &refuseLimits
		}
		g.dryRefused(ctx, d.DryRefused, p)
		if !d.Allowed {
			cl.release(ctx)
			g.limitRefused(ctx, d.Rule, p)
			rf := refusal{
				status: http.StatusTooManyRequests, code: "rate_limited", rule: d.Rule,
				msg:    fmt.Sprintf("too many connection attempts (at most %d a minute)", n),
				result: "rate_limited", reason: "connects_per_minute", retryAfter: d.RetryAfter,
				policy: fmt.Sprintf("%q;q=%d;w=60", d.Rule, n), state: fmt.Sprintf("%q;r=0;t=%d", d.Rule, ceilSeconds(d.RetryAfter)),
			}
			return cl, &rf
		}
	}
	cl.framePace = limit.NewPace(lim.FramesPerSecond, time.Second, 2*lim.FramesPerSecond)
	cl.bytePace = limit.NewPace(lim.BytesPerSecond, time.Second, 2*lim.BytesPerSecond)
	for _, r := range frameRules {
		if dry(r.name) {
			cl.dry |= r.bit
		}
	}
	var err error
	if n := lim.KeyFramesPerSecond; n > 0 && p.KeyID != "" {
		cl.key, err = rl.leaser.Bucket(limit.Charge{Rule: sb.RuleKeyFramesPerSecond, Subject: subjectKey + p.KeyID, Rate: frameRate(n)})
	}
	if n := lim.UserFramesPerSecond; n > 0 && err == nil {
		cl.user, err = rl.leaser.Bucket(limit.Charge{Rule: sb.RuleUserFramesPerSecond, Subject: subjectUser + p.UserID, Rate: frameRate(n)})
	}
	if err != nil {
		cl.release(ctx)
		g.log.Error("gateway: frame limits", "err", err)
		return connLimits{}, &refuseLimits
	}
	return cl, nil
}

// frameRate is n frames a second with a burst of 2n, as the per-connection
// frame rule has.
func frameRate(n int) limit.Rate { return limit.Rate{N: n, Period: time.Second, Burst: 2 * n} }

// ceilSeconds rounds d up to whole seconds, at least 1.
func ceilSeconds(d time.Duration) int64 { return max(1, int64((d+time.Second-1)/time.Second)) }

var refuseLimits = refusal{status: http.StatusServiceUnavailable, code: "unavailable", msg: "rate limits cannot be decided now", result: "unavailable", reason: "rate_limits_unavailable", retryAfter: time.Second}

// writeRateLimitHeaders sets the headers of draft-ietf-httpapi-ratelimit-headers-09
// on a refusal that carries them.
func writeRateLimitHeaders(h http.Header, rf refusal) {
	if rf.policy != "" {
		h.Set("RateLimit-Policy", rf.policy)
		h.Set("RateLimit", rf.state)
	}
}

// limitRefused counts an enforced refusal and logs it, at most once per
// limitLogEvery for the gateway.
func (g *Gateway) limitRefused(ctx context.Context, rule string, p *sb.Principal) {
	g.metrics.RateLimited(rule, "refused")
	g.logLimit(ctx, "gateway: rate limited", rule, p.UserID, p.KeyID)
}

// dryRefused counts and logs the dry-run rules that would have refused.
func (g *Gateway) dryRefused(ctx context.Context, rules []string, p *sb.Principal) {
	for i, rule := range rules {
		if slices.Contains(rules[:i], rule) {
			// Counted once per decision, whatever the subjects.
			continue
		}
		g.metrics.RateLimited(rule, "dry_run")
		g.logLimit(ctx, "gateway: rate limit dry run: would refuse", rule, p.UserID, p.KeyID)
	}
}

func (g *Gateway) logLimit(ctx context.Context, msg, rule, userID, keyID string) {
	now := time.Now().UnixNano()
	last := g.rl.lastLog.Load()
	if now-last < int64(limitLogEvery) || !g.rl.lastLog.CompareAndSwap(last, now) {
		return
	}
	g.log.LogAttrs(ctx, slog.LevelInfo, msg, slog.String("rule", rule), slog.String("user_id", userID), slog.String("key_id", keyID))
}

// limitFrame decides the frame rules for one frame of n bytes: the local
// ones (frames_per_second, bytes_per_second) and the leased cluster ones
// (key_frames_per_second, user_frames_per_second), all or nothing. It
// returns the refusing rule and how long until a retry may pass, or "".
// The read loop alone calls it; it allocates nothing.
func (c *Conn) limitFrame(ctx context.Context, n int) (rule string, retry time.Duration) {
	l := &c.lim
	g := c.g
	now := g.clock.Now().UnixNano()
	fNext, ok, wait := l.frames.Check(l.framePace, now, 1)
	if !ok {
		if l.dry&dryFrames == 0 {
			return sb.RuleFramesPerSecond, wait
		}
		c.dryFrame(ctx, sb.RuleFramesPerSecond)
		fNext = -1
	}
	bNext, ok, wait := l.bytes.Check(l.bytePace, now, n)
	if !ok {
		if l.dry&dryBytes == 0 {
			return sb.RuleBytesPerSecond, wait
		}
		c.dryFrame(ctx, sb.RuleBytesPerSecond)
		bNext = -1
	}
	tookKey := false
	if l.key != nil {
		if ok, wait := l.key.Take(ctx); ok {
			tookKey = true
		} else if l.dry&dryKeyFrames == 0 {
			return sb.RuleKeyFramesPerSecond, wait
		} else {
			c.dryFrame(ctx, sb.RuleKeyFramesPerSecond)
		}
	}
	if l.user != nil {
		if ok, wait := l.user.Take(ctx); !ok {
			if l.dry&dryUserFrames == 0 {
				if tookKey {
					l.key.Refund()
				}
				return sb.RuleUserFramesPerSecond, wait
			}
			c.dryFrame(ctx, sb.RuleUserFramesPerSecond)
		}
	}
	if fNext >= 0 {
		l.frames.Commit(fNext)
	}
	if bNext >= 0 {
		l.bytes.Commit(bNext)
	}
	return "", 0
}

func (c *Conn) dryFrame(ctx context.Context, rule string) {
	c.g.metrics.RateLimited(rule, "dry_run")
	c.g.logLimit(ctx, "gateway: rate limit dry run: would refuse", rule, c.p.UserID, c.p.KeyID)
}

// admitFrame applies the frame rules to a frame of data; a refused frame is
// answered with error rate_limited (its rule and retry_after_ms in the
// data), and a connection refused maxRefusedFrames times in a row is
// closed with 4429. It reports whether the frame may be served.
func (c *Conn) admitFrame(ctx context.Context, data []byte) bool {
	l := &c.lim
	if !l.on() {
		return true
	}
	rule, retry := c.limitFrame(ctx, len(data))
	if rule == "" {
		l.refused = 0
		return true
	}
	g := c.g
	g.metrics.Frame("limited", CodeRateLimited)
	g.metrics.RateLimited(rule, "refused")
	if l.refused < 255 {
		l.refused++
	}
	if l.refused > maxRefusedFrames {
		g.logLimit(ctx, "gateway: closing a connection that kept sending past its rate limit", rule, c.p.UserID, c.p.KeyID)
		c.closeWith(CloseRateLimited, ReasonRateLimited)
		return false
	}
	var id string
	if f, err := decodeFrame(data); err == nil {
		id = f.ID
	}
	b, err := encodeFrame(TypeError, id, errorData{
		ID: id, Code: CodeRateLimited, Message: "too many frames: " + rule,
		Rule: rule, RetryAfterMS: max(1, (retry.Milliseconds())),
	})
	if err == nil {
		_ = c.reply(b)
	}
	return false
}
