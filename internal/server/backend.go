package server

import (
	"context"
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

// backend is what a node runs on: the node's own backend (store, bus,
// tickets, API keys, presence), which its Manager owns, and what only the
// server uses besides: the embedded memory backend by default, Redis when
// Config.RedisURL is set.
type backend struct {
	// Node is the backend of the node's Manager.
	Node sessionbridge.Backend
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
	// Details, if set, adds fields to a ready /readyz answer.
	Details func() map[string]any
	// Run, if set, does the server's own background work on the backend
	// (such as counting the live nodes) until ctx is done.
	Run func(ctx context.Context)
	// Close releases the backend's connections; nil means nothing to release.
	Close func()
}

// newBackend returns the backend cfg asks for: Redis when RedisURL is set,
// the in-process memory backend otherwise. The node is named cfg.NodeID,
// or by the Manager's default when it is empty.
func newBackend(ctx context.Context, cfg Config, logger *slog.Logger, m *metrics.Metrics) (backend, error) {
	if cfg.RedisURL == "" {
		return newMemoryBackend(cfg.NodeID), nil
	}
	b, err := newRedisBackend(ctx, cfg, logger, m)
	if err != nil {
		return backend{}, redactURL(err, cfg.RedisURL)
	}
	return b, nil
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
func newMemoryBackend(nodeID string) backend {
	node := memory.New()
	node.NodeID = nodeID
	return backend{
		Node:    node,
		Limiter: &limit.Memory{},
		Conns:   &limit.LocalCounter{},
		Usage:   &usage.Memory{},
	}
}
