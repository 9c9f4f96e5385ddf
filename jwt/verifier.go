package jwt

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/strictjson"
)

// Defaults for the zero values of [Config].
const (
	// DefaultLeeway is the clock skew the server tolerates on exp, nbf and
	// iat unless told otherwise; a sensible Config.Leeway.
	DefaultLeeway = 30 * time.Second
	// DefaultJWKSRefresh is how often a JWKS URL is fetched again.
	DefaultJWKSRefresh = 10 * time.Minute
	// DefaultJWKSMinRefresh is the least time between two fetches caused by
	// tokens naming a kid we do not know.
	DefaultJWKSMinRefresh = 30 * time.Second
	// DefaultScopeClaim is the claim read for scopes when Config.ScopeClaim is
	// empty.
	DefaultScopeClaim = "scope"
	// MaxTokenLen is the longest token Verify parses; longer ones are
	// rejected as malformed before any decoding.
	MaxTokenLen = 8 << 10
)

// Internal bounds on work an attacker can make us do.
const (
	// maxCandidates bounds the keys tried for a token without a usable kid.
	maxCandidates = 8
	// defaultHTTPTimeout bounds a JWKS request with the default client.
	defaultHTTPTimeout = 5 * time.Second
)

// Config says which tokens a [Verifier] accepts. At least one key source
// (HMACSecret, PublicKeyFiles, JWKSFile, JWKSURL) must be set; they may be
// combined.
type Config struct {
	// HMACSecret verifies HS256 tokens, and HS384 and HS512 when it is at
	// least 48 or 64 bytes long (a key shorter than the hash weakens it). It
	// must be at least 32 bytes.
	HMACSecret []byte
	// PublicKeyFiles are PEM files holding RSA (2048 to 8192 bits), ECDSA
	// (P-256, P-384, P-521) or Ed25519 public keys, as "PUBLIC KEY", "RSA
	// PUBLIC KEY" or "CERTIFICATE" blocks; a file may hold several. Private
	// keys are refused. These keys have no kid: they are tried for every
	// token whose algorithm they can verify.
	PublicKeyFiles []string
	// JWKSFile is a JWK Set read once by New.
	JWKSFile string
	// JWKSURL is a JWK Set fetched by New, again every JWKSRefresh, and when
	// a token names an unknown kid (at most once per JWKSMinRefresh). Keys
	// already fetched stay in use while the URL cannot be reached.
	JWKSURL string
	// JWKSRefresh is the period of background JWKS fetches; zero means
	// DefaultJWKSRefresh.
	JWKSRefresh time.Duration
	// JWKSMinRefresh is the least time between fetches caused by unknown
	// kids; zero means DefaultJWKSMinRefresh.
	JWKSMinRefresh time.Duration
	// Algorithms is the allow-list of JWS algorithm names ("HS256", "RS256",
	// "PS256", "ES256", "EdDSA", ...). Empty means every algorithm the
	// configured keys can verify (with a JWKS URL: every asymmetric one).
	// Each key verifies only the algorithms of its own type, whatever this
	// list says; "none" is never accepted.
	Algorithms []string
	// Audience, if set, must be one of the token's aud values.
	Audience string
	// Issuer, if set, must equal the token's iss.
	Issuer string
	// Leeway is the clock skew tolerated on exp, nbf and iat; zero means
	// none (exact clocks), negative is refused. DefaultLeeway suits most
	// deployments.
	Leeway time.Duration
	// ScopeClaim names the claim holding scopes as a space-separated string
	// (or an array of strings); zero means DefaultScopeClaim. When the token
	// lacks it, the "scp" claim (array or string) is read instead.
	ScopeClaim string
	// HTTPClient fetches JWKSURL; nil means a client with a 5 s timeout that
	// refuses redirects from https to http.
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives JWKS refresh failures (never a token); nil means
	// slog.Default().
	Logger *slog.Logger
}

// Verifier verifies JWTs and turns them into principals. It is safe for
// concurrent use. A Verifier with a JWKS URL runs a refresh goroutine until
// Close.
type Verifier struct {
	static     *keySet
	remote     *remote // nil without a JWKS URL
	allowed    algSet
	parser     *gojwt.Parser
	scopeClaim string
	// leeway extends every principal's ExpiresAt past exp, as the parser
	// extends the token's validity: a token is accepted, and a connection
	// made with it lives, until exp plus the leeway.
	leeway    time.Duration
	closeOnce sync.Once
}

// New loads the configured keys and returns a Verifier. It fails when the
// configuration cannot verify anything: no key source, a secret that is too
// short, an unreadable or unusable key file, an unknown algorithm, an allowed
// algorithm no key can verify, a key no allowed algorithm fits, a bad JWKS
// URL. With a JWKS URL, New fetches it once within ctx; a failed fetch is
// logged, not fatal (the identity provider may start after us), and tokens
// that need the missing keys fail with sessionbridge.ErrUnavailable until a
// later fetch succeeds. ctx bounds only that first fetch.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	leeway := cfg.Leeway
	if leeway < 0 {
		return nil, errors.New("jwt: leeway must not be negative")
	}
	refresh, minRefresh := cfg.JWKSRefresh, cfg.JWKSMinRefresh
	if refresh < 0 || minRefresh < 0 {
		return nil, errors.New("jwt: JWKS refresh intervals must not be negative")
	}
	if refresh == 0 {
		refresh = DefaultJWKSRefresh
	}
	if minRefresh == 0 {
		minRefresh = DefaultJWKSMinRefresh
	}

	var static []*key
	if len(cfg.HMACSecret) > 0 {
		// Copied so that a caller reusing its buffer cannot change our key.
		k, err := newKey("", bytes.Clone(cfg.HMACSecret))
		if err != nil {
			return nil, fmt.Errorf("jwt: HMAC secret: %w", err)
		}
		static = append(static, k)
	}
	for _, path := range cfg.PublicKeyFiles {
		data, err := readKeyFile(path)
		if err != nil {
			return nil, fmt.Errorf("jwt: public key file: %w", err)
		}
		keys, err := parsePEMKeys(data)
		if err != nil {
			return nil, fmt.Errorf("jwt: public key file %s: %w", path, err)
		}
		static = append(static, keys...)
	}
	if cfg.JWKSFile != "" {
		data, err := readKeyFile(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("jwt: JWKS file: %w", err)
		}
		keys, skipped, err := parseJWKS(data)
		if err != nil {
			return nil, fmt.Errorf("jwt: JWKS file %s: %w", cfg.JWKSFile, err)
		}
		if len(keys) == 0 {
			return nil, fmt.Errorf("jwt: JWKS file %s: no usable signature keys (%d skipped)", cfg.JWKSFile, skipped)
		}
		if skipped > 0 {
			log.Warn("jwt: JWKS file has unusable keys; ignoring them", "file", cfg.JWKSFile, "skipped", skipped)
		}
		static = append(static, keys...)
	}
	if len(static) == 0 && cfg.JWKSURL == "" {
		return nil, errors.New("jwt: no key configured: set an HMAC secret, public key files, a JWKS file or a JWKS URL")
	}

	v := &Verifier{static: newKeySet(static), scopeClaim: cfg.ScopeClaim, leeway: leeway}
	if v.scopeClaim == "" {
		v.scopeClaim = DefaultScopeClaim
	}
	possible := v.static.algs()
	if cfg.JWKSURL != "" {
		possible |= asymmetricAlgs
	}
	if len(cfg.Algorithms) == 0 {
		v.allowed = possible
	} else {
		for _, name := range cfg.Algorithms {
			a, ok := parseAlg(name)
			if !ok {
				return nil, fmt.Errorf("jwt: algorithm %q is not supported (known: %s)", name, algSet(1<<numAlgs-1))
			}
			if !possible.has(a) {
				return nil, fmt.Errorf("jwt: algorithm %s: no configured key can verify it (an HMAC secret needs 32, 48 or 64 bytes for HS256, HS384, HS512)", a)
			}
			v.allowed |= 1 << a
		}
	}
	for _, k := range static {
		if k.algs&v.allowed == 0 {
			return nil, fmt.Errorf("jwt: a configured key verifies only %s, none of the allowed algorithms %s", k.algs, v.allowed)
		}
	}

	opts := []gojwt.ParserOption{
		gojwt.WithValidMethods(v.allowed.names()),
		gojwt.WithExpirationRequired(),
		gojwt.WithIssuedAt(),
		gojwt.WithLeeway(leeway),
		gojwt.WithTimeFunc(now),
		// Non-zero padding bits would give one signature many encodings.
		gojwt.WithStrictDecoding(),
	}
	if cfg.Audience != "" {
		opts = append(opts, gojwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, gojwt.WithIssuer(cfg.Issuer))
	}
	v.parser = gojwt.NewParser(opts...)

	if cfg.JWKSURL != "" {
		client := cfg.HTTPClient
		if client == nil {
			client = &http.Client{Timeout: defaultHTTPTimeout, CheckRedirect: noDowngrade}
		}
		r, err := newRemote(cfg.JWKSURL, client, refresh, minRefresh, now, log)
		if err != nil {
			return nil, fmt.Errorf("jwt: %w", err)
		}
		if r.insecure {
			log.Warn("jwt: JWKS URL is plain HTTP to another host; anyone on the path can substitute keys", "url", r.logURL)
		}
		if err := r.refreshNow(ctx); err != nil && ctx.Err() != nil {
			r.close()
			return nil, fmt.Errorf("jwt: first JWKS fetch: %w", ctx.Err())
		}
		r.start()
		v.remote = r
	}
	return v, nil
}

// noDowngrade follows at most 5 redirects, never from https to http: keys
// fetched over TLS must not be replaceable by whoever can answer in clear.
func noDowngrade(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("too many redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return errors.New("redirect from https to http refused")
	}
	return nil
}

// Close stops the JWKS refresher, if any, and waits for it. Verify still
// works afterwards with the keys held, but fetches no more. Close is
// idempotent and always returns nil.
func (v *Verifier) Close() error {
	v.closeOnce.Do(func() {
		if v.remote != nil {
			v.remote.close()
		}
	})
	return nil
}

// Verify checks token (the compact JWS, without any "Bearer " prefix) and
// returns the principal it stands for: Method sessionbridge.AuthJWT, UserID
// from sub, SessionID from sid (if present), Scopes from the scope claim or
// scp, ExpiresAt from exp plus the configured leeway: the moment this
// Verifier stops accepting the token, and so when a connection made with it
// must end.
//
// A rejected token yields an error wrapping sessionbridge.ErrInvalidToken and
// one of ErrTokenExpired, ErrTokenNotYetValid, ErrBadAlgorithm,
// ErrBadSignature, ErrBadClaims, ErrUnknownKey or ErrMalformed. When the
// token needs a JWKS key that cannot be fetched, the error wraps
// sessionbridge.ErrUnavailable instead (the token may be fine; we cannot
// tell). No error contains the token.
func (v *Verifier) Verify(ctx context.Context, token string) (*sessionbridge.Principal, error) {
	if v == nil || v.parser == nil {
		return nil, reject(ErrUnknownKey, "verifier has no keys (not made by New)")
	}
	if token == "" {
		return nil, reject(ErrMalformed, "empty token")
	}
	if len(token) > MaxTokenLen {
		return nil, reject(ErrMalformed, fmt.Sprintf("token longer than %d bytes", MaxTokenLen))
	}
	if !compactJWS(token) {
		return nil, reject(ErrMalformed, "not three base64url segments")
	}
	if err := strictSegments(token); err != nil {
		return nil, reject(ErrMalformed, err.Error())
	}
	var keyErr error
	claims := gojwt.MapClaims{}
	tok, err := v.parser.ParseWithClaims(token, claims, func(t *gojwt.Token) (any, error) {
		k, err := v.keyFor(ctx, t)
		keyErr = err
		return k, err
	})
	if err != nil {
		if keyErr != nil {
			return nil, keyErr
		}
		return nil, v.classify(tok, err)
	}
	return v.principal(claims)
}

// compactJWS reports whether s is three non-empty-header base64url segments.
// It is a cheap filter before any decoding.
func compactJWS(s string) bool {
	dots := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return dots == 2 && s[0] != '.'
}

// strictSegments holds the header and claims of a compact JWS to the rules
// of every JSON input (strictjson): the JWT library would take the last of
// two "sub" or "alg" members and turn invalid UTF-8 into U+FFFD, so that two
// different subjects could become one user ID.
func strictSegments(token string) error {
	header, rest, _ := strings.Cut(token, ".")
	claims, _, _ := strings.Cut(rest, ".")
	for _, seg := range []struct{ name, b64 string }{{"header", header}, {"claims", claims}} {
		raw, err := base64.RawURLEncoding.DecodeString(seg.b64)
		if err != nil {
			return fmt.Errorf("%s is not base64url", seg.name)
		}
		if err := strictjson.Validate(raw); err != nil {
			return fmt.Errorf("%s: %w", seg.name, err)
		}
	}
	return nil
}

// reject builds a rejection: sessionbridge.ErrInvalidToken, a reason
// sentinel, and a detail that never includes the token.
func reject(reason error, detail string) error {
	return &rejection{reason: reason, detail: detail}
}

func unavailable(cause error) error {
	return fmt.Errorf("%w: jwt: cannot fetch the JWKS to find the token's key: %w", sessionbridge.ErrUnavailable, cause)
}

// keyFor picks the keys that may verify t: by kid when the token has one we
// know, else the keys that can verify its algorithm.
func (v *Verifier) keyFor(ctx context.Context, t *gojwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		// RFC 7515 4.1.11: extensions we do not understand make the token
		// invalid, and we understand none.
		return nil, reject(ErrMalformed, "crit header not supported")
	}
	a, ok := parseAlg(t.Method.Alg())
	if !ok || !v.allowed.has(a) {
		return nil, reject(ErrBadAlgorithm, "algorithm not allowed")
	}
	var kid string
	if raw, present := t.Header["kid"]; present {
		s, ok := raw.(string)
		if !ok {
			return nil, reject(ErrMalformed, "kid header is not a string")
		}
		kid = s
	}

	var fetchErr error
	if kid != "" {
		keys := v.byKID(kid)
		if keys == nil && v.remote != nil {
			fetchErr = v.remote.refreshForUnknown(ctx)
			keys = v.byKID(kid)
		}
		if keys != nil {
			var match []*key
			for _, k := range keys {
				if k.algs.has(a) {
					match = append(match, k)
				}
			}
			if len(match) == 0 {
				return nil, reject(ErrBadAlgorithm, fmt.Sprintf("key %s does not verify %s", quoteKID(kid), a))
			}
			return keyArg(match), nil
		}
		// Keys configured without a kid (a secret, a PEM file) are trusted for
		// any token they can verify, kid or not.
		if match := v.candidates(a, true); len(match) > 0 {
			return keyArg(match), nil
		}
		if fetchErr != nil {
			return nil, unavailable(fetchErr)
		}
		return nil, reject(ErrUnknownKey, fmt.Sprintf("no key with kid %s", quoteKID(kid)))
	}

	match := v.candidates(a, false)
	if len(match) == 0 && v.remote != nil {
		fetchErr = v.remote.refreshForUnknown(ctx)
		match = v.candidates(a, false)
	}
	if len(match) == 0 {
		if fetchErr != nil {
			return nil, unavailable(fetchErr)
		}
		return nil, reject(ErrUnknownKey, fmt.Sprintf("no key verifies %s", a))
	}
	return keyArg(match), nil
}

// byKID returns the keys named kid, configured ones first; nil if none.
func (v *Verifier) byKID(kid string) []*key {
	keys := v.static.byKID[kid]
	if v.remote != nil {
		if rs := v.remote.keys.Load(); rs != nil {
			if more := rs.byKID[kid]; more != nil {
				keys = append(keys[:len(keys):len(keys)], more...)
			}
		}
	}
	return keys
}

// candidates returns up to maxCandidates keys that can verify a, configured
// ones first; with kidless, only keys that have no kid.
func (v *Verifier) candidates(a alg, kidless bool) []*key {
	var out []*key
	sets := [2]*keySet{v.static, nil}
	if v.remote != nil {
		sets[1] = v.remote.keys.Load()
	}
	for _, s := range sets {
		if s == nil {
			continue
		}
		for _, k := range s.all {
			if len(out) == maxCandidates {
				return out
			}
			if k.algs.has(a) && (!kidless || k.kid == "") {
				out = append(out, k)
			}
		}
	}
	return out
}

// keyArg turns keys into what a gojwt.Keyfunc returns.
func keyArg(keys []*key) any {
	if len(keys) == 1 {
		return keys[0].pub
	}
	set := gojwt.VerificationKeySet{Keys: make([]gojwt.VerificationKey, len(keys))}
	for i, k := range keys {
		set.Keys[i] = k.pub
	}
	return set
}

// quoteKID renders an attacker-chosen kid safely for an error message.
func quoteKID(kid string) string {
	const max = 64
	if len(kid) > max {
		kid = kid[:max] + "..."
	}
	return fmt.Sprintf("%q", kid)
}

// classify maps a parser error to our reasons. The parser's own messages are
// not passed on: they are ours to word, and some would echo token content.
func (v *Verifier) classify(tok *gojwt.Token, err error) error {
	switch {
	case errors.Is(err, gojwt.ErrTokenMalformed):
		return reject(ErrMalformed, "bad base64 or JSON")
	case errors.Is(err, gojwt.ErrTokenUnverifiable):
		// The alg header is missing or names no algorithm the library knows.
		return reject(ErrBadAlgorithm, "missing or unknown algorithm")
	case errors.Is(err, gojwt.ErrTokenSignatureInvalid):
		if tok != nil && tok.Method != nil {
			if a, ok := parseAlg(tok.Method.Alg()); !ok || !v.allowed.has(a) {
				return reject(ErrBadAlgorithm, "algorithm not allowed")
			}
		}
		return reject(ErrBadSignature, "signature does not verify")
	case errors.Is(err, gojwt.ErrTokenInvalidClaims):
		switch {
		case errors.Is(err, gojwt.ErrInvalidType):
			return reject(ErrBadClaims, "a registered claim has the wrong type")
		case errors.Is(err, gojwt.ErrTokenRequiredClaimMissing):
			return reject(ErrBadClaims, "a required claim (exp, aud or iss) is missing")
		case errors.Is(err, gojwt.ErrTokenInvalidAudience):
			return reject(ErrBadAudience, "aud does not name this server")
		case errors.Is(err, gojwt.ErrTokenInvalidIssuer):
			return reject(ErrBadIssuer, "iss is not the configured issuer")
		case errors.Is(err, gojwt.ErrTokenExpired):
			return reject(ErrTokenExpired, "exp has passed")
		case errors.Is(err, gojwt.ErrTokenNotValidYet):
			return reject(ErrTokenNotYetValid, "nbf is in the future")
		case errors.Is(err, gojwt.ErrTokenUsedBeforeIssued):
			return reject(ErrTokenNotYetValid, "iat is in the future")
		}
		return reject(ErrBadClaims, "claims do not validate")
	}
	return reject(ErrMalformed, "token does not parse")
}

// principal builds the principal from verified claims, checking the claims
// the library does not know.
func (v *Verifier) principal(claims gojwt.MapClaims) (*sessionbridge.Principal, error) {
	sub, err := claims.GetSubject()
	if err != nil {
		return nil, reject(ErrBadClaims, "sub is not a string")
	}
	if sub == "" {
		return nil, reject(ErrBadClaims, "sub is missing")
	}
	if err := sessionbridge.CheckUserID(sub); err != nil {
		// The reason names the rule, never the subject.
		return nil, reject(ErrBadClaims, "sub is not a usable user ID: "+err.Error())
	}
	p := &sessionbridge.Principal{Method: sessionbridge.AuthJWT, UserID: sub}
	if raw, ok := claims["sid"]; ok {
		sid, ok := raw.(string)
		if !ok || !sessionbridge.ValidID(sid) {
			return nil, reject(ErrBadClaims, "sid is not a session ID")
		}
		p.SessionID = sid
	}
	scopeRaw, ok := claims[v.scopeClaim]
	if !ok {
		scopeRaw, ok = claims["scp"]
	}
	if ok {
		if p.Scopes, ok = parseScopes(scopeRaw); !ok {
			return nil, reject(ErrBadClaims, "scope is not a string or an array of strings")
		}
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		// The parser already required it; this is a second lock on the door.
		return nil, reject(ErrBadClaims, "exp is missing")
	}
	p.ExpiresAt = exp.Time.Add(v.leeway)
	return p, nil
}

// parseScopes accepts a space-separated string (RFC 8693 "scope") or an
// array of strings (the common "scp"); empty entries are dropped.
func parseScopes(raw any) ([]string, bool) {
	switch s := raw.(type) {
	case string:
		return strings.Fields(s), true
	case []any:
		out := make([]string, 0, len(s))
		for _, e := range s {
			str, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, strings.Fields(str)...)
		}
		return out, true
	case nil:
		return nil, true
	}
	return nil, false
}
