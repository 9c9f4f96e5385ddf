package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/sessionbridge/sessionbridge/internal/logbuf"
	"github.com/sessionbridge/sessionbridge/internal/server"
	"github.com/sessionbridge/sessionbridge/internal/strictjson"
	"github.com/sessionbridge/sessionbridge/jwt"
	sbusage "github.com/sessionbridge/sessionbridge/usage"
	"github.com/sessionbridge/sessionbridge/users"
)

// serveFlags holds the values of `sessionbridge serve`.
type serveFlags struct {
	cfg            server.Config
	addr           string
	demo           bool
	allowedOrigins string
	trustedProxies string
	sessionScopes  string
	jwtAlgorithms  string
	jwtKeys        listFlag
	logLevel       string
	logFormat      string
	logFlush       time.Duration
	forwardTypes   string
	limitDryRun    string
	debugAddr      string
}

func newServeFlags(stderr io.Writer) (*flag.FlagSet, *serveFlags) {
	fs := flag.NewFlagSet("sessionbridge serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &serveFlags{}
	c := &f.cfg
	fs.StringVar(&f.addr, "addr", ":8080", "address to listen on (host:port; port 0 picks a free one)")
	fs.StringVar(&c.RedisURL, "redis-url", "", "Redis URL for cluster mode (redis://host:6379/0); empty runs on the in-process memory backend")
	fs.StringVar(&c.RedisPrefix, "redis-prefix", server.DefaultRedisPrefix, "prefix of every Redis key and channel")
	fs.IntVar(&c.RedisRevocationJournal, "redis-revocation-journal", 0, "revocations each node remembers, so that a Redis restart that lost them cannot undo them (default 100000, about 64 bytes each)")
	fs.DurationVar(&c.RedisUnfollowDelay, "redis-unfollow-delay", 0, "how long a node stays subscribed to a session's or user's events after its last socket there left (default 10s)")
	fs.StringVar(&c.NodeID, "node-id", "", "name of this node in events and presence (default <hostname>-<random>)")
	fs.StringVar(&c.AdminToken, "admin-token", "", "bearer token of the admin API; empty disables the admin API (prefer the environment variable: flags show in ps)")
	fs.StringVar(&c.UsersFile, "users", server.DefaultUsersFile, "users file for password login (see `sessionbridge user add`)")
	fs.IntVar(&c.LoginMaxFailures, "login-max-failures", 10, "failed sign-ins allowed per client IP and per username within --login-failure-window; negative disables the limit")
	fs.DurationVar(&c.LoginFailureWindow, "login-failure-window", 5*time.Minute, "how long failed sign-ins are remembered")
	fs.IntVar(&c.LoginConcurrency, "login-concurrency", 0, "password checks run at once; more sign-ins wait briefly, then get 429 (default GOMAXPROCS)")
	fs.BoolVar(&f.demo, "demo", false, "add a user \"demo\" with a random password, printed once; in memory only (when not given: only if there are no users, no admin token, no JWT keys and no Redis URL)")
	fs.StringVar(&f.allowedOrigins, "allowed-origins", "", "comma-separated browser origins besides the server's own (https://app.example.com, https://*.example.com)")
	fs.StringVar(&f.trustedProxies, "trusted-proxies", "", "comma-separated proxy addresses or CIDR prefixes whose X-Forwarded-For is believed")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 0, "session idle timeout (default 30m)")
	fs.DurationVar(&c.AbsoluteTimeout, "absolute-timeout", 0, "session absolute lifetime (default 24h)")
	fs.DurationVar(&c.TouchInterval, "touch-interval", 0, "least time between two recorded activities of a session (default 1m)")
	fs.IntVar(&c.MaxSessionData, "max-session-data", 0, "largest session data, in bytes of JSON, on create and after each update (default 65536)")
	fs.IntVar(&c.MaxDataDepth, "max-data-depth", 0, "deepest nesting of arrays and objects in session data (default 32; at most 128)")
	fs.DurationVar(&c.ExpiryWarning, "expiry-warning", 0, "lead time of the session.expiring frame (default 60s; negative disables it)")
	fs.BoolVar(&c.InsecureCookies, "insecure-cookies", false, "session cookie without the Secure attribute, for plain HTTP on hosts other than localhost")
	fs.BoolVar(&c.InsecureCookies, "dev", false, "development mode: same as --insecure-cookies")
	fs.BoolVar(&c.AllowQueryToken, "allow-query-token", false, "accept ?session_token= on WebSocket upgrades (URLs end up in logs; prefer tickets)")
	fs.Int64Var(&c.ReadLimit, "read-limit", 0, "largest WebSocket frame a client may send, in bytes (default 65536)")
	fs.DurationVar(&c.PingInterval, "ping-interval", 0, "WebSocket keepalive ping interval (default 30s)")
	fs.IntVar(&c.SendQueue, "send-queue", 0, "pushed frames that may wait for a slow socket before it is closed (default 64)")
	fs.IntVar(&c.MaxConnsPerSession, "max-conns-per-session", 0, "live WebSockets one session may hold on this node (default 100; negative: no cap)")
	fs.IntVar(&c.MaxConnsPerUser, "max-conns-per-user", 0, "live WebSockets one user may hold on this node (default 500; negative: no cap)")
	fs.IntVar(&c.Limits.ConnectsPerMinute, "limit-connects-per-minute", 0, "WebSocket upgrades a minute per client IP, per user and per API key, exact across the cluster (0: off; a burst of the whole minute's worth)")
	fs.IntVar(&c.Limits.MaxConnections, "limit-max-connections", 0, "live WebSockets per user and per API key across the cluster (0: off; --max-conns-per-user still caps each node)")
	fs.IntVar(&c.Limits.FramesPerSecond, "limit-frames-per-second", 100, "frames a second one WebSocket may send, bursts of twice as many (0: off)")
	fs.IntVar(&c.Limits.BytesPerSecond, "limit-bytes-per-second", 1<<20, "bytes a second one WebSocket may send, bursts of twice as many (0: off)")
	fs.IntVar(&c.Limits.KeyFramesPerSecond, "limit-key-frames-per-second", 0, "frames a second all the WebSockets of one API key may send, across the cluster (0: off)")
	fs.IntVar(&c.Limits.UserFramesPerSecond, "limit-user-frames-per-second", 0, "frames a second all the WebSockets of one user may send, across the cluster (0: off)")
	fs.StringVar(&f.limitDryRun, "limit-dry-run", "", "comma-separated rules that are counted and logged but not enforced (connects_per_minute, max_connections, frames_per_second, ...)")
	fs.IntVar(&c.LoginPerMinute, "limit-login-per-minute", 60, "POST /auth/login requests a minute per client IP, on top of --login-max-failures (0: off)")
	fs.IntVar(&c.AdminPerMinute, "limit-admin-per-minute", 0, "admin API requests a minute per client IP (0: off)")
	fs.StringVar(&f.sessionScopes, "session-scopes", "", "comma-separated scope patterns of sessions that have none of their own (default **: every frame type and ws:connect)")
	fs.DurationVar(&c.SweepInterval, "sweep-interval", 0, "how often local sessions are re-validated against the store, a backstop to the re-validation after every subscription gap (default 2m)")
	fs.DurationVar(&c.UsageFlushInterval, "usage-flush-interval", sbusage.DefaultFlushInterval, "how often the node writes the usage it counted, in one batch (a crash loses at most this much)")
	fs.DurationVar(&c.KeyMaxTTL, "key-max-ttl", 0, "longest lifetime of an API key, also for keys created without a TTL (default: keys may live for ever)")
	fs.StringVar(&c.KeyOwners, "key-owners", server.KeyOwnersAuto, "when an API key stops because its owner is gone: auto (not a user of the users file, while that file exists), users (always checked against the users file), any (never; the application revokes a deleted user's keys)")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", server.DefaultShutdownGrace, "longest drain on SIGINT/SIGTERM")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", server.DefaultReadTimeout, "longest time to read one HTTP request, headers and body (WebSockets are not affected)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.DurationVar(&f.logFlush, "log-flush-interval", logbuf.DefaultInterval, "longest time a log or audit record waits in memory to be written together with others; 0 writes each at once")
	fs.StringVar(&f.debugAddr, "debug-addr", "", "loopback address serving Go's runtime profiles at /debug/pprof/ (empty: off)")
	fs.StringVar(&c.JWT.Secret, "jwt-secret", "", "HMAC secret for HS256/384/512 JWTs (at least 32 bytes)")
	fs.Var(&f.jwtKeys, "jwt-public-key", "PEM file of a JWT public key (repeatable)")
	fs.StringVar(&c.JWT.JWKSURL, "jwks-url", "", "URL of a JWK Set, refreshed periodically")
	fs.StringVar(&c.JWT.JWKSFile, "jwks-file", "", "file holding a JWK Set")
	fs.StringVar(&c.JWT.Audience, "jwt-audience", "", "required JWT audience")
	fs.StringVar(&c.JWT.Issuer, "jwt-issuer", "", "required JWT issuer")
	fs.DurationVar(&c.JWT.Leeway, "jwt-leeway", jwt.DefaultLeeway, "clock skew tolerated on JWT times; 0 means none")
	fs.StringVar(&f.jwtAlgorithms, "jwt-algorithms", "", "comma-separated allowed JWT algorithms (default: every one the keys can verify)")
	fs.StringVar(&c.TLSCertFile, "tls-cert", "", "TLS certificate file (with --tls-key: serve HTTPS)")
	fs.StringVar(&c.TLSKeyFile, "tls-key", "", "TLS private key file")
	fs.StringVar(&c.Forward.URL, "forward-url", "", "HTTP endpoint of the application that receives the frames of --forward-types (http:// or https://)")
	fs.StringVar(&c.Forward.Secret, "forward-secret", "", "shared secret that signs forwarded frames, at least 32 bytes (prefer the environment variable: flags show in ps)")
	fs.StringVar(&f.forwardTypes, "forward-types", "", "comma-separated scope patterns of the frame types forwarded to --forward-url (chat.**,game.*)")
	fs.DurationVar(&c.Forward.Timeout, "forward-timeout", 0, "longest wait for the application's answer to one forwarded frame (default 5s)")
	fs.IntVar(&c.Forward.InFlight, "forward-in-flight", 0, "forwarded frames of one connection that may wait for an answer at once (default 8)")
	fs.IntVar(&c.Forward.MaxInFlight, "forward-max-in-flight", 0, "forwarded frames of this node that may wait for an answer at once (default 1024)")
	return fs, f
}

// checkDataCaps refuses session data caps that cannot work: negative ones,
// and a depth that input read from the network could never reach.
func checkDataCaps(c server.Config) error {
	if c.MaxSessionData < 0 {
		return fmt.Errorf("--max-session-data %d: must not be negative", c.MaxSessionData)
	}
	if c.MaxDataDepth < 0 || c.MaxDataDepth > strictjson.MaxDepth {
		return fmt.Errorf("--max-data-depth %d: must be 0 (the default) to %d", c.MaxDataDepth, strictjson.MaxDepth)
	}
	return nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, f := newServeFlags(stderr)
	pos, err := parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "sessionbridge serve: %v\n", err)
		return exitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "sessionbridge serve: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	if err := checkDataCaps(f.cfg); err != nil {
		fmt.Fprintf(stderr, "sessionbridge serve: %v\n", err)
		return exitUsage
	}
	if f.logFlush < 0 {
		fmt.Fprintf(stderr, "sessionbridge serve: --log-flush-interval %v: must not be negative\n", f.logFlush)
		return exitUsage
	}
	// From here on everything serve writes to standard error, logs, audit
	// records and start-up lines alike, goes through one buffer, in order:
	// a connect storm's audit records cost a write per interval, not one
	// each. Close writes out the rest when serve returns.
	logOut := logbuf.New(stderr, f.logFlush, 0)
	defer logOut.Close()
	stderr = logOut
	logger, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "sessionbridge serve: %v\n", err)
		return exitUsage
	}
	cfg := f.cfg
	cfg.AllowedOrigins = splitList(f.allowedOrigins)
	cfg.TrustedProxies = splitList(f.trustedProxies)
	cfg.SessionScopes = splitList(f.sessionScopes)
	cfg.JWT.Algorithms = splitList(f.jwtAlgorithms)
	cfg.JWT.PublicKeyFiles = f.jwtKeys
	cfg.Forward.Types = splitList(f.forwardTypes)
	cfg.Limits.DryRun = splitList(f.limitDryRun)
	if err := server.CheckLimits(cfg); err != nil {
		fmt.Fprintf(stderr, "sessionbridge serve: %v (see the --limit-* flags)\n", err)
		return exitUsage
	}
	// With nothing configured (no explicit --demo either way, the memory
	// backend, no admin API, no JWT keys, no users yet) a plain
	// `sessionbridge serve` would offer nobody a way in; a throw-away demo
	// user makes it usable in one command. Any of those settings means a real
	// deployment, where an unexpected extra user would be a hazard.
	jwtKeys := cfg.JWT.Secret != "" || len(cfg.JWT.PublicKeyFiles) > 0 || cfg.JWT.JWKSURL != "" || cfg.JWT.JWKSFile != ""
	auto := !f.demo && !demoGiven(fs) && cfg.RedisURL == "" && cfg.AdminToken == "" && !jwtKeys && noUsers(cfg.UsersFile)
	if f.demo || auto {
		if cfg.DemoPassword, err = randomPassword(); err != nil {
			fmt.Fprintf(stderr, "sessionbridge serve: %v\n", err)
			return exitError
		}
	}

	var debugLn net.Listener
	if f.debugAddr != "" {
		if err := checkDebugAddr(f.debugAddr); err != nil {
			fmt.Fprintf(stderr, "sessionbridge serve: %v\n", err)
			return exitUsage
		}
		var lc net.ListenConfig
		if debugLn, err = lc.Listen(ctx, "tcp", f.debugAddr); err != nil {
			fmt.Fprintf(stderr, "sessionbridge serve: --debug-addr: %v\n", err)
			return exitError
		}
		defer debugLn.Close()
	}

	srv, err := server.New(ctx, cfg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "sessionbridge serve: %v\n", err)
		return exitError
	}
	defer srv.Close()
	if debugLn != nil {
		dctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			serveDebug(dctx, debugLn, logger)
		}()
		defer func() { stop(); <-done }()
		fmt.Fprintf(stderr, "sessionbridge: runtime profiles on http://%s/debug/pprof/\n", debugLn.Addr())
	}
	// No TCP keep-alive probes: idle HTTP connections end at the server's
	// IdleTimeout and sockets at the gateway's ping deadline, so the probes
	// would only cost several setsockopt calls on every accepted connection.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", f.addr)
	if err != nil {
		fmt.Fprintf(stderr, "sessionbridge serve: %v\n", err)
		return exitError
	}
	tls := cfg.TLSCertFile != ""
	u := baseURL(ln.Addr(), tls)
	fmt.Fprintf(stderr, "sessionbridge: listening on %s (node %s)\n", u, srv.NodeID())
	switch {
	case f.demo || auto:
		fmt.Fprintf(stdout, "Demo user: %s  password: %s  (in memory only; shown once)\n", server.DemoUser, cfg.DemoPassword)
		fmt.Fprintf(stderr, "sessionbridge: sign in at %s/\n", u)
		if auto {
			fmt.Fprintf(stderr, "sessionbridge: the demo user exists because %s has no users; add real ones with\n  sessionbridge user add <name> --users %s\nand start with --demo=false to go without it.\n", cfg.UsersFile, cfg.UsersFile)
		}
	case srv.UserCount() == 0:
		fmt.Fprintf(stderr, "sessionbridge: the users file %s has no users yet; add one (the running server picks it up):\n  sessionbridge user add <name> --users %s\nor restart with --demo for a throw-away demo user.\n", cfg.UsersFile, cfg.UsersFile)
	default:
		fmt.Fprintf(stderr, "sessionbridge: sign in at %s/ with a user of %s\n", u, cfg.UsersFile)
	}
	if cfg.AdminToken == "" {
		fmt.Fprintln(stderr, "sessionbridge: no admin token: /api/v1/ takes only JWTs and API keys with an admin scope; set SESSIONBRIDGE_ADMIN_TOKEN (or --admin-token) for a shared token")
	}
	if !tls && !cfg.InsecureCookies && !localOrAny(ln.Addr()) {
		fmt.Fprintln(stderr, "sessionbridge: plain HTTP with Secure cookies: browsers keep them on http://localhost only; use --tls-cert/--tls-key, or --dev for plain HTTP on other hosts")
	}

	if err := srv.Run(ctx, ln); err != nil {
		logger.Error("server stopped", "err", err)
		return exitError
	}
	return exitOK
}

// demoGiven reports whether --demo was set on the command line or through
// its environment variable, either way.
func demoGiven(fs *flag.FlagSet) bool {
	given := false
	fs.Visit(func(fl *flag.Flag) { given = given || fl.Name == "demo" })
	_, env := os.LookupEnv(envName("demo"))
	return given || env
}

// noUsers reports whether the users file at path is missing or holds no
// users. A file that cannot be read counts as having users: server.New then
// reports the problem.
func noUsers(path string) bool {
	f, err := users.Load(path)
	return err == nil && f.Len() == 0
}

// baseURL is the URL a local browser reaches the listener at.
func baseURL(a net.Addr, tls bool) string {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return scheme + "://" + a.String()
	}
	host := ap.Addr().Unmap().String()
	if ap.Addr().IsUnspecified() {
		host = "localhost"
	} else if ap.Addr().Unmap().Is6() {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("%s://%s:%d", scheme, host, ap.Port())
}

// localOrAny reports whether the listener is on a loopback address, or on all
// addresses (where a newcomer uses http://localhost). Only a listener bound to
// one other address is certainly reached under a name browsers do not treat
// as secure.
func localOrAny(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && (ap.Addr().IsLoopback() || ap.Addr().IsUnspecified())
}

// randomPassword returns 128 random bits, base64url-encoded.
func randomPassword() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating the demo password: %w", err)
	}
	return strings.TrimRight(base64.RawURLEncoding.EncodeToString(b[:]), "="), nil
}
