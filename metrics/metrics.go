package metrics

import (
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Other is the label value that replaces any value outside a label's
// vocabulary, or beyond its limit of distinct values.
const Other = "other"

// Limits on distinct values of open-ended labels.
const (
	// MaxFrameTypes is how many distinct frame types are counted by name.
	MaxFrameTypes = 64
	// MaxFrameResults is how many distinct frame results are counted by name.
	MaxFrameResults = 16
	// MaxCloseCodes is how many distinct close codes are counted by number.
	MaxCloseCodes = 32
	// MaxCloseReasons is how many distinct close reasons are counted by name.
	MaxCloseReasons = 32
	// MaxRedisOps is how many distinct Redis operations are counted by name.
	MaxRedisOps = 32
	// maxLabelLen bounds an open-ended label value.
	maxLabelLen = 64
)

// Fixed vocabularies.
var (
	authMethods    = []string{"session", "jwt", "apikey"}
	connectResults = []string{"ok", "unauthorized", "forbidden", "rate_limited", "too_many_connections", "unavailable", "bad_request"}
	eventTypes     = []string{"created", "updated", "deleted", "expired", "message", "apikey_updated", "apikey_deleted", "apikey_expired"}
	eventStages    = []string{"published", "received", "applied"}
	resyncTriggers = []string{"reconnect", "sweep", "gap", "follow"}
	sessionChanges = []string{"created", "updated", "deleted", "expired", "touched"}
	// jwtReasons are the labels of jwt.Reason.
	// rateRules are the rate limit rules (see sessionbridge.Limits) and the
	// request rates of the HTTP API.
	rateRules   = []string{"connects_per_minute", "max_connections", "frames_per_second", "bytes_per_second", "key_frames_per_second", "user_frames_per_second", "login_per_minute", "admin_per_minute"}
	rateResults = []string{"refused", "dry_run", "fallback"}
	jwtReasons  = []string{"expired", "not_yet_valid", "bad_algorithm", "bad_signature", "bad_audience", "bad_issuer",
		"bad_claims", "unknown_key", "malformed", "unavailable", "invalid"}
)

// Histogram buckets, in seconds.
var (
	authBuckets = []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1}
	lagBuckets  = []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10}
)

// Metrics records sessionbridge's Prometheus metrics. Create it with New; a
// nil *Metrics is valid and records nothing. Safe for concurrent use.
type Metrics struct {
	connections     *prometheus.GaugeVec
	disconnects     *prometheus.CounterVec
	connects        *prometheus.CounterVec
	authDuration    *prometheus.HistogramVec
	frames          *prometheus.CounterVec
	events          *prometheus.CounterVec
	applyLag        prometheus.Histogram
	resyncs         *prometheus.CounterVec
	resyncClosed    prometheus.Counter
	redisErrors     *prometheus.CounterVec
	redisReconnects prometheus.Counter
	sessionChanges  *prometheus.CounterVec
	jwtRejections   *prometheus.CounterVec
	rateLimited     *prometheus.CounterVec

	frameTypes   *labelSet
	frameResults *labelSet
	closeCodes   *labelSet
	closeReasons *labelSet
	redisOps     *labelSet
}

// New creates the metrics and registers them with reg. If reg is nil the
// metrics are recorded but not exported. If reg already holds identical
// collectors (a second Metrics on the same registry), those are reused, so
// both record into the same series. New panics if reg holds a different metric
// under one of the names, as prometheus.MustRegister does.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sessionbridge_connections",
			Help: "Open WebSocket connections by authentication method.",
		}, []string{"auth"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessionbridge_disconnects_total",
			Help: "Closed WebSocket connections by close code and reason.",
		}, []string{"code", "reason"}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessionbridge_connects_total",
			Help: "WebSocket upgrade attempts by result.",
		}, []string{"result"}),
		authDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sessionbridge_auth_duration_seconds",
			Help:    "Time to authenticate a request or upgrade, by authentication method.",
			Buckets: authBuckets,
		}, []string{"auth"}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessionbridge_frames_total",
			Help: "WebSocket frames received from clients, by frame type and result.",
		}, []string{"type", "result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessionbridge_events_total",
			Help: "Session events by type and stage (published to the bus, received from it, applied to local connections).",
		}, []string{"type", "stage"}),
		applyLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sessionbridge_event_apply_lag_seconds",
			Help:    "Time from an event's timestamp to its application on this node.",
			Buckets: lagBuckets,
		}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessionbridge_resyncs_total",
			Help: "Re-validations of local sessions, by trigger.",
		}, []string{"trigger"}),
		resyncClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sessionbridge_resync_closed_total",
			Help: "Connections closed by re-validation because their session was gone.",
		}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessionbridge_redis_errors_total",
			Help: "Failed Redis operations by operation.",
		}, []string{"op"}),
		redisReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sessionbridge_redis_reconnects_total",
			Help: "Reconnections of the Redis event subscription.",
		}),
		sessionChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessionbridge_session_changes_total",
			Help: "Session changes made by this node, by type.",
		}, []string{"type"}),
		jwtRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessionbridge_jwt_rejections_total",
			Help: "JWTs refused at the WebSocket upgrade or in auth.refresh, by reason.",
		}, []string{"reason"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessionbridge_rate_limited_total",
			Help: "Rate limit decisions by rule and result: refused (enforced), dry_run (would have refused) and fallback (decided locally while the shared store was away).",
		}, []string{"rule", "result"}),
		frameTypes:   newLabelSet(MaxFrameTypes),
		frameResults: newLabelSet(MaxFrameResults),
		closeCodes:   newLabelSet(MaxCloseCodes),
		closeReasons: newLabelSet(MaxCloseReasons),
		redisOps:     newLabelSet(MaxRedisOps),
	}
	if reg != nil {
		m.connections = register(reg, m.connections)
		m.disconnects = register(reg, m.disconnects)
		m.connects = register(reg, m.connects)
		m.authDuration = register(reg, m.authDuration)
		m.frames = register(reg, m.frames)
		m.events = register(reg, m.events)
		m.applyLag = register(reg, m.applyLag)
		m.resyncs = register(reg, m.resyncs)
		m.resyncClosed = register(reg, m.resyncClosed)
		m.redisErrors = register(reg, m.redisErrors)
		m.redisReconnects = register(reg, m.redisReconnects)
		m.sessionChanges = register(reg, m.sessionChanges)
		m.jwtRejections = register(reg, m.jwtRejections)
		m.rateLimited = register(reg, m.rateLimited)
	}
	// Create the series of fixed vocabularies up front, so that dashboards
	// and rate() see zeros instead of missing series.
	for _, a := range slices.Concat(authMethods, []string{Other}) {
		m.connections.WithLabelValues(a)
		m.authDuration.WithLabelValues(a)
	}
	for _, r := range connectResults {
		m.connects.WithLabelValues(r)
	}
	for _, t := range eventTypes {
		for _, s := range eventStages {
			m.events.WithLabelValues(t, s)
		}
	}
	for _, t := range resyncTriggers {
		m.resyncs.WithLabelValues(t)
	}
	for _, t := range sessionChanges {
		m.sessionChanges.WithLabelValues(t)
	}
	for _, r := range jwtReasons {
		m.jwtRejections.WithLabelValues(r)
	}
	for _, r := range rateRules {
		for _, res := range rateResults {
			m.rateLimited.WithLabelValues(r, res)
		}
	}
	return m
}

// register registers c with reg, or returns the identical collector reg
// already holds.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic(err)
}

// ConnOpened counts a new WebSocket connection authenticated by method
// (session, jwt or apikey).
func (m *Metrics) ConnOpened(method string) {
	if m == nil {
		return
	}
	m.connections.WithLabelValues(fixed(method, authMethods)).Inc()
}

// ConnClosed counts the end of a connection opened with ConnOpened(method),
// with its close code and close reason (session_expired, server_shutdown, ...;
// "" for none).
func (m *Metrics) ConnClosed(method string, code int, reason string) {
	if m == nil {
		return
	}
	m.connections.WithLabelValues(fixed(method, authMethods)).Dec()
	if reason == "" {
		reason = "none"
	}
	m.disconnects.WithLabelValues(m.closeCode(code), m.closeReasons.clamp(reason)).Inc()
}

// closeCode returns code as a label: the standard codes 1000 to 1015 and the
// application range 4000 to 4999, up to MaxCloseCodes distinct ones.
func (m *Metrics) closeCode(code int) string {
	if !(1000 <= code && code <= 1015 || 4000 <= code && code <= 4999) {
		return Other
	}
	return m.closeCodes.clamp(strconv.Itoa(code))
}

// Connect counts an upgrade attempt by result: ok, unauthorized, forbidden,
// rate_limited, too_many_connections, unavailable or bad_request.
func (m *Metrics) Connect(result string) {
	if m == nil {
		return
	}
	m.connects.WithLabelValues(fixed(result, connectResults)).Inc()
}

// AuthDuration records how long authenticating with method (session, jwt or
// apikey) took.
func (m *Metrics) AuthDuration(method string, d time.Duration) {
	if m == nil {
		return
	}
	m.authDuration.WithLabelValues(fixed(method, authMethods)).Observe(d.Seconds())
}

// Frame counts a frame received from a client. typ is the frame type if the
// caller knows it, else "unknown": frame types are client input, so the first
// MaxFrameTypes distinct types are counted by name and the rest as "other".
// result is a short outcome (ok, bad_request, forbidden, rate_limited,
// unknown_type, internal), limited the same way to MaxFrameResults.
func (m *Metrics) Frame(typ, result string) {
	if m == nil {
		return
	}
	m.frames.WithLabelValues(m.frameTypes.clamp(typ), m.frameResults.clamp(result)).Inc()
}

// EventPublished counts an event of type typ (created, updated, deleted,
// expired, message) published to the bus.
func (m *Metrics) EventPublished(typ string) { m.event(typ, "published") }

// EventReceived counts an event of type typ received from the bus.
func (m *Metrics) EventReceived(typ string) { m.event(typ, "received") }

// EventApplied counts an event of type typ applied to local connections.
func (m *Metrics) EventApplied(typ string) { m.event(typ, "applied") }

func (m *Metrics) event(typ, stage string) {
	if m == nil {
		return
	}
	m.events.WithLabelValues(fixed(typ, eventTypes), stage).Inc()
}

// ApplyLag records the time from an event's creation to its application on
// this node. Negative durations (clock skew between nodes) count as zero.
func (m *Metrics) ApplyLag(d time.Duration) {
	if m == nil {
		return
	}
	m.applyLag.Observe(max(d, 0).Seconds())
}

// Resync counts a re-validation of local sessions, by trigger: reconnect (the
// bus came back), sweep (the periodic check) or gap (missed events detected).
func (m *Metrics) Resync(trigger string) {
	if m == nil {
		return
	}
	m.resyncs.WithLabelValues(fixed(trigger, resyncTriggers)).Inc()
}

// ResyncClosed counts n connections closed by a re-validation.
func (m *Metrics) ResyncClosed(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.resyncClosed.Add(float64(n))
}

// RedisError counts a failed Redis operation, named by op (get, set, publish,
// subscribe, script, ...); the first MaxRedisOps distinct names are kept.
func (m *Metrics) RedisError(op string) {
	if m == nil {
		return
	}
	m.redisErrors.WithLabelValues(m.redisOps.clamp(op)).Inc()
}

// Reconnect counts a reconnection of the Redis event subscription.
func (m *Metrics) Reconnect() {
	if m == nil {
		return
	}
	m.redisReconnects.Inc()
}

// SessionEvent counts a session change made on this node: created, updated,
// deleted, expired or touched.
func (m *Metrics) SessionEvent(typ string) {
	if m == nil {
		return
	}
	m.sessionChanges.WithLabelValues(fixed(typ, sessionChanges)).Inc()
}

// JWTRejected counts a refused JWT by reason: a label of jwt.Reason
// (expired, not_yet_valid, bad_algorithm, bad_signature, bad_audience,
// bad_issuer, bad_claims, unknown_key, malformed, unavailable, invalid); any
// other value counts as "other".
func (m *Metrics) JWTRejected(reason string) {
	if m == nil {
		return
	}
	m.jwtRejections.WithLabelValues(fixed(reason, jwtReasons)).Inc()
}

// fixed returns v if it is in vocab, else Other.
func fixed(v string, vocab []string) string {
	for _, w := range vocab {
		if v == w {
			return w // the constant, so that no caller's buffer is retained
		}
	}
	return Other
}

// labelSet admits up to max distinct label values, first come first served;
// later newcomers and malformed values become Other.
type labelSet struct {
	mu   sync.RWMutex
	seen map[string]string
	max  int
}

func newLabelSet(max int) *labelSet {
	return &labelSet{seen: make(map[string]string, max), max: max}
}

func (s *labelSet) clamp(v string) string {
	if !validLabel(v) {
		return Other
	}
	s.mu.RLock()
	got, ok := s.seen[v]
	s.mu.RUnlock()
	if ok {
		return got
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if got, ok := s.seen[v]; ok {
		return got
	}
	if len(s.seen) >= s.max {
		return Other
	}
	// Clone: v may be a slice of a large client message.
	c := string([]byte(v))
	s.seen[c] = c
	return c
}

// validLabel reports whether v is short and made of [A-Za-z0-9._:-], the
// characters of frame types, reasons and operation names. Anything else is
// client noise.
func validLabel(v string) bool {
	if v == "" || len(v) > maxLabelLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-' || c == ':') {
			return false
		}
	}
	return true
}

// RateLimited counts a rate limit decision of rule (a rule name of
// sessionbridge.Limits, login_per_minute or admin_per_minute) with result
// refused, dry_run (would have refused) or fallback (decided locally while
// the shared store was away). Never a label per key, user or IP.
func (m *Metrics) RateLimited(rule, result string) {
	if m == nil {
		return
	}
	m.rateLimited.WithLabelValues(fixed(rule, rateRules), fixed(result, rateResults)).Inc()
}
