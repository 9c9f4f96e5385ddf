// Package gateway is the WebSocket side of sessionbridge: it authenticates
// upgrades from the same credentials HTTP uses (session cookie or token, JWT,
// API key, single-use ticket), keeps a registry of live connections by
// connection, session, user and API key, serves the frame protocol, and
// applies every session and API key event from the bus to the local sockets
// (session.updated and scopes.updated pushes, closes on revocation and
// expiry).
//
// The wire protocol is described in docs/protocol.md.
package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/audit"
	"github.com/sessionbridge/sessionbridge/auth"
	"github.com/sessionbridge/sessionbridge/device"
	"github.com/sessionbridge/sessionbridge/forward"
	"github.com/sessionbridge/sessionbridge/metrics"
	"github.com/sessionbridge/sessionbridge/scope"
	"github.com/sessionbridge/sessionbridge/usage"
)

// Defaults for zero Config fields.
const (
	DefaultReadLimit     = 64 << 10
	DefaultPingInterval  = 30 * time.Second
	DefaultWriteTimeout  = 10 * time.Second
	DefaultSendQueue     = 64
	DefaultExpiryWarning = 60 * time.Second
	// DefaultSweepInterval is a backstop only: every subscription gap
	// already re-validates the sessions it covered, and re-reading every
	// session costs Redis one read per socket each interval.
	DefaultSweepInterval = 2 * time.Minute
	// DefaultMaxConnsPerSession and DefaultMaxConnsPerUser cap the live
	// connections of one session and of one user on a node: far above what
	// a person's tabs and devices open, far below what exhausts a node.
	DefaultMaxConnsPerSession = 100
	DefaultMaxConnsPerUser    = 500
	// connCapRetry is the Retry-After of an upgrade refused by a connection
	// cap: a slot frees when a socket closes, which nothing predicts.
	connCapRetry = 5 * time.Second
	// resyncBatch is how many session IDs one Store.GetMany call asks for.
	resyncBatch = 1000
)

// Config configures a Gateway. Manager is required; every other field has a
// working zero value.
type Config struct {
	// Manager is the node's session side. The gateway takes everything else
	// of the node from it: its backend's Bus (Run subscribes to it, and
	// messages are published on it), its Tickets (redeemed on upgrades), its
	// Presence (see Gateway.Presence) and its node ID, so that none of them
	// can belong to another node.
	Manager *sb.Manager
	// Auth authenticates upgrades and decides their origins; share it with
	// the HTTP API (httpapi.Sessions.Auth) so that both doors read
	// credentials one way. When it is set, JWT, APIKeys, AllowedOrigins,
	// AllowQueryToken and SessionScopes must be left unset; when it is nil,
	// New builds one from them.
	Auth *auth.Authenticator
	// JWT verifies bearer JWTs (and auth.refresh); nil refuses them.
	JWT sb.TokenVerifier
	// APIKeys verifies bearer API keys (*keys.Manager); nil refuses them.
	APIKeys auth.KeyVerifier
	// KeyStore reads API keys: the store they live in, or a *keys.Manager,
	// which also leaves out the keys whose owner is no longer a user. With
	// it, the sockets of a key are re-validated against it after every gap
	// and on each sweep (a key revoked while this node missed the event
	// still loses its sockets), and an event that skipped a version has the
	// key read again. Set it whenever APIKeys is set.
	KeyStore KeyReader
	// KeyEvents, if set, receives every API key event and every gap before
	// the gateway applies them, on the gateway's own subscription: set it to
	// the key verification cache (keys.Cache), so that no upgrade can be let
	// in by a cached key whose revocation this node has already applied.
	KeyEvents sb.EventHandler
	// AllowedOrigins lists the browser origins that may connect besides the
	// server's own, which always may: "https://app.example.com" or
	// "https://*.example.com" (one or more labels in place of the star).
	AllowedOrigins []string
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// AllowQueryToken enables ?session_token= (off by default: URLs end up
	// in logs; the gateway itself never logs it).
	AllowQueryToken bool
	// SessionScopes are the scopes of the connections of a session that has
	// no scopes of its own stored (Session.Scopes nil); nil means ["**"],
	// every frame type and ws:connect. A bare "*" reads as "**" (see
	// sb.CompileScopes). New refuses patterns that do not compile.
	SessionScopes []string
	// ReadLimit is the largest frame a client may send; larger ones close
	// the connection with 1009. Default 64 KiB.
	ReadLimit int64
	// PingInterval is how often the server pings every socket; default 30s.
	PingInterval time.Duration
	// PongTimeout is how long a peer may send nothing at all (not even a
	// pong) before the connection is dropped; default 2*PingInterval.
	PongTimeout time.Duration
	// WriteTimeout bounds every write to a socket; default 10s.
	WriteTimeout time.Duration
	// SendQueue is how many frames the server pushes (session.updated,
	// message, ...) may wait for a slow socket before it is closed with 1008
	// slow_consumer; default 64 (and at most 1 MiB). Replies to the client's
	// own frames have a budget of the same size besides: when it is full, the
	// connection's read loop waits for the writer instead (back-pressure).
	SendQueue int
	// ExpiryWarning is how long before a session's deadline its sockets get
	// session.expiring; default 60s, negative disables the warning.
	ExpiryWarning time.Duration
	// SweepInterval is how often Run re-validates every local session
	// against the store; default DefaultSweepInterval (2m).
	SweepInterval time.Duration
	// Limits are the rate limits: connection attempts and concurrent
	// sockets per IP, user and API key at the upgrade (429), frames and
	// bytes per connection, per key and per user on every frame (error
	// rate_limited, then 4429). Every rule is off by default.
	Limits RateLimits
	// MaxConnsPerSession and MaxConnsPerUser cap the live connections of
	// one session and of one user on this node (see docs/configuration.md
	// for why per node); an upgrade over a cap is refused with 429
	// too_many_connections and Retry-After. Defaults 100 and 500; negative
	// means no cap.
	MaxConnsPerSession int
	MaxConnsPerUser    int
	// Forwarder, if set, receives the client frames of the types that
	// ForwardTypes matches and no Handler serves (gateway mode: the
	// application's own types, see docs/forwarding.md). Such a frame is
	// forwarded only if the connection's scopes allow its type (else error
	// forbidden); the read loop does not wait for the answer, which becomes
	// the reply with the frame's id. Built-in types are never forwarded.
	Forwarder forward.Forwarder
	// ForwardTypes are scope patterns ("chat.**", "game.*") of the frame
	// types handed to Forwarder; none by default.
	ForwardTypes []string
	// ForwardInFlight bounds the forwarded frames of one connection that
	// wait for their answer at once; one more is answered with error
	// rate_limited. Default DefaultForwardInFlight (8), at most 1024.
	ForwardInFlight int
	// Metadata, if set, returns the metadata a new connection carries in its
	// ConnContext.
	Metadata func(r *http.Request, p *sb.Principal) map[string]string
	// Usage, if set, records what every socket does for its user and its
	// API key (see docs/usage.md): connects and refusals as they happen,
	// frames, bytes and error frames from counters in each connection that
	// the Recorder collects at each flush. Run the Recorder for the life of
	// the gateway and stop it after Shutdown, so that its last flush holds
	// the closing sockets.
	Usage *usage.Recorder

	Logger  *slog.Logger
	Audit   *audit.Logger
	Metrics *metrics.Metrics
	// Now is the clock for deadline decisions; nil means time.Now.
	Now func() time.Time
}

// Handler serves a client frame of an application-defined type. Its reply,
// unless nil, is sent as a frame of type "<type>.result" with the request's
// id; an error becomes an error frame (see FrameError).
type Handler func(ctx context.Context, c *Conn, data json.RawMessage) (reply any, err error)

type route struct {
	scope string
	h     Handler
}

// Gateway serves WebSocket connections at GET /ws. Create it with New.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	audit   *audit.Logger
	metrics *metrics.Metrics
	clock   clock
	auth    *auth.Authenticator
	up      websocket.Upgrader
	reg     *registry
	marks   eventMarks
	// bus and nodeID are the Manager's backend's; presence answers for the
	// cluster (the gateway itself without a cluster presence), and cluster
	// is the same presence when Run must keep it current, else nil.
	bus      sb.Bus
	nodeID   string
	presence sb.Presence
	cluster  sb.ClusterPresence

	readLimit    int64
	pingInterval time.Duration
	pongTimeout  time.Duration
	writeTimeout time.Duration
	sendQueue    int
	warning      time.Duration
	sweep        time.Duration
	rl           *rateLimiter
	// Connection caps, 0 meaning none.
	maxPerSession int
	maxPerUser    int

	hmu      sync.RWMutex
	handlers map[string]route
	fwd      forwarding

	// sessionDefault is SessionScopes with its default filled in, and
	// sessionDefaultSet its compiled form, shared by every connection of a
	// session without scopes of its own.
	sessionDefault    []string
	sessionDefaultSet *scope.Set

	// wg counts upgrade handlers, read loops, writers and timer callbacks.
	wg          sync.WaitGroup
	mu          sync.Mutex
	shutting    bool
	pingerStop  chan struct{}
	pingerDone  chan struct{}
	baseCtx     context.Context
	cancelConns context.CancelFunc

	resync chan struct{} // capacity 1: a re-validation is due
	// followed holds sessions whose events the bus delivers from now on
	// (see HandleFollowed), to be re-validated; followKick (capacity 1)
	// tells Run.
	followMu   sync.Mutex
	followed   []string
	followKick chan struct{}

	usageColl usageCollector

	// idle holds idle sockets without a goroutine each (Linux), from the
	// first upgrade until Shutdown; nil before, and where unavailable.
	idle atomic.Pointer[idlePoller]
}

// New returns a Gateway for cfg.
func New(cfg Config) (*Gateway, error) {
	if cfg.Manager == nil {
		return nil, errors.New("gateway: Config.Manager is required")
	}
	node := cfg.Manager.Backend()
	if node.Bus == nil {
		return nil, errors.New("gateway: Config.Manager has no backend: build it with sessionbridge.NewManager")
	}
	authn, err := newAuthenticator(cfg)
	if err != nil {
		return nil, err
	}
	fwd, err := newForwarding(cfg)
	if err != nil {
		return nil, err
	}
	// auth.refresh verifies with the authenticator's JWT verifier.
	cfg.JWT = authn.JWT()
	g := &Gateway{
		cfg: cfg, log: cfg.Logger, audit: cfg.Audit, metrics: cfg.Metrics,
		clock: realClock{now: cfg.Now}, auth: authn, reg: newRegistry(),
		readLimit: cfg.ReadLimit, pingInterval: cfg.PingInterval, pongTimeout: cfg.PongTimeout,
		writeTimeout: cfg.WriteTimeout, sendQueue: cfg.SendQueue, warning: cfg.ExpiryWarning,
		sweep: cfg.SweepInterval, handlers: map[string]route{}, fwd: fwd, resync: make(chan struct{}, 1),
		followKick: make(chan struct{}, 1),
		bus:        node.Bus, nodeID: node.NodeID,
	}
	g.presence = g
	if node.Presence != nil {
		g.cluster = node.Presence(g)
		g.presence = g.cluster
	}
	// A routing bus delivers only the events of what this node follows:
	// the registry follows each session and user from its first local
	// socket to its last.
	g.reg.router, _ = node.Bus.(sb.Router)
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Auth != nil {
		// Sessions without scopes of their own hold the authenticator's
		// default, on this door as on every other.
		g.cfg.SessionScopes = authn.SessionScopes()
	}
	if err := g.compileSessionDefault(); err != nil {
		return nil, err
	}
	if g.readLimit <= 0 {
		g.readLimit = DefaultReadLimit
	}
	if g.pingInterval <= 0 {
		g.pingInterval = DefaultPingInterval
	}
	if g.pongTimeout <= 0 {
		g.pongTimeout = 2 * g.pingInterval
	}
	if g.writeTimeout <= 0 {
		g.writeTimeout = DefaultWriteTimeout
	}
	if g.sendQueue <= 0 {
		g.sendQueue = DefaultSendQueue
	}
	if g.warning == 0 {
		g.warning = DefaultExpiryWarning
	}
	if g.sweep <= 0 {
		g.sweep = DefaultSweepInterval
	}
	g.maxPerSession = connCap(cfg.MaxConnsPerSession, DefaultMaxConnsPerSession)
	g.maxPerUser = connCap(cfg.MaxConnsPerUser, DefaultMaxConnsPerUser)
	if g.rl, err = newRateLimiter(g, cfg.Limits); err != nil {
		return nil, err
	}
	if cfg.Usage != nil {
		cfg.Usage.Collect(g.collectUsage)
	}
	g.baseCtx, g.cancelConns = context.WithCancel(context.Background())
	g.up = websocket.Upgrader{
		// The read buffer comes from hijacker (ReadBufferSize 0 makes the
		// upgrader use it), so that the read loop can see what it holds.
		ReadBufferSize:  0,
		WriteBufferSize: 1024,
		WriteBufferPool: &sync.Pool{},
		// Origins are checked before the upgrade, with the credential in
		// view; by then the request has passed.
		CheckOrigin: func(*http.Request) bool { return true },
		Error:       func(http.ResponseWriter, *http.Request, int, error) {},
	}
	return g, nil
}

// connCap returns the cap a Config value v asks for: def for zero, none (0)
// for a negative value.
func connCap(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// realNow is wall-clock time for network deadlines, which the runtime
// enforces and an injected clock cannot move.
func (g *Gateway) realNow() time.Time { return time.Now() }

// Handle registers h for client frames of msgType; a later call for the same
// type replaces the handler.
//
// A frame reaches h only when the connection's scopes allow msgType itself,
// as for every frame type (built-in ones included); when scope is not empty
// they must also allow scope, a right the handler asks for beyond the type
// (a scope "chat:write" for "chat.send", say). Otherwise the client gets an
// error frame with code forbidden (and an authz_fail audit). A handler wins
// over Config.Forwarder for its type. Handle panics
// on an empty msgType, a built-in type (ping, session.get, session.update,
// auth.refresh), a msgType or scope that no scope pattern could name
// exactly (see package scope: segments of letters, digits, '_', '-' and ':'
// split on '.'), or a nil h.
func (g *Gateway) Handle(msgType, scope string, h Handler) {
	switch msgType {
	case "", TypePing, TypeSessionGet, TypeSessionUpdate, TypeAuthRefresh:
		panic(fmt.Sprintf("gateway: Handle(%q): reserved or empty frame type", msgType))
	}
	if !literalName(msgType) {
		panic(fmt.Sprintf("gateway: Handle(%q): a frame type is segments of letters, digits, '_', '-' and ':' split on '.'", msgType))
	}
	if scope != "" && !literalName(scope) {
		panic(fmt.Sprintf("gateway: Handle(%q, %q): a scope is segments of letters, digits, '_', '-' and ':' split on '.'", msgType, scope))
	}
	if h == nil {
		panic("gateway: Handle: nil handler")
	}
	g.hmu.Lock()
	g.handlers[msgType] = route{scope: scope, h: h}
	g.hmu.Unlock()
}

// Len returns the number of live connections on this node.
func (g *Gateway) Len() int { return g.reg.len() }

// enter counts an upgrade handler or a background callback in (Shutdown
// waits for them), unless the gateway is shutting down: then it must not
// start anything.
func (g *Gateway) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shutting {
		return false
	}
	g.wg.Add(1)
	return true
}

// refusal is an HTTP answer to an upgrade that is not accepted.
type refusal struct {
	status     int
	code       string
	msg        string
	result     string // metrics Connect label
	reason     string // audit reason
	retryAfter time.Duration
	// rule names the rate limit rule that refused, if one did; policy and
	// state are then its RateLimit-Policy and RateLimit header values.
	rule, policy, state string
}

func (g *Gateway) refuse(w http.ResponseWriter, r *http.Request, ip, method string, rf refusal) {
	g.metrics.Connect(rf.result)
	g.audit.Log(r.Context(), auditAuthnFailed, auditFields{
		IP: ip, UserAgent: r.UserAgent(), Method: method, Reason: rf.reason,
		Source: string(sb.SourceWebSocket), Detail: fmt.Sprintf("upgrade refused with %d", rf.status),
	})
	g.log.Info("gateway: upgrade refused", "status", rf.status, "reason", rf.reason, "ip", ip, "method", method)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if rf.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((rf.retryAfter+time.Second-1)/time.Second)))
	}
	writeRateLimitHeaders(h, rf)
	w.WriteHeader(rf.status)
	b, _ := json.Marshal(struct {
		Error   string `json:"error"`
		Message string `json:"message"`
		Rule    string `json:"rule,omitempty"`
	}{rf.code, rf.msg, rf.rule})
	_, _ = w.Write(append(b, '\n'))
}

var (
	refuseBadRequest = refusal{status: http.StatusBadRequest, code: "bad_request", msg: "expected a WebSocket upgrade (GET with Upgrade: websocket, Sec-WebSocket-Version: 13)", result: "bad_request", reason: "not_websocket"}
	refuseShutdown   = refusal{status: http.StatusServiceUnavailable, code: "unavailable", msg: "server is shutting down", result: "unavailable", reason: "shutdown"}
	refuseStore      = refusal{status: http.StatusServiceUnavailable, code: "unavailable", msg: "authentication is temporarily unavailable", result: "unavailable", reason: "store_unavailable"}
	refuseOrigin     = refusal{status: http.StatusForbidden, code: "origin_not_allowed", msg: "origin not allowed", result: "forbidden", reason: "origin_not_allowed"}
	refuseNoConnect  = refusal{status: http.StatusForbidden, code: "forbidden", msg: "the credential lacks the scope " + sb.ScopeConnect, result: "forbidden", reason: "missing_ws_connect"}
	refuseBadScopes  = refusal{status: http.StatusForbidden, code: "forbidden", msg: "the credential carries an invalid scope pattern", result: "forbidden", reason: "invalid_scopes"}
	refuseAdmin      = refusal{status: http.StatusForbidden, code: "forbidden", msg: "the admin token is for the admin API only; it opens no WebSocket", result: "forbidden", reason: "admin_token"}
)

func unauthorized(reason string) refusal {
	if reason == auth.ErrConflicting.Error() {
		return refusal{status: http.StatusUnauthorized, code: "conflicting_credentials", msg: "the request carries credentials that disagree", result: "unauthorized", reason: reason}
	}
	return refusal{status: http.StatusUnauthorized, code: "unauthorized", msg: "missing or invalid credentials", result: "unauthorized", reason: reason}
}

// tooManyConns answers an upgrade that would pass a connection cap (err is
// errUserCap or errSessionCap).
func tooManyConns(err error) refusal {
	reason := "session_connection_cap"
	if errors.Is(err, errUserCap) {
		reason = "user_connection_cap"
	}
	return refusal{status: http.StatusTooManyRequests, code: "too_many_connections", msg: err.Error(), result: "too_many_connections", reason: reason, retryAfter: connCapRetry}
}

// isUpgrade reports whether r is a well-formed WebSocket upgrade request.
func isUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet &&
		websocket.IsWebSocketUpgrade(r) &&
		r.Header.Get("Sec-WebSocket-Version") == "13" &&
		r.Header.Get("Sec-WebSocket-Key") != ""
}

// ServeHTTP authenticates a WebSocket upgrade, upgrades it and starts the
// connection's read loop. Refusals are plain HTTP answers with a JSON body
// {"error": code, "message": text}.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ip := device.ClientIP(r, g.cfg.TrustedProxies)
	if !g.enter() {
		g.refuse(w, r, ip, "", refuseShutdown)
		return
	}
	defer g.wg.Done()
	if !isUpgrade(r) {
		g.refuse(w, r, ip, "", refuseBadRequest)
		return
	}
	ctx := r.Context()
	ua, method, rf := g.authenticate(r, ip)
	if rf != nil {
		g.refuse(w, r, ip, method, *rf)
		return
	}
	p, cred := ua.res.Principal, ua.res.Credential
	markID, mark := ua.markID, ua.mark
	keyMarkID, keyMark := ua.keyMarkID, ua.keyMark
	sess := p.Session // the bound session as read now, or nil
	if p.Method == auth.MethodAdmin {
		g.refuse(w, r, ip, method, refuseAdmin)
		return
	}
	g.metrics.AuthDuration(method, time.Since(start))
	// Scopes are compiled once, here. A session principal holds its
	// session's (or the default); others hold their credential's.
	sessionScopes := p.Method == sb.AuthSession && sess != nil
	var scopes *scope.Set
	var err error
	if sessionScopes {
		var patterns []string
		patterns, scopes, err = g.sessionScopeSet(sess)
		p.Scopes = slices.Clone(patterns)
	} else {
		var set scope.Set
		set, err = sb.CompileScopes(p.Scopes)
		scopes = &set
	}
	if err != nil {
		g.refuseFor(w, r, ip, method, p, refuseBadScopes)
		return
	}
	if !scopes.Allows(sb.ScopeConnect) {
		// Before any limiter: a refused attempt is never charged.
		g.refuseFor(w, r, ip, method, p, refuseNoConnect)
		return
	}
	if err := g.reg.reserve(p.UserID, p.SessionID, g.maxPerUser, g.maxPerSession); err != nil {
		g.refuseFor(w, r, ip, method, p, tooManyConns(err))
		return
	}
	// The rate limits come last, so that nothing refuses an attempt they
	// charged (see admit).
	lim, lrf := g.admit(ctx, ip, p)
	if lrf != nil {
		g.reg.unreserve(p.UserID, p.SessionID)
		g.refuseFor(w, r, ip, method, p, *lrf)
		return
	}

	c := &Conn{
		g: g, id: newConnID(), connectedAt: g.clock.Now(), held: true, fd: -1,
		// Browser, OS and device type are parsed from the User-Agent only
		// when Context asks: most connections never need them. The client
		// IP was found above already.
		ua: device.CleanUserAgent(r.UserAgent()), ip: ip,
		lim: lim,
	}
	if g.cfg.Metadata != nil {
		c.metadata = g.cfg.Metadata(r, p)
	}
	c.p, c.limits = newConnPrincipal(p)
	c.scopes.Store(scopes)
	c.sessionScopes = sessionScopes
	c.counting = g.cfg.Usage != nil

	hj := &hijacker{ResponseWriter: w}
	ws, err := g.up.Upgrade(hj, r, nil)
	if err != nil {
		g.reg.unreserve(p.UserID, p.SessionID)
		c.lim.release(ctx)
		if hj.hijacked {
			// The handshake answer could not be written: the client is gone.
			g.metrics.Connect("bad_request")
			return
		}
		// The upgrader found something isUpgrade did not; it has not written
		// a response (its Error hook is silent), so answer here.
		g.refuse(w, r, ip, method, refuseBadRequest)
		return
	}
	c.ws = ws
	if hj.br != nil {
		if sc, ok := ws.NetConn().(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				c.br, c.rc, c.fd = hj.br, rc, descriptor(rc)
			}
		}
	}
	g.metrics.Connect("ok")
	g.metrics.ConnOpened(method)
	g.usageOpened(c)

	e, created := g.reg.addReserved(c, p.Session)
	if g.isShutting() {
		// Shutdown began after this upgrade was let in, and may have closed
		// every registered socket before this one was added.
		c.closeWith(CloseGoingAway, ReasonServerShutdown)
	}
	g.startPinger()

	if created && (markID == "" || markID != e.id || g.marks.mark(e.id) != mark) {
		// Events about this session that arrived between the authentication
		// read and the registration reached no entry: read once more so that
		// a revocation in that window is not missed. When the marks show that
		// none arrived, the authentication read is still current: an event
		// arriving from now on finds the entry (HandleEvent notes the mark
		// before it looks the session up), and one published before that read
		// is reflected in it.
		s, err := g.cfg.Manager.Stored(ctx, e.id)
		g.reconcile(e, s, err, sb.SourceSystem)
	}
	g.joinKey(ctx, c, keyMarkID != "" && keyMarkID == p.KeyID, keyMark)
	welcome := welcomeData{
		ConnectionID: c.id, Auth: p.Method, UserID: p.UserID,
		ExpiresAt: timePtr(p.ExpiresAt),
	}
	if e != nil {
		e.mu.Lock()
		if e.closeCode != 0 {
			// This socket joined a session whose sockets are already being
			// closed for a revocation or expiry.
			c.closeWith(e.closeCode, e.closeReason)
		}
		if sessionScopes && !sameScopes(e.sess.Scopes, sess.Scopes) {
			// The session's scopes changed between the authentication
			// read and the registration (or the socket joined an entry
			// that knows a newer version): the entry's are current.
			g.adoptSessionScopesLocked(c, e)
		}
		ps := e.sess.Public()
		welcome.Session = &ps
		if p.Method == sb.AuthSession {
			welcome.ExpiresAt = timePtr(e.sess.Deadline())
		}
		if created {
			g.scheduleLocked(e)
		}
		e.mu.Unlock()
	}
	g.scheduleConnExpiry(c)
	c.mu.Lock()
	welcome.Scopes = c.p.Scopes
	c.mu.Unlock()
	if welcome.Scopes == nil {
		welcome.Scopes = []string{}
	}
	b, err := encodeFrame(TypeWelcome, "", welcome)
	if err != nil {
		g.log.Error("gateway: encoding welcome", "err", err)
		c.closeWith(websocket.CloseInternalServerErr, "internal")
	}
	g.audit.Log(ctx, auditWSConnected, auditFields{
		SessionID: p.SessionID, UserID: p.UserID, ConnectionID: c.id, IP: ip,
		UserAgent: c.ua, Method: method, Source: cred.Source.String(),
	})
	// Checked first: the arguments would be boxed even for a disabled level.
	if g.log.Enabled(ctx, slog.LevelDebug) {
		g.log.Debug("gateway: connected", "connection_id", c.id, "user_id", p.UserID, "session_id", p.SessionID, "method", method)
	}
	if c.release(b) {
		// This goroutine is the writer of the welcome (and of whatever
		// queued behind it), instead of starting one.
		c.writeLoop()
	}
	// Where the idle poller takes the socket, this goroutine becomes the
	// connection's read loop, which parks the socket and ends: a new
	// socket costs no goroutine of its own. Elsewhere the read loop waits
	// in a goroutine of its own, which does not keep this one's frame (the
	// request, a stack grown by the upgrade) for the life of the socket.
	// Frames the client sent meanwhile wait in the socket.
	g.wg.Add(1)
	if c.rc != nil && g.idle.Load() != nil {
		c.readLoop()
		return
	}
	go c.readLoop()
}

// readBufferSize is each socket's read buffer. Frames are small; a larger one
// is read in several system calls. Every byte here is paid by every idle
// socket.
const readBufferSize = 512

// hijacker hands the upgrader a read buffer of readBufferSize that the
// gateway keeps a reference to, and the connection as a heldConn.
type hijacker struct {
	http.ResponseWriter
	br       *bufio.Reader
	hijacked bool
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("gateway: response writer cannot be hijacked")
	}
	conn, brw, err := hj.Hijack()
	h.hijacked = err == nil
	if err != nil || brw.Reader.Buffered() > 0 {
		// The upgrader refuses a client that sent data before the
		// handshake completed.
		return conn, brw, err
	}
	h.br = newReadBuffer(conn)
	return &heldConn{Conn: conn}, bufio.NewReadWriter(h.br, brw.Writer), nil
}

// heldConn holds the upgrade's handshake answer back until the connection's
// first frame (the welcome, or a close frame) is written, so that the two
// leave in one system call instead of two. The upgrader writes the answer
// as its last step and the gateway writes the welcome moments later, so
// nothing waits on the hold; a client that has not received the answer
// sends nothing either. Writes are serialized by the websocket.Conn.
type heldConn struct {
	net.Conn
	// held is the handshake answer while it waits: a slice of the buffer
	// the HTTP server handed over with the connection, which nothing else
	// uses any more, so that the first frame may be appended to it.
	held []byte
	// state is heldHandshake until the answer is written to the conn,
	// heldWaiting while it waits in held, then heldFlushed.
	state uint8
}

const (
	heldHandshake = iota
	heldWaiting
	heldFlushed
)

func (c *heldConn) Write(b []byte) (int, error) {
	switch c.state {
	case heldHandshake:
		c.held, c.state = b, heldWaiting
		return len(b), nil
	case heldWaiting:
		held := c.held
		c.held, c.state = nil, heldFlushed
		var n int64
		var err error
		if len(held)+len(b) <= cap(held) {
			// The frame fits in the rest of the answer's buffer: one
			// plain write, nothing allocated.
			var m int
			m, err = c.Conn.Write(append(held, b...))
			n = int64(m)
		} else {
			bufs := net.Buffers{held, b}
			n, err = bufs.WriteTo(c.Conn)
		}
		// What the caller wrote is what went past the answer.
		return int(max(n-int64(len(held)), 0)), err
	}
	return c.Conn.Write(b)
}

// SyscallConn reaches the socket underneath, for the idle poller.
func (c *heldConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("gateway: connection has no socket")
	}
	return sc.SyscallConn()
}

// scheduleConnExpiry arms the timer that closes a JWT or API-key connection
// when its credential expires (4401 token_expired / api_key_revoked). Session
// connections expire with their session instead.
func (g *Gateway) scheduleConnExpiry(c *Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expTimer != nil {
		c.expTimer.Stop()
		c.expTimer = nil
	}
	if c.closed || c.p.Method == sb.AuthSession || c.kentry != nil || c.p.ExpiresAt.IsZero() {
		// An API key's sockets share its entry's timer (joinKey).
		return
	}
	at := c.p.ExpiresAt
	t := g.clock.AfterFunc(at.Sub(g.clock.Now()), func() {
		if !g.enter() {
			return
		}
		defer g.wg.Done()
		c.mu.Lock()
		due := !c.p.ExpiresAt.After(g.clock.Now()) && c.p.ExpiresAt.Equal(at)
		method := c.p.Method
		c.mu.Unlock()
		if !due {
			return
		}
		reason := ReasonTokenExpired
		if method == sb.AuthAPIKey {
			reason = ReasonAPIKeyRevoked
		}
		c.closeWith(CloseReauthenticate, reason)
	})
	c.expTimer = &credTimer{t}
}

func (g *Gateway) isShutting() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.shutting
}

// startPinger starts the gateway's single keepalive goroutine, once.
func (g *Gateway) startPinger() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pingerStop != nil || g.shutting {
		return
	}
	g.pingerStop, g.pingerDone = make(chan struct{}), make(chan struct{})
	go g.pinger(g.pingerStop, g.pingerDone)
	if g.idle.Load() == nil {
		g.idle.Store(newIdlePoller())
	}
}

// pinger pings every socket each PingInterval from one goroutine, instead of
// a timer per socket.
func (g *Gateway) pinger(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(g.pingInterval)
	defer t.Stop()
	var buf []*Conn
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		buf = g.reg.snapshot(buf[:0])
		for _, c := range buf {
			select {
			case <-stop:
				return
			default:
			}
			// An idle socket takes a ping at once; one whose send buffer
			// stays full for a second is not reading and is dropped, so
			// that one bad peer cannot hold up the pings of all others for
			// long. The second is each socket's own: a round over many
			// sockets on a busy machine takes longer than that, and a
			// deadline shared by the round dropped every socket pinged
			// after it had passed.
			c.ping(g.realNow().Add(min(g.writeTimeout, time.Second)))
		}
		clear(buf)
	}
}

// SendToUser publishes data for every socket of userID on every node; each
// gets a message frame {data}.
func (g *Gateway) SendToUser(ctx context.Context, userID string, data json.RawMessage) error {
	if userID == "" {
		return errors.New("gateway: SendToUser: empty user id")
	}
	return g.publishMessage(ctx, sb.Event{UserID: userID}, data)
}

// SendToSession publishes data for every socket of sessionID on every node;
// each gets a message frame {data}.
func (g *Gateway) SendToSession(ctx context.Context, sessionID string, data json.RawMessage) error {
	if sessionID == "" {
		return errors.New("gateway: SendToSession: empty session id")
	}
	return g.publishMessage(ctx, sb.Event{SessionID: sessionID}, data)
}

func (g *Gateway) publishMessage(ctx context.Context, ev sb.Event, data json.RawMessage) error {
	if len(data) == 0 || !json.Valid(data) {
		return errors.New("gateway: message data must be valid JSON")
	}
	ev.Type, ev.Data = sb.EventMessage, data
	ev.Source, ev.NodeID, ev.Timestamp = sb.SourceAPI, g.nodeID, g.clock.Now()
	if err := g.bus.Publish(ctx, ev); err != nil {
		return fmt.Errorf("gateway: publish message: %w", err)
	}
	return nil
}

// Shutdown refuses new upgrades (503), closes every socket with 1001
// server_shutdown and waits for every connection goroutine to end, or for ctx.
// When ctx ends first, the remaining connections are dropped without a close
// handshake, handler contexts are canceled and ctx's error is returned at once;
// a Handler that ignores its context may then still be running.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	g.shutting = true
	stop, done := g.pingerStop, g.pingerDone
	g.pingerStop = nil
	g.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	g.reg.forAll(func(c *Conn) { c.closeWith(CloseGoingAway, ReasonServerShutdown) })
	waited := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(waited)
	}()
	// The idle poller stops last: sockets closing meanwhile wait in it for
	// their peers' answers.
	defer g.idle.Load().stop()
	select {
	case <-waited:
		g.cancelConns()
		return nil
	case <-ctx.Done():
	}
	g.cancelConns()
	g.reg.forAll(func(c *Conn) { c.abort() })
	return ctx.Err()
}

// SessionCounts returns the number of live connections on this node of each
// session in ids; sessions without connections are absent.
func (g *Gateway) SessionCounts(ctx context.Context, ids []string) (map[string]int, error) {
	out := make(map[string]int, len(ids))
	g.reg.mu.RLock()
	defer g.reg.mu.RUnlock()
	for _, id := range ids {
		if e := g.reg.sessions[id]; e != nil {
			e.mu.Lock()
			if e.n > 0 {
				out[id] = e.n
			}
			e.mu.Unlock()
		}
	}
	return out, nil
}

// UserConnections lists the live connections of userID on this node; an
// empty userID lists all of them.
func (g *Gateway) UserConnections(ctx context.Context, userID string) ([]sb.ConnInfo, error) {
	var out []sb.ConnInfo
	add := func(c *Conn) { out = append(out, c.info(g.nodeID)) }
	if userID == "" {
		g.reg.forAll(add)
	} else {
		g.reg.forUser(userID, add)
	}
	return out, nil
}

var _ sb.Presence = (*Gateway)(nil)

// Presence answers who is connected: on every node when the Manager's
// backend has a cluster presence (which Run keeps current for this node),
// else this node's connections alone (the Gateway itself).
func (g *Gateway) Presence() sb.Presence { return g.presence }

// runPresence starts keeping this node's share of the cluster presence
// current until ctx is done, and returns a function that waits for it to
// have ended; without a cluster presence there is nothing to run.
func (g *Gateway) runPresence(ctx context.Context) (wait func()) {
	if g.cluster == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := g.cluster.Run(ctx); err != nil && ctx.Err() == nil {
			g.log.Error("gateway: presence stopped", "err", err)
		}
	}()
	return func() { <-done }
}
