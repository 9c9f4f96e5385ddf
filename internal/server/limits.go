package server

import (
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/sessionbridge/sessionbridge/gateway"
	"github.com/sessionbridge/sessionbridge/httpapi"
	"github.com/sessionbridge/sessionbridge/limit"
	"github.com/sessionbridge/sessionbridge/metrics"
)

// CheckLimits refuses rate limits that make no sense: negative rules,
// dry-run names that are no rule, negative request rates. New calls it; the
// CLI calls it first to answer with a usage error.
func CheckLimits(cfg Config) error {
	if err := cfg.Limits.Validate(); err != nil {
		return fmt.Errorf("server: rate limits: %w", err)
	}
	if cfg.LoginPerMinute < 0 || cfg.AdminPerMinute < 0 {
		return errors.New("server: rate limits: the login and admin request rates must not be negative")
	}
	return nil
}

// rateLimits are the limiters of the gateway and of the HTTP API.
type rateLimits struct {
	gateway  gateway.RateLimits
	requests *httpapi.RequestLimits
}

// newRateLimits builds the limiters on the backend's: with Redis, exact for
// the cluster and, while Redis is away, this node's share of each limit
// (the limit divided by the live nodes), counted and logged at most once
// per second.
func newRateLimits(cfg Config, b backend, m *metrics.Metrics, logger *slog.Logger) rateLimits {
	limiter, conns := b.Limiter, b.Conns
	leaser := &limit.Leaser{Shared: b.Limiter, Nodes: b.Nodes}
	if b.Nodes != nil {
		var last atomic.Int64
		onFallback := func(rule string, err error) {
			m.RateLimited(rule, "fallback")
			now := time.Now().UnixNano()
			if prev := last.Load(); now-prev >= int64(time.Second) && last.CompareAndSwap(prev, now) {
				logger.Warn("rate limits decided locally while the shared store is away", "rule", rule, "nodes", b.Nodes(), "err", err)
			}
		}
		limiter = &limit.Fallback{Shared: b.Limiter, Nodes: b.Nodes, OnFallback: onFallback}
		conns = &limit.FallbackCounter{Shared: b.Conns, Nodes: b.Nodes, OnFallback: onFallback}
	}
	return rateLimits{
		gateway: gateway.RateLimits{Defaults: cfg.Limits, Limiter: limiter, Conns: conns, Leaser: leaser},
		requests: &httpapi.RequestLimits{
			Limiter: limiter, LoginPerMinute: cfg.LoginPerMinute, AdminPerMinute: cfg.AdminPerMinute, Metrics: m,
		},
	}
}
