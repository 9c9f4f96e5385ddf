package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/limit"
	"github.com/sessionbridge/sessionbridge/metrics"
	"github.com/sessionbridge/sessionbridge/redis"
)

// redis builds the cluster backend: store, bus, tickets and presence in the
// Redis at cfg.RedisURL under cfg.RedisPrefix, readiness by PING (with the
// Redis persistence in the details), and the presence heartbeat as
// background work.
func (backendFactory) redis(ctx context.Context, cfg Config, logger *slog.Logger, m *metrics.Metrics) (backend, error) {
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
	})
	if err != nil {
		return backend{}, err
	}
	// The presence needs this node's registry, which exists only once the
	// gateway is built; Run starts its heartbeat after that.
	var (
		mu   sync.Mutex
		pres *redis.Presence
	)
	conns := rb.Counter()
	return backend{
		Store:   rb.Store(),
		Bus:     rb.Bus(),
		Tickets: rb.Tickets(),
		Keys:    rb.Keys(),
		Limiter: rb.Limiter(),
		LoginFailures: func(n int, window time.Duration) limit.Failures {
			return rb.LoginFailures(n, window)
		},
		Conns: conns,
		Nodes: conns.Nodes,
		Usage: rb.Usage(),
		Presence: func(local sessionbridge.Presence) sessionbridge.Presence {
			p := rb.Presence(local)
			mu.Lock()
			pres = p
			mu.Unlock()
			return p
		},
		Ping: rb.Ping,
		Details: func() map[string]any {
			return map[string]any{"redis_persistence": rb.Persistence().Details()}
		},
		Run: func(ctx context.Context) error {
			mu.Lock()
			p := pres
			mu.Unlock()
			var wg sync.WaitGroup
			defer wg.Wait()
			wg.Go(func() { conns.RunNodes(ctx) })
			if p == nil {
				<-ctx.Done()
				return ctx.Err()
			}
			return p.Run(ctx)
		},
		Close: rb.Close,
	}, nil
}
