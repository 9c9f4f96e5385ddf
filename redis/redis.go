// Package redis keeps sessions, tickets and presence in Redis and carries
// session events between nodes over Redis pub/sub, so that any number of
// sessionbridge nodes act as one.
//
// A [Backend] owns one rueidis client and hands out the pieces:
// [Backend.Store] (a [sessionbridge.Store] whose every write and its event are
// one Lua script), [Backend.Bus] (a [sessionbridge.Bus] on the session:*
// channels), [Backend.Tickets] (single-use WebSocket tickets),
// [Backend.Keys] (API keys) and [Backend.Presence] (cluster-wide connection
// counts). [Backend.Node] returns them as one sessionbridge.Backend, the
// value a node's sessionbridge.Manager is built on.
//
// Reads of single sessions go through rueidis' server-assisted client-side
// cache (RESP3 client tracking): a warm Get costs no round trip, and Redis
// invalidates the cached copy as soon as any client changes the key. When the
// connection that carries the invalidations drops, rueidis discards the whole
// cache of that connection, so a cached session is never older than the
// invalidation delay. docs/redis.md describes the key layout and scripts for
// applications in other languages.
//
// Every key of one session and of its user's index carries the same hash tag,
// the user's shard, so that each script touches one Redis Cluster slot. Redis
// 7.0 or later is required (GETDEL, PEXPIRETIME).
package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/sessionbridge/sessionbridge"
)

// Defaults for zero Options fields.
const (
	DefaultPrefix           = "sb:"
	DefaultCacheTTL         = time.Minute
	DefaultTimeout          = 2 * time.Second
	DefaultKeyGrace         = time.Hour
	DefaultPresenceInterval = 5 * time.Second
	DefaultEventBuffer      = 4096
)

// ErrClosed is returned by operations on a closed Backend.
var ErrClosed = errors.New("redis: backend closed")

// Metrics receives counts from a Backend. The metrics package's *Metrics
// satisfies it; every method must be safe for concurrent use and cheap.
// Received events and re-validations are counted by the EventHandler that
// handles them (the gateway), not here, so that nothing is counted twice.
type Metrics interface {
	// EventPublished counts an event this node published, by type
	// (created, updated, deleted, expired, message).
	EventPublished(typ string)
	// RedisError counts a failed Redis operation, by a fixed operation name
	// (get, update, subscribe, decode_event, event_overflow, ...).
	RedisError(op string)
	// Reconnect counts a re-established pub/sub subscription.
	Reconnect()
}

// Options configures a Backend. Only URL is required.
type Options struct {
	// URL locates Redis: redis://[user:pass@]host:port/db, rediss:// for
	// TLS, unix:///path?db=N, and rueidis' query options such as
	// ?master_set=NAME for Sentinel or several &addr= for Cluster.
	URL string
	// Prefix is put before every key and channel name; default "sb:". It
	// must not contain '{' or '}', which would break the hash tags.
	Prefix string
	// NodeID names this node in presence records, in its Redis client name
	// and, through Node, everywhere else; default sessionbridge.NewNodeID.
	NodeID string
	// DisableClientCache turns off the client-side cache of Get, for Redis
	// services without RESP3 client tracking. The URL option
	// ?client_cache=0 does the same.
	DisableClientCache bool
	// CacheTTL is how long a cached session may be served without an
	// invalidation; default one minute. Invalidations normally evict it much
	// sooner.
	CacheTTL time.Duration
	// Timeout bounds every Redis operation whose context has no earlier
	// deadline; default 2s. It is how long authentication waits before
	// failing closed with ErrUnavailable when Redis is away.
	Timeout time.Duration
	// KeyGrace is how long after its deadline a session key lives if no node
	// claims its expiry: a backstop, never the expiry mechanism; default 1h.
	KeyGrace time.Duration
	// PresenceInterval is how often Presence.Run writes this node's
	// connection counts; records live for three intervals. Default 5s.
	PresenceInterval time.Duration
	// UnfollowDelay is how long a session's or user's channel stays
	// subscribed after its last local socket left; default
	// DefaultUnfollowDelay.
	UnfollowDelay time.Duration
	// EventBuffer is how many received events may wait for a slow handler
	// before the bus drops them and calls HandleGap; default 4096.
	EventBuffer int
	// RevocationJournal is how many revocations this node remembers, so
	// that a Redis restart that lost them cannot undo them (see
	// docs/redis.md); default DefaultRevocationJournal. When it is full,
	// the revocation that would expire first is forgotten.
	RevocationJournal int
	// MaxSessionLifetime is how long a revocation learned from another
	// node's event is remembered, since the event does not say when the
	// session would have expired: the longest any session lives (the
	// Manager's absolute timeout); default
	// sessionbridge.DefaultAbsoluteTimeout. This node's own revocations are
	// remembered until the session's own deadline.
	MaxSessionLifetime time.Duration
	// Logger receives operational logs; nil discards them.
	Logger *slog.Logger
	// Metrics receives counts; nil counts nothing.
	Metrics Metrics
	// ClientOption, if not nil, adjusts the rueidis options parsed from URL
	// (TLS, dialer, Sentinel credentials...) before the client is built.
	ClientOption func(*rueidis.ClientOption)
}

// Backend is a connection to Redis and the sessionbridge pieces built on it.
// It is safe for concurrent use. Close it when done.
type Backend struct {
	client   rueidis.Client
	opts     Options
	prefix   string
	nodeID   string
	log      *slog.Logger
	metrics  Metrics
	cacheTTL time.Duration
	timeout  time.Duration
	grace    time.Duration
	closed   atomic.Bool
	done     chan struct{} // closed by Close

	store *Store
	bus   *Bus
	// expiry and keyExpiry are what the session and API key expiry
	// claims know of their expiry indexes; hintChannels maps each hint
	// channel to its watch and index.
	expiry, keyExpiry expiryWatch
	hintChannels      map[string]hintTarget
	router            *router
	tickets           *Tickets
	keys              *KeyStore
	limiter           *Limiter
	usage             *Usage

	// Restart detection (restart.go): the watcher runs until Close.
	kick          chan struct{} // wakes the watcher; buffered, never blocks
	stopWatch     context.CancelFunc
	watchDone     chan struct{}
	noRunID       atomic.Bool // the server does not report run_id
	reapplyWanted atomic.Bool
	// dials counts new connections; checked is the count the last look at
	// the run IDs covered; checkedSignal is closed (and replaced) by each
	// look. See gate.
	dials, checked atomic.Uint64
	checkedSignal  chan struct{}
	// restartPending: a restart was noticed (at restartNoticed, Unix ns)
	// and the journal is not written again yet; settleUntil (Unix ns):
	// older sessions are refused until then.
	restartPending atomic.Bool
	restartNoticed atomic.Int64
	settleUntil    atomic.Int64
	mu             sync.Mutex
	serverIDs      map[string]string // run IDs last seen, by address
	persistence    Persistence
	// persistenceRead: persistence was set once (a zero Persistence is
	// a real reading: unknown).
	persistenceRead bool
}

// New connects to Redis and returns a Backend. It fails if the URL is invalid
// or Redis cannot be reached now; once built, the Backend reconnects by
// itself.
func New(ctx context.Context, o Options) (*Backend, error) {
	if o.URL == "" {
		return nil, errors.New("redis: no URL")
	}
	copt, err := rueidis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("redis: parse URL: %w", err)
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(o.Prefix, "{}") {
		return nil, fmt.Errorf("redis: prefix %q must not contain braces", o.Prefix)
	}
	if o.NodeID == "" {
		o.NodeID = sessionbridge.NewNodeID()
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = DefaultCacheTTL
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.KeyGrace <= 0 {
		o.KeyGrace = DefaultKeyGrace
	}
	if o.PresenceInterval <= 0 {
		o.PresenceInterval = DefaultPresenceInterval
	}
	if o.UnfollowDelay <= 0 {
		o.UnfollowDelay = DefaultUnfollowDelay
	}
	if o.EventBuffer <= 0 {
		o.EventBuffer = DefaultEventBuffer
	}
	if o.RevocationJournal <= 0 {
		o.RevocationJournal = DefaultRevocationJournal
	}
	if o.MaxSessionLifetime <= 0 {
		o.MaxSessionLifetime = sessionbridge.DefaultAbsoluteTimeout
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := o.Metrics
	if m == nil {
		m = nopMetrics{}
	}
	copt.DisableCache = copt.DisableCache || o.DisableClientCache
	if copt.ClientName == "" {
		copt.ClientName = "sessionbridge:" + o.NodeID
	}
	// Keep every connection's reader running, so that a connection Redis
	// dropped (restart, CLIENT KILL) is noticed at once and replaced before
	// the next command, instead of failing the first write sent on it.
	copt.AlwaysPipelining = true
	// Dial fast: authentication must fail closed quickly while Redis is away.
	if copt.Dialer.Timeout == 0 {
		copt.Dialer.Timeout = o.Timeout
	}
	if o.ClientOption != nil {
		o.ClientOption(&copt)
	}
	b := &Backend{
		opts: o, prefix: o.Prefix, nodeID: o.NodeID,
		log: log, metrics: m, cacheTTL: o.CacheTTL, timeout: o.Timeout, grace: o.KeyGrace,
		done: make(chan struct{}), kick: make(chan struct{}, 1), watchDone: make(chan struct{}),
		checkedSignal: make(chan struct{}),
	}
	b.dialNotifying(&copt)
	client, err := rueidis.NewClient(copt)
	if err != nil {
		return nil, fmt.Errorf("redis: connect: %w: %w", sessionbridge.ErrUnavailable, err)
	}
	b.client = client
	b.hintChannels = make(map[string]hintTarget, 2*len(shards))
	for i, sh := range shards {
		b.hintChannels[b.expiryKey(sh)] = hintTarget{&b.expiry, i}
		b.hintChannels[b.keyExpiryKey(sh)] = hintTarget{&b.keyExpiry, i}
	}
	b.store = &Store{b: b, sc: newScripts(), journal: newJournal(o.RevocationJournal)}
	b.bus = &Bus{b: b}
	b.router = newRouter(b)
	b.tickets = &Tickets{b: b}
	b.keys = &KeyStore{b: b, sc: newKeyScripts()}
	b.limiter = newLimiter(b)
	b.usage = newUsage(b)
	if err := b.Ping(ctx); err != nil {
		client.Close()
		return nil, err
	}
	// What the server keeps across a restart, said once at start: an
	// operator must know when a restart can undo revocations.
	p, err := b.readPersistence(ctx)
	if err != nil {
		client.Close()
		return nil, err
	}
	b.setPersistence(p)
	// The run IDs to compare with after a reconnect. If they cannot be
	// read now, the watcher reads them on its first look.
	dials := b.dials.Load()
	if ids, err := b.runIDs(ctx); err == nil {
		b.serverIDs = ids
		b.markChecked(dials)
	}
	wctx, cancel := context.WithCancel(context.Background())
	b.stopWatch = cancel
	go b.watch(wctx)
	return b, nil
}

// Node returns the backend of a node of the cluster: this Backend's Store,
// the Bus it publishes on, Tickets, the API key store, cluster-wide Presence,
// and the node ID of Options, for sessionbridge.NewManager. Use each
// Backend for one node.
func (b *Backend) Node() sessionbridge.Backend {
	return sessionbridge.Backend{
		NodeID:  b.nodeID,
		Store:   b.store,
		Bus:     b.bus,
		Tickets: b.tickets,
		Keys:    b.keys,
		Presence: func(local sessionbridge.Presence) sessionbridge.ClusterPresence {
			return b.Presence(local)
		},
	}
}

// Store returns the session store.
func (b *Backend) Store() *Store { return b.store }

// Bus returns the event bus.
func (b *Backend) Bus() *Bus { return b.bus }

// Tickets returns the WebSocket ticket store.
func (b *Backend) Tickets() *Tickets { return b.tickets }

// Keys returns the API key store.
func (b *Backend) Keys() *KeyStore { return b.keys }

// Limiter returns the rate limiter.
func (b *Backend) Limiter() *Limiter { return b.limiter }

// Usage returns the usage store.
func (b *Backend) Usage() *Usage { return b.usage }

// NodeID returns the ID of this node (Options.NodeID or its default).
func (b *Backend) NodeID() string { return b.nodeID }

// Client returns the underlying rueidis client, for diagnostics and tests.
func (b *Backend) Client() rueidis.Client { return b.client }

// Ping reports whether Redis answers; it returns an error wrapping
// sessionbridge.ErrUnavailable if not. It is the readiness check.
func (b *Backend) Ping(ctx context.Context) error {
	if b.closed.Load() {
		return ErrClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	return b.fail("ping", b.client.Do(ctx, b.client.B().Ping().Build()).Error())
}

// Close closes the connections; subscriptions end with an error. It is
// idempotent.
func (b *Backend) Close() {
	if b.closed.Swap(true) {
		return
	}
	// Dedicated connections (subscriptions) are not closed by the client;
	// done tells their owners to close them.
	close(b.done)
	b.stopWatch()
	<-b.watchDone
	b.client.Close()
}

// opCtx bounds an operation by the configured timeout unless ctx ends sooner.
func (b *Backend) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= b.timeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, b.timeout)
}

// unavailableReplies are Redis error replies that mean "not now" rather than
// "wrong request".
var unavailableReplies = []string{"LOADING", "BUSY", "MASTERDOWN", "READONLY", "CLUSTERDOWN", "TRYAGAIN", "OOM", "NOREPLICAS"}

// fail maps err to the errors callers branch on: connection problems, time-outs
// and server states that pass become sessionbridge.ErrUnavailable; a
// cancellation by the caller stays a cancellation.
func (b *Backend) fail(op string, err error) error {
	if err == nil {
		return nil
	}
	b.metrics.RedisError(op)
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("redis: %s: %w", op, err)
	}
	if re, ok := rueidis.IsRedisErr(err); ok {
		msg := re.Error()
		for _, p := range unavailableReplies {
			if strings.HasPrefix(msg, p) {
				return fmt.Errorf("redis: %s: %w: %w", op, sessionbridge.ErrUnavailable, err)
			}
		}
		return fmt.Errorf("redis: %s: %w", op, err)
	}
	if b.closed.Load() {
		return fmt.Errorf("redis: %s: %w: %w", op, sessionbridge.ErrUnavailable, ErrClosed)
	}
	return fmt.Errorf("redis: %s: %w: %w", op, sessionbridge.ErrUnavailable, err)
}

type nopMetrics struct{}

func (nopMetrics) EventPublished(string) {}
func (nopMetrics) RedisError(string)     {}
func (nopMetrics) Reconnect()            {}

func isNil(err error) bool { return rueidis.IsRedisNil(err) }
