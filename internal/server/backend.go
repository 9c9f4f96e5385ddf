package server

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/limit"
	"github.com/sessionbridge/sessionbridge/memory"
	"github.com/sessionbridge/sessionbridge/metrics"
	"github.com/sessionbridge/sessionbridge/usage"
)

// ErrRedisNotBuilt is returned by New when a Redis URL is configured but this
// build has no Redis backend.
var ErrRedisNotBuilt = errors.New("server: redis support not built")

// backend is the storage and messaging a node runs on: the embedded memory
// backend by default, Redis when Config.RedisURL is set.
type backend struct {
	Store   sessionbridge.Store
	Bus     sessionbridge.Bus
	Tickets sessionbridge.TicketStore
	// Keys keeps the API keys.
	Keys sessionbridge.KeyStore
	// Limiter decides rate limits (connects_per_minute, the request rates,
	// and the leases of the cluster frame rules) and Conns counts
	// max_connections; exact for the cluster on Redis, for the node in
	// memory. Nodes, if set, returns the live nodes, whose share of a limit
	// a node takes while Redis is away.
	Limiter limit.Limiter
	Conns   limit.Counter
	Nodes   func() int
	// LoginFailures, if set, builds the counter of failed sign-ins (at most
	// n per key and window) shared by every node; nil counts them in this
	// node's memory.
	LoginFailures func(n int, window time.Duration) limit.Failures
	// Usage keeps the usage counts (docs/usage.md).
	Usage usageStore
	// Presence builds the presence the API reports (connection counts in
	// device lists, GET /api/v1/connections) from this node's own; nil means
	// the node's own, which is all there is without a cluster.
	Presence func(local sessionbridge.Presence) sessionbridge.Presence
	// Ping reports whether the store and the bus are reachable (/readyz).
	Ping func(ctx context.Context) error
	// Details, if set, adds fields to a ready /readyz answer.
	Details func() map[string]any
	// Run, if set, does the backend's background work (such as presence
	// heartbeats) until ctx is done.
	Run func(ctx context.Context) error
	// Close releases the backend's connections; nil means nothing to release.
	Close func()
}

// backendFactory is the seam through which optional backends plug in. A file
// of this package may give it a method
//
//	func (backendFactory) redis(ctx context.Context, cfg Config, logger *slog.Logger, m *metrics.Metrics) (backend, error)
//
// and newBackend uses it for a configured Redis URL; without that method the
// build has no Redis support and such a configuration is refused with
// ErrRedisNotBuilt. The method lives in its own file so that the Redis wiring
// can be added without touching this one.
type backendFactory struct{}

type redisFactory interface {
	redis(ctx context.Context, cfg Config, logger *slog.Logger, m *metrics.Metrics) (backend, error)
}

// newBackend returns the backend cfg asks for: Redis when RedisURL is set,
// the in-process memory backend otherwise.
func newBackend(ctx context.Context, cfg Config, logger *slog.Logger, m *metrics.Metrics) (backend, error) {
	if cfg.RedisURL != "" {
		f, ok := any(backendFactory{}).(redisFactory)
		if !ok {
			return backend{}, ErrRedisNotBuilt
		}
		b, err := f.redis(ctx, cfg, logger, m)
		if err != nil {
			return backend{}, redactURL(err, cfg.RedisURL)
		}
		return b, nil
	}
	return newMemoryBackend(), nil
}

// redactedError is an error whose text hides a URL that may hold a password;
// errors.Is and errors.As still see the original.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactURL returns err with every occurrence of rawURL in its text replaced
// by a form without the password. URL parsers quote the whole input in their
// errors, and the error ends up on the terminal and in logs.
func redactURL(err error, rawURL string) error {
	if rawURL == "" {
		return err
	}
	shown := "(the Redis URL, not shown)"
	if u, perr := url.Parse(rawURL); perr == nil {
		shown = u.Redacted()
	}
	msg := err.Error()
	// Parsers quote the input with %q, which escapes some characters.
	quoted := strconv.Quote(rawURL)
	for _, form := range []string{rawURL, quoted[1 : len(quoted)-1]} {
		msg = strings.ReplaceAll(msg, form, shown)
	}
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

// newMemoryBackend returns the embedded default: everything in this process.
func newMemoryBackend() backend {
	bus := memory.NewBus()
	store := memory.NewStore(bus)
	return backend{
		Store:   store,
		Bus:     bus,
		Tickets: memory.NewTickets(),
		Keys:    memory.NewKeyStore(bus),
		Limiter: &limit.Memory{},
		Conns:   &limit.LocalCounter{},
		Usage:   &usage.Memory{},
		Ping:    store.Ping,
	}
}
