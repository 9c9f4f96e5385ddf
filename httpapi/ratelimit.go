package httpapi

import (
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/sessionbridge/sessionbridge/device"
	"github.com/sessionbridge/sessionbridge/limit"
	"github.com/sessionbridge/sessionbridge/metrics"
)

// Rule names of the request rates, in refusals, headers and metrics.
const (
	RuleLoginPerMinute = "login_per_minute"
	RuleAdminPerMinute = "admin_per_minute"
)

// RequestLimits limit how often one client IP may call POST /auth/login
// and the admin API, with GCRA: a rate of N a minute admits a burst of N.
// A request over its rate is answered 429 rate_limited with Retry-After,
// RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers-09)
// before anything else is done for it: no body read, no credential
// checked. The login rate sits on top of the FailureLimiter, which counts
// failed passwords only.
type RequestLimits struct {
	// Limiter decides; nil means one limit.Memory (exact for one node).
	Limiter limit.Limiter
	// LoginPerMinute and AdminPerMinute are the rates; zero is off.
	LoginPerMinute int
	AdminPerMinute int
	// Metrics counts the refusals by rule.
	Metrics *metrics.Metrics

	local limit.Memory
}

func (l *RequestLimits) limiter() limit.Limiter {
	if l.Limiter != nil {
		return l.Limiter
	}
	return &l.local
}

// limitRequests wraps next in the request rate of rule, n a minute per
// client IP; with n zero (or no limits) it returns next.
func (a *API) limitRequests(rule string, n int, next http.Handler) http.Handler {
	l := a.RequestLimits
	if l == nil || n <= 0 {
		return next
	}
	rate := limit.PerMinute(n)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip := device.ClientIP(r, a.Sessions.TrustedProxies)
		d, err := l.limiter().Allow(r.Context(), limit.Charge{Rule: rule, Subject: "ip:" + ip, Rate: rate})
		if err != nil {
			// Fail closed, as authentication does: these are the doors a
			// guesser knocks at.
			a.logger().LogAttrs(r.Context(), slog.LevelWarn, "request rate limit failed", slog.String("rule", rule), logAttrErr(err))
			w.Header().Set("Retry-After", "1")
			writeError(w, errorf(http.StatusServiceUnavailable, CodeUnavailable, "rate limits cannot be decided now; retry later"))
			return
		}
		if !d.Allowed {
			l.Metrics.RateLimited(rule, "refused")
			secs := max(1, int64((d.RetryAfter+time.Second-1)/time.Second))
			h := w.Header()
			h.Set("Retry-After", strconv.FormatInt(secs, 10))
			h.Set("RateLimit-Policy", fmt.Sprintf("%q;q=%d;w=60", rule, n))
			h.Set("RateLimit", fmt.Sprintf("%q;r=0;t=%d", rule, secs))
			writeError(w, errorf(http.StatusTooManyRequests, CodeRateLimited, "too many requests from this address (at most %d a minute); retry later", n))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *API) loginRate() int {
	if a.RequestLimits == nil {
		return 0
	}
	return a.RequestLimits.LoginPerMinute
}

func (a *API) adminRate() int {
	if a.RequestLimits == nil {
		return 0
	}
	return a.RequestLimits.AdminPerMinute
}
