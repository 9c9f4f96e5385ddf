// Package server wires sessionbridge into a standalone server: the backend
// (memory or Redis), the session Manager, the WebSocket gateway, the HTTP API,
// the dashboard, metrics, and a graceful drain. cmd/sessionbridge runs it, and
// tests build whole servers in-process with it.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/audit"
	"github.com/sessionbridge/sessionbridge/auth"
	"github.com/sessionbridge/sessionbridge/dashboard"
	"github.com/sessionbridge/sessionbridge/device"
	"github.com/sessionbridge/sessionbridge/forward"
	"github.com/sessionbridge/sessionbridge/gateway"
	"github.com/sessionbridge/sessionbridge/httpapi"
	"github.com/sessionbridge/sessionbridge/jwt"
	"github.com/sessionbridge/sessionbridge/keys"
	"github.com/sessionbridge/sessionbridge/limit"
	"github.com/sessionbridge/sessionbridge/metrics"
	"github.com/sessionbridge/sessionbridge/usage"
)

// Defaults of zero Config fields that the packages below do not default
// themselves.
const (
	DefaultRedisPrefix   = "sb:"
	DefaultUsersFile     = "users.json"
	DefaultShutdownGrace = 10 * time.Second
	DefaultReadTimeout   = 30 * time.Second
	// minAdminToken is the admin token length below which New warns.
	minAdminToken = 16
)

// Config is everything a server can be told; each field is a flag of
// `sessionbridge serve` (see docs/configuration.md). The zero value is a
// working single-node server on the memory backend.
type Config struct {
	// RedisURL selects the Redis backend ("redis://host:6379/0"); empty
	// means the in-process memory backend.
	RedisURL string
	// RedisPrefix prefixes every Redis key and channel; default "sb:".
	RedisPrefix string
	// RedisRevocationJournal is how many revocations a node remembers so
	// that a Redis restart that lost them cannot undo them; zero means
	// redis.DefaultRevocationJournal.
	RedisRevocationJournal int
	// RedisUnfollowDelay is how long a node stays subscribed to the events
	// of a session or user after its last local socket left; zero: the
	// redis package's default.
	RedisUnfollowDelay time.Duration
	// NodeID names this node in events and presence; default
	// sessionbridge.NewNodeID's "<hostname>-<random>".
	NodeID string
	// AdminToken enables the admin API under /api/v1/ for bearers of it;
	// empty disables the admin API.
	AdminToken string
	// UsersFile is the users file for password login; default "users.json".
	// A missing file means no users; changes made by `sessionbridge user`
	// are picked up without a restart.
	UsersFile string
	// LoginMaxFailures is how many failed sign-ins a client IP, and a
	// username, may have within LoginFailureWindow before sign-ins under it
	// are refused with 429; zero means 10, negative disables the limit.
	LoginMaxFailures   int
	LoginFailureWindow time.Duration
	// LoginConcurrency bounds the password checks running at once on this
	// node (each holds a core and, with argon2id, 19 MiB); zero means
	// GOMAXPROCS. Sign-ins beyond it wait briefly, then get 429.
	LoginConcurrency int
	// DemoPassword, if set, adds a user "demo" with this password, in
	// memory only.
	DemoPassword string
	// AllowedOrigins are the browser origins, besides the server's own, that
	// may open WebSockets with the cookie and make state-changing requests.
	AllowedOrigins []string
	// TrustedProxies are the proxies (CIDR prefixes or addresses) whose
	// X-Forwarded-For is believed.
	TrustedProxies []string
	// IdleTimeout, AbsoluteTimeout and TouchInterval are the session rules;
	// zero means the sessionbridge defaults (30m, 24h, 1m).
	IdleTimeout     time.Duration
	AbsoluteTimeout time.Duration
	TouchInterval   time.Duration
	// MaxSessionData and MaxDataDepth cap a session's data (bytes of JSON,
	// nesting depth); zero means the sessionbridge defaults (64 KiB, 32).
	MaxSessionData int
	MaxDataDepth   int
	// ExpiryWarning is how long before expiry sockets get session.expiring.
	ExpiryWarning time.Duration
	// InsecureCookies drops the Secure attribute of the session cookie, for
	// plain HTTP on a non-localhost address during development.
	InsecureCookies bool
	// AllowQueryToken accepts ?session_token= on WebSocket upgrades.
	AllowQueryToken bool
	// ReadLimit, PingInterval, SendQueue and SweepInterval tune the gateway;
	// zero means its defaults.
	ReadLimit     int64
	PingInterval  time.Duration
	SendQueue     int
	SweepInterval time.Duration
	// MaxConnsPerSession and MaxConnsPerUser cap the WebSockets of one
	// session and one user on this node; zero means the gateway's defaults,
	// negative no cap.
	MaxConnsPerSession int
	MaxConnsPerUser    int
	// Limits are the default rate limit rules of every principal, which an
	// API key's own limits override (see docs/rate-limits.md); a rule that
	// is zero is off. New refuses limits that do not validate.
	Limits sessionbridge.Limits
	// LoginPerMinute and AdminPerMinute limit the requests of one client IP
	// to POST /auth/login and to the admin API; zero is off, negative is
	// refused. The CLI's defaults are 60 and off.
	LoginPerMinute int
	AdminPerMinute int
	// SessionScopes are the scopes of sessions that have none of their own
	// (set by the admin API or the users file); nil means ["**"], every
	// frame type and ws:connect.
	SessionScopes []string
	// ShutdownGrace bounds the drain on shutdown; default 10s.
	ShutdownGrace time.Duration
	// ReadTimeout bounds reading one HTTP request, headers and body; default
	// 30s. A client that stalls mid-body is cut off instead of holding a
	// connection (and the drain) indefinitely. WebSockets are not affected:
	// the deadline is cleared on the upgrade.
	ReadTimeout time.Duration
	// ExpiryInterval is how often expired sessions are claimed; zero means
	// sessionbridge.DefaultExpiryInterval (1s).
	ExpiryInterval time.Duration
	// KeyExpiryInterval is how often expired API keys are claimed, which
	// publishes apikey:expired at most this long after a key's expiry;
	// zero means sessionbridge.DefaultKeyExpiryInterval (10s).
	KeyExpiryInterval time.Duration
	// KeyMaxTTL caps the lifetime of API keys, including keys created
	// without a TTL; zero means keys may live for ever.
	KeyMaxTTL time.Duration
	// KeyOwners says when an API key's owner counts as deleted, which stops
	// the key: KeyOwnersAuto (the default, "" too) while the users file
	// exists, when its owner is not a user of it; KeyOwnersUsers always so;
	// KeyOwnersAny never (the application revokes a deleted user's keys).
	KeyOwners string
	// JWT configures bearer JWTs on WebSocket upgrades; without a key
	// source JWTs are refused.
	JWT JWTConfig
	// TLSCertFile and TLSKeyFile, when both set, make Run serve HTTPS.
	TLSCertFile string
	TLSKeyFile  string
	// Forward hands the frames of the application's own types to its HTTP
	// endpoint (gateway mode; see docs/forwarding.md); off without a URL.
	Forward ForwardConfig
	// UsageFlushInterval is how often the node writes the usage it counted
	// (docs/usage.md): one write per interval whatever the traffic, and at
	// most one interval lost in a crash; zero means
	// usage.DefaultFlushInterval (1s).
	UsageFlushInterval time.Duration
}

// ForwardConfig says which client frames go to the application's HTTP
// endpoint and how. URL, Secret and Types go together; zero values of the
// others mean the defaults of packages forward and gateway.
type ForwardConfig struct {
	// URL is the application's endpoint, http:// or https://.
	URL string
	// Secret signs every request; at least 32 bytes.
	Secret string
	// Types are the scope patterns of the forwarded frame types.
	Types []string
	// Timeout bounds one request, answer included (default 5s).
	Timeout time.Duration
	// InFlight bounds the frames of one connection waiting for an answer
	// (default 8); MaxInFlight those of the node (default 1024).
	InFlight    int
	MaxInFlight int
}

// newForwarder checks c and returns its forwarder, or nil when forwarding
// is off.
func newForwarder(c ForwardConfig, logger *slog.Logger) (*forward.HTTP, error) {
	switch {
	case c.URL == "" && (c.Secret != "" || len(c.Types) > 0):
		return nil, errors.New("server: a forward secret or forward types are set but no forward URL")
	case c.URL == "":
		return nil, nil
	case len(c.Types) == 0:
		return nil, errors.New("server: a forward URL is set but no forward types: nothing would be forwarded")
	case strings.TrimSpace(c.Secret) != c.Secret:
		// Most likely a stray newline from a file: the application would
		// never verify a signature made with it.
		return nil, errors.New("server: the forward secret starts or ends with white space")
	}
	return forward.New(forward.Config{
		URL: c.URL, Secret: []byte(c.Secret), Timeout: c.Timeout, MaxInFlight: c.MaxInFlight, Logger: logger,
	})
}

// JWTConfig says which JWTs the gateway accepts; the fields mean what those
// of jwt.Config do. Leeway zero means none (exact clocks): the CLI's default
// is jwt.DefaultLeeway.
type JWTConfig struct {
	Secret         string
	PublicKeyFiles []string
	JWKSURL        string
	JWKSFile       string
	Audience       string
	Issuer         string
	Leeway         time.Duration
	Algorithms     []string
}

func (c JWTConfig) enabled() bool {
	return c.Secret != "" || len(c.PublicKeyFiles) > 0 || c.JWKSURL != "" || c.JWKSFile != ""
}

// Server is one sessionbridge node. Create it with New, serve with Run,
// release it with Close.
type Server struct {
	cfg      Config
	logger   *slog.Logger
	backend  backend
	manager  *sessionbridge.Manager
	keys     *keys.Manager
	gateway  *gateway.Gateway
	auth     *auth.Authenticator
	jwt      *jwt.Verifier
	users    *userSource
	fwd      *forward.HTTP
	usage    *usage.Recorder
	usageCol *usageCollector
	registry *prometheus.Registry
	handler  http.Handler

	closeOnce sync.Once
}

// New builds a server from cfg: it connects the backend, loads the users file
// and the JWT keys, and assembles the routes. It starts no goroutine that
// outlives a failed New; call Close when done with a Server that was never
// Run.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.RedisPrefix == "" {
		cfg.RedisPrefix = DefaultRedisPrefix
	}
	if cfg.UsersFile == "" {
		cfg.UsersFile = DefaultUsersFile
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		return nil, errors.New("server: TLS needs both a certificate and a key file")
	}
	if cfg.UsageFlushInterval < 0 {
		return nil, errors.New("server: the usage flush interval must not be negative")
	}
	if cfg.KeyMaxTTL < 0 {
		return nil, errors.New("server: the maximum API key lifetime must not be negative")
	}
	if err := CheckLimits(cfg); err != nil {
		return nil, err
	}
	switch cfg.KeyOwners {
	case "":
		cfg.KeyOwners = KeyOwnersAuto
	case KeyOwnersAuto, KeyOwnersUsers, KeyOwnersAny:
	default:
		return nil, fmt.Errorf("server: key owners must be %s, %s or %s, not %q", KeyOwnersAuto, KeyOwnersUsers, KeyOwnersAny, cfg.KeyOwners)
	}
	trusted, err := device.ParsePrefixes(cfg.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("server: trusted proxies: %w", err)
	}
	if _, err := auth.ParseOrigins(cfg.AllowedOrigins); err != nil {
		return nil, fmt.Errorf("server: allowed origins: %w", err)
	}

	if strings.TrimSpace(cfg.AdminToken) != cfg.AdminToken {
		// An Authorization header cannot carry it (its value is trimmed), so
		// the admin API would refuse every request; most likely a stray
		// newline from a file or an editor.
		return nil, errors.New("server: the admin token starts or ends with white space")
	}
	if cfg.AdminToken != "" && len(cfg.AdminToken) < minAdminToken {
		// Not refused, so that a development setup stays easy; said loudly.
		logger.Warn("the admin token is short: anyone who guesses it controls every session; use at least 32 random characters", "length", len(cfg.AdminToken))
	}

	s := &Server{cfg: cfg, logger: logger, registry: prometheus.NewRegistry()}
	s.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m := metrics.New(s.registry)
	auditLog := audit.New(logger)

	users, err := newUserSource(cfg.UsersFile, cfg.DemoPassword, logger)
	if err != nil {
		return nil, fmt.Errorf("server: users file: %w", err)
	}
	s.users = users

	if s.backend, err = newBackend(ctx, cfg, logger, m); err != nil {
		return nil, fmt.Errorf("server: backend: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()

	// The node: one backend, owned by the Manager, from which the
	// authenticator, the gateway and the API take their pieces. Session
	// writes are counted on their way to the store.
	node := s.backend.Node
	node.Store = countingStore{Store: node.Store, m: m}
	if s.manager, err = sessionbridge.NewManager(node); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.manager.IdleTimeout, s.manager.AbsoluteTimeout, s.manager.TouchInterval = cfg.IdleTimeout, cfg.AbsoluteTimeout, cfg.TouchInterval
	s.manager.MaxDataBytes, s.manager.MaxDataDepth = cfg.MaxSessionData, cfg.MaxDataDepth
	s.manager.ExpiryInterval, s.manager.KeyExpiryInterval = cfg.ExpiryInterval, cfg.KeyExpiryInterval
	s.manager.Logger = logger
	node = s.manager.Backend()
	s.usage = usage.NewRecorder(s.backend.Usage, usage.RecorderOptions{FlushInterval: cfg.UsageFlushInterval, Logger: logger, Node: node.NodeID})
	s.usageCol = newUsageCollector(s.usage, s.backend.Usage, logger)
	s.registry.MustRegister(s.usageCol)
	s.keys = &keys.Manager{Store: node.Keys, MaxTTL: cfg.KeyMaxTTL, Cache: &keys.Cache{}, NodeID: node.NodeID}
	if cfg.KeyOwners != KeyOwnersAny {
		s.keys.Owners = keyOwners{users: users, always: cfg.KeyOwners == KeyOwnersUsers}
	}
	var jwtVerifier sessionbridge.TokenVerifier
	if cfg.JWT.enabled() {
		s.jwt, err = jwt.New(ctx, jwt.Config{
			HMACSecret: []byte(cfg.JWT.Secret), PublicKeyFiles: cfg.JWT.PublicKeyFiles,
			JWKSURL: cfg.JWT.JWKSURL, JWKSFile: cfg.JWT.JWKSFile,
			Algorithms: cfg.JWT.Algorithms, Audience: cfg.JWT.Audience, Issuer: cfg.JWT.Issuer,
			Leeway: cfg.JWT.Leeway, Logger: logger,
		})
		if err != nil {
			return nil, fmt.Errorf("server: jwt: %w", err)
		}
		jwtVerifier = s.jwt
	}
	if s.fwd, err = newForwarder(cfg.Forward, logger); err != nil {
		return nil, err
	}
	var forwarder forward.Forwarder
	if s.fwd != nil {
		forwarder = s.fwd
		logger.Info("forwarding application frames", "types", strings.Join(cfg.Forward.Types, ","), "url", s.fwd.Endpoint())
	}
	// One authenticator for both doors: the same credentials, precedence,
	// conflict rule and origin policy on HTTP and on /ws.
	s.auth, err = auth.New(auth.Config{
		Sessions: s.manager, JWT: jwtVerifier, Keys: s.keys,
		AdminToken: cfg.AdminToken, AllowedOrigins: cfg.AllowedOrigins, AllowQueryToken: cfg.AllowQueryToken,
		SessionScopes: cfg.SessionScopes,
	})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	rl := newRateLimits(cfg, s.backend, m, logger)
	s.gateway, err = gateway.New(gateway.Config{
		Manager: s.manager, Auth: s.auth, TrustedProxies: trusted,
		KeyStore: s.keys, KeyEvents: s.keys.Cache,
		ReadLimit: cfg.ReadLimit, PingInterval: cfg.PingInterval, SendQueue: cfg.SendQueue,
		ExpiryWarning: cfg.ExpiryWarning, SweepInterval: cfg.SweepInterval,
		MaxConnsPerSession: cfg.MaxConnsPerSession, MaxConnsPerUser: cfg.MaxConnsPerUser,
		Limits:    rl.gateway,
		Forwarder: forwarder, ForwardTypes: cfg.Forward.Types, ForwardInFlight: cfg.Forward.InFlight,
		Usage:  s.usage,
		Logger: logger, Audit: auditLog, Metrics: m,
	})
	if err != nil {
		return nil, fmt.Errorf("server: gateway: %w", err)
	}

	var limiter limit.Failures
	if cfg.LoginMaxFailures >= 0 {
		fl := &httpapi.FailureLimiter{Max: cfg.LoginMaxFailures, Window: cfg.LoginFailureWindow}
		limiter = fl
		if s.backend.LoginFailures != nil {
			// On Redis the count is the cluster's: N nodes must not make
			// N times the limit.
			limiter = s.backend.LoginFailures(fl.Limit(), fl.Period())
		}
	}
	api := &httpapi.API{
		Sessions: &httpapi.Sessions{
			Manager: s.manager, Auth: s.auth, Insecure: cfg.InsecureCookies, TrustedProxies: trusted,
			Audit: auditLog, Logger: logger,
		},
		Users: s.users, LoginLimiter: limiter, RequestLimits: rl.requests, LoginConcurrency: cfg.LoginConcurrency, Presence: s.gateway.Presence(), Publisher: s.gateway, Keys: s.keys,
		Usage: s.backend.Usage,
		Ready: s.manager.Ping, ReadyDetails: s.backend.Details, Audit: auditLog, Logger: logger,
	}
	apiHandler := api.Handler()
	mux := http.NewServeMux()
	mux.Handle("/ws", s.gateway)
	mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}))
	mux.Handle("/auth/", apiHandler)
	mux.Handle("/api/", apiHandler)
	mux.Handle("/healthz", apiHandler)
	mux.Handle("/readyz", apiHandler)
	mux.Handle("/openapi.json", apiHandler)
	mux.Handle("/", dashboard.Handler())
	s.handler = mux
	ok = true
	return s, nil
}

// Handler returns the server's routes: /ws, /metrics, /healthz, /readyz,
// /openapi.json, the API under /auth/ and /api/v1/, and the dashboard at /.
func (s *Server) Handler() http.Handler { return s.handler }

// Manager returns the session manager, for tests and embedding programs.
func (s *Server) Manager() *sessionbridge.Manager { return s.manager }

// Keys returns the API key manager, for tests and embedding programs.
func (s *Server) Keys() *keys.Manager { return s.keys }

// Usage returns the usage Recorder, for tests and embedding programs.
func (s *Server) Usage() *usage.Recorder { return s.usage }

// Gateway returns the WebSocket gateway, for SendToUser and the like.
func (s *Server) Gateway() *gateway.Gateway { return s.gateway }

// NodeID returns the node's ID.
func (s *Server) NodeID() string { return s.manager.NodeID() }

// Run serves on ln until ctx is done, together with the node's background
// work: the Manager's (expiry claims), the gateway's (event subscription,
// sweeps, presence) and the server's own.
// When ctx is done it drains: it stops accepting, closes every WebSocket with
// 1001 server_shutdown, waits for HTTP requests in flight, all within
// ShutdownGrace, and returns nil after a clean drain. If serving fails it
// drains the same way and returns the error. Run a Server once; Close it
// after Run returns.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: min(10*time.Second, s.cfg.ReadTimeout),
		ReadTimeout:       s.cfg.ReadTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
	}
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.gateway.Run(bg); err != nil && bg.Err() == nil {
			s.logger.Error("gateway stopped", "err", err)
		}
	})
	wg.Go(func() { _ = s.manager.Run(bg) })
	// The usage Recorder stops with the background work, after the drain:
	// its last flush holds the sockets the drain closed.
	wg.Go(func() { _ = s.usage.Run(bg) })
	wg.Go(func() { s.usageCol.run(bg) })
	if s.backend.Run != nil {
		wg.Go(func() { s.backend.Run(bg) })
	}
	defer func() {
		stopBG()
		wg.Wait()
	}()

	served := make(chan error, 1)
	go func() {
		if s.cfg.TLSCertFile != "" {
			served <- srv.ServeTLS(ln, s.cfg.TLSCertFile, s.cfg.TLSKeyFile)
			return
		}
		served <- srv.Serve(ln)
	}()
	var serveErr error
	select {
	case serveErr = <-served:
		// The listener failed: drain what is open all the same.
		s.logger.Error("serving failed", "err", serveErr)
	case <-ctx.Done():
	}

	s.logger.Info("draining", "grace", s.cfg.ShutdownGrace, "connections", s.gateway.Len())
	drain, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownGrace)
	defer cancel()
	// Shutdown closes the listener at once, so no upgrade can start while
	// the gateway closes its sockets; hijacked WebSockets are the gateway's.
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Shutdown(drain) }()
	gwErr := s.gateway.Shutdown(drain)
	httpErr := <-httpDone
	if serveErr == nil {
		<-served
	}
	if httpErr != nil {
		srv.Close()
	}
	if serveErr != nil {
		return fmt.Errorf("server: serving: %w", serveErr)
	}
	if err := errors.Join(gwErr, httpErr); err != nil {
		return fmt.Errorf("server: drain: %w", err)
	}
	s.logger.Info("drained")
	return nil
}

// Close releases the backend, the JWT verifier and the forwarder's idle
// connections. It is safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		if s.jwt != nil {
			s.jwt.Close()
		}
		if s.fwd != nil {
			s.fwd.Close()
		}
		if s.backend.Close != nil {
			s.backend.Close()
		}
	})
}

// UserCount returns the number of users who can sign in with a password.
func (s *Server) UserCount() int { return s.users.Len() }
