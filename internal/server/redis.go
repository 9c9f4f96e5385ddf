package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/sessionbridge/sessionbridge/limit"
	"github.com/sessionbridge/sessionbridge/metrics"
	"github.com/sessionbridge/sessionbridge/redis"
)

// newRedisBackend builds the cluster backend: the node's store, bus,
// tickets, API keys and presence in the Redis at cfg.RedisURL under
// cfg.RedisPrefix, the cluster's rate limits, login failures and usage,
// the Redis persistence in the /readyz details, and the count of live
// nodes as background work.
func newRedisBackend(ctx context.Context, cfg Config, logger *slog.Logger, m *metrics.Metrics) (backend, error) {
	rb, err := redis.New(ctx, redis.Options{
		URL:     cfg.RedisURL,
		Prefix:  cfg.RedisPrefix,
		NodeID:  cfg.NodeID,
		Logger:  logger,
		Metrics: m,
		// A revocation learnt from another node's event is remembered as
		// long as a session can live.
		MaxSessionLifetime: cfg.AbsoluteTimeout,
		RevocationJournal:  cfg.RedisRevocationJournal,
		UnfollowDelay:      cfg.RedisUnfollowDelay,
	})
	if err != nil {
		return backend{}, err
	}
	conns := rb.Counter()
	return backend{
		Node:    rb.Node(),
		Limiter: rb.Limiter(),
		LoginFailures: func(n int, window time.Duration) limit.Failures {
			return rb.LoginFailures(n, window)
		},
		Conns: conns,
		Nodes: conns.Nodes,
		Usage: rb.Usage(),
		Details: func() map[string]any {
			return map[string]any{"redis_persistence": rb.Persistence().Details()}
		},
		Run:   conns.RunNodes,
		Close: rb.Close,
	}, nil
}
