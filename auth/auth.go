// Package auth is the one credential path of sessionbridge: the HTTP API and
// the WebSocket gateway both call an [Authenticator] to find the credential
// of a request (one precedence order, one conflict rule, bounded sizes), to
// check its origin (one policy, parsed once, the server's own origin always
// allowed) and to turn it into a [sessionbridge.Principal] (session token,
// JWT, API key, ticket, admin token).
//
// Each door keeps only what is its own: the HTTP middleware clears a bad
// cookie and proceeds unauthenticated, the upgrade refuses with its JSON
// answer. A door that authenticated a request hands the result on in the
// request's context ([NewContext]), so that the WebSocket gateway mounted
// under the HTTP middleware does not authenticate the same request twice.
package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/scope"
)

// MethodAdmin is the auth method of the shared admin token: a principal of
// no user that may call every admin route and nothing else.
const MethodAdmin sb.AuthMethod = "admin"

// Admin scopes: a JWT or API key principal needs ScopeAdminRead for the
// admin API's GET routes and ScopeAdminWrite for every other admin route.
const (
	ScopeAdminRead  = "admin:read"
	ScopeAdminWrite = "admin:write"
)

// KeyVerifier verifies API keys; *keys.Manager implements it.
type KeyVerifier interface {
	// Verify returns the key that key stands for, recording its use from
	// clientIP. It returns an error wrapping sessionbridge.ErrInvalidToken
	// for a malformed, unknown, mismatched or expired key and
	// sessionbridge.ErrUnavailable when it cannot decide.
	Verify(ctx context.Context, key, clientIP string) (*sb.APIKey, error)
	// Get returns the key with id, or an error wrapping
	// sessionbridge.ErrKeyNotFound; it may return an expired key.
	Get(ctx context.Context, id string) (*sb.APIKey, error)
}

// Config configures an Authenticator. Sessions is required; every other
// field has a working zero value, which refuses the credential it is about.
type Config struct {
	// Sessions authenticates session tokens and reads the sessions JWTs and
	// tickets are bound to. Tickets (?ticket= on upgrades) are redeemed in
	// its backend's TicketStore, where the node issues them; a backend
	// without one refuses them.
	Sessions *sb.Manager
	// JWT verifies bearer JWTs; nil refuses them.
	JWT sb.TokenVerifier
	// Keys verifies bearer API keys; nil refuses them.
	Keys KeyVerifier
	// AdminToken is the shared admin bearer token; empty means none.
	AdminToken string
	// CookieName is the session cookie's name; empty means "sb_session".
	CookieName string
	// AllowedOrigins lists the browser origins, besides the server's own,
	// that may use the session cookie: "https://app.example.com" or
	// "https://*.example.com".
	AllowedOrigins []string
	// AllowQueryToken enables ?session_token= on upgrades (off by default:
	// URLs end up in logs).
	AllowQueryToken bool
	// SessionScopes are the scopes of sessions that hold none of their own;
	// nil means DefaultSessionScopes.
	SessionScopes []string
	// Now is the clock for expiry decisions; nil means time.Now.
	Now func() time.Time
}

// Authenticator turns the credentials of requests into principals. Build it
// with New; it is immutable and safe for concurrent use.
type Authenticator struct {
	sessions      *sb.Manager
	tickets       sb.TicketStore
	jwt           sb.TokenVerifier
	keys          KeyVerifier
	adminHash     []byte // SHA-256 of the admin token; nil for none
	cookieName    string
	allowQuery    bool
	sessionScopes []string
	origins       *Origins
	now           func() time.Time
}

// New checks cfg, fills its defaults and returns its Authenticator. It
// refuses a missing Manager and a malformed allowed origin.
func New(cfg Config) (*Authenticator, error) {
	if cfg.Sessions == nil || cfg.Sessions.Backend().Store == nil {
		return nil, errors.New("auth: Config.Sessions is required, built with sessionbridge.NewManager")
	}
	origins, err := ParseOrigins(cfg.AllowedOrigins)
	if err != nil {
		return nil, err
	}
	a := &Authenticator{
		sessions: cfg.Sessions, tickets: cfg.Sessions.Backend().Tickets, jwt: cfg.JWT, keys: cfg.Keys,
		cookieName: cfg.CookieName, allowQuery: cfg.AllowQueryToken,
		sessionScopes: slices.Clone(cfg.SessionScopes), origins: origins, now: cfg.Now,
	}
	if cfg.AdminToken != "" {
		h := sha256.Sum256([]byte(cfg.AdminToken))
		a.adminHash = h[:]
	}
	if a.cookieName == "" {
		a.cookieName = DefaultCookieName
	}
	if a.sessionScopes == nil {
		a.sessionScopes = DefaultSessionScopes()
	}
	if _, err := sb.CompileScopes(a.sessionScopes); err != nil {
		return nil, fmt.Errorf("auth: SessionScopes: %w", err)
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a, nil
}

// DefaultSessionScopes are the scopes of a session without scopes of its
// own when Config.SessionScopes is nil: every frame type.
func DefaultSessionScopes() []string { return []string{"**"} }

// SessionScopes returns the scopes of sessions that hold none of their own.
// The slice must not be modified.
func (a *Authenticator) SessionScopes() []string { return a.sessionScopes }

// CookieName returns the name of the session cookie.
func (a *Authenticator) CookieName() string { return a.cookieName }

// Origins returns the origin policy.
func (a *Authenticator) Origins() *Origins { return a.origins }

// JWT returns the JWT verifier, or nil when JWTs are refused.
func (a *Authenticator) JWT() sb.TokenVerifier { return a.jwt }

// AdminEnabled reports whether any credential could ever call the admin
// API: the admin token, or a JWT or API key holding an admin scope.
func (a *Authenticator) AdminEnabled() bool {
	return a.adminHash != nil || a.jwt != nil || a.keys != nil
}

// Result is an authenticated request: who it acts for and by which
// credential.
type Result struct {
	// Principal is who the request acts for. Its Session is the bound
	// session as read now, or nil.
	Principal *sb.Principal
	// Credential says where the credential came from; its Token and Ticket
	// are cleared, so that a Result carries no secret.
	Credential Credential
}

// Authenticate turns a credential into a principal. clientIP is recorded as
// an API key's last use. Errors wrap sessionbridge.ErrInvalidToken (unknown,
// wrong or disabled credential), sessionbridge.ErrExpired,
// sessionbridge.ErrUnavailable (the store or a key source cannot answer:
// callers fail closed) or ErrConflicting (a ticket that stands for another
// principal than the credential it came with); anything else must be treated
// as unavailable too.
func (a *Authenticator) Authenticate(ctx context.Context, c Credential, clientIP string) (*Result, error) {
	var ticket *sb.Ticket
	if c.Ticket != "" {
		if a.tickets == nil {
			return nil, fmt.Errorf("auth: tickets disabled: %w", sb.ErrInvalidToken)
		}
		t, err := a.tickets.Redeem(ctx, c.Ticket)
		if err != nil {
			return nil, fmt.Errorf("auth: redeem ticket: %w", err)
		}
		ticket = t
	}
	var p *sb.Principal
	var err error
	switch c.Kind {
	case KindTicket:
		p, err = a.fromTicket(ctx, ticket)
	case KindSession:
		p, err = a.fromSession(ctx, c.Token)
	case KindJWT:
		p, err = a.fromJWT(ctx, c.Token)
	case KindAPIKey:
		p, err = a.fromKey(ctx, c.Token, clientIP)
	case KindAdmin:
		if a.adminHash == nil || !a.isAdmin(c.Token) {
			err = fmt.Errorf("auth: admin token: %w", sb.ErrInvalidToken)
		} else {
			p = &sb.Principal{Method: MethodAdmin}
		}
	default:
		err = fmt.Errorf("auth: no credential: %w", sb.ErrInvalidToken)
	}
	if err != nil {
		return nil, err
	}
	if ticket != nil && c.Kind != KindTicket {
		// The ticket came along with another credential: it must stand for
		// the same principal.
		if ticket.UserID != p.UserID || ticket.SessionID != p.SessionID {
			return nil, ErrConflicting
		}
	}
	c.Token, c.Ticket = "", ""
	return &Result{Principal: p, Credential: c}, nil
}

func (a *Authenticator) fromSession(ctx context.Context, token string) (*sb.Principal, error) {
	s, err := a.sessions.Authenticate(ctx, token)
	if err != nil {
		return nil, err
	}
	return &sb.Principal{
		Method: sb.AuthSession, UserID: s.UserID, SessionID: s.ID, Session: s,
		Scopes: slices.Clone(s.ScopesOr(a.sessionScopes)), ExpiresAt: s.Deadline(),
	}, nil
}

func (a *Authenticator) fromJWT(ctx context.Context, token string) (*sb.Principal, error) {
	if a.jwt == nil {
		return nil, fmt.Errorf("auth: jwt disabled: %w", sb.ErrInvalidToken)
	}
	p, err := a.jwt.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, fmt.Errorf("auth: jwt without subject: %w", sb.ErrInvalidToken)
	}
	// A verifier is the door its user IDs come in by: hold them to the
	// same rules as every other.
	if err := sb.CheckUserID(p.UserID); err != nil {
		return nil, fmt.Errorf("auth: jwt subject: %v: %w", err, sb.ErrInvalidToken)
	}
	p.Method, p.KeyID = sb.AuthJWT, ""
	if !p.ExpiresAt.IsZero() && !a.now().Before(p.ExpiresAt) {
		return nil, sb.ErrExpired
	}
	if p.SessionID != "" {
		if p.Session, err = a.boundSession(ctx, p.SessionID, p.UserID); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (a *Authenticator) fromKey(ctx context.Context, key, clientIP string) (*sb.Principal, error) {
	if a.keys == nil {
		return nil, fmt.Errorf("auth: api keys disabled: %w", sb.ErrInvalidToken)
	}
	// A malformed or mistyped key is refused here, whatever the verifier
	// does, so that it never costs a store read.
	if _, _, err := sb.ParseAPIKey(key); err != nil {
		return nil, fmt.Errorf("auth: api key: %w", err)
	}
	k, err := a.keys.Verify(ctx, key, clientIP)
	if err != nil {
		return nil, err
	}
	if err := sb.CheckUserID(k.UserID); err != nil {
		return nil, fmt.Errorf("auth: api key owner: %v: %w", err, sb.ErrInvalidToken)
	}
	return keyPrincipal(k), nil
}

func keyPrincipal(k *sb.APIKey) *sb.Principal {
	lim := k.Limits
	lim.DryRun = slices.Clone(lim.DryRun)
	return &sb.Principal{
		Method: sb.AuthAPIKey, UserID: k.UserID, KeyID: k.ID, KeyVersion: k.Version,
		Scopes: slices.Clone(k.Scopes), ExpiresAt: k.ExpiresAt,
		Limits: lim,
	}
}

func (a *Authenticator) fromTicket(ctx context.Context, t *sb.Ticket) (*sb.Principal, error) {
	if t == nil || t.UserID == "" {
		return nil, sb.ErrInvalidToken
	}
	p := &sb.Principal{Method: t.Method, UserID: t.UserID, SessionID: t.SessionID, Scopes: slices.Clone(t.Scopes)}
	switch p.Method {
	case sb.AuthSession, "":
		p.Method = sb.AuthSession
		if p.SessionID == "" {
			return nil, fmt.Errorf("auth: session ticket without session: %w", sb.ErrInvalidToken)
		}
		if len(p.Scopes) == 0 {
			p.Scopes = slices.Clone(a.sessionScopes)
		}
	case sb.AuthJWT:
		if !t.ExpiresAt.IsZero() {
			if !a.now().Before(t.ExpiresAt) {
				return nil, sb.ErrExpired
			}
			p.ExpiresAt = t.ExpiresAt
		}
	case sb.AuthAPIKey:
		// The key may have been revoked, rolled or changed since the ticket
		// was issued: the key as it stands now decides.
		kp, err := a.ticketKey(ctx, t)
		if err != nil {
			return nil, err
		}
		p = kp
	default:
		return nil, fmt.Errorf("auth: ticket with unknown method: %w", sb.ErrInvalidToken)
	}
	if p.SessionID != "" {
		s, err := a.boundSession(ctx, p.SessionID, p.UserID)
		if err != nil {
			return nil, err
		}
		p.Session = s
		if p.Method == sb.AuthSession {
			p.ExpiresAt = s.Deadline()
		}
	}
	return p, nil
}

// ticketKey reads the key an API-key ticket was issued for; it must still
// exist, be unexpired and belong to the ticket's user.
func (a *Authenticator) ticketKey(ctx context.Context, t *sb.Ticket) (*sb.Principal, error) {
	if a.keys == nil || !sb.ValidAPIKeyID(t.KeyID) {
		return nil, fmt.Errorf("auth: api key ticket: %w", sb.ErrInvalidToken)
	}
	k, err := a.keys.Get(ctx, t.KeyID)
	switch {
	case errors.Is(err, sb.ErrKeyNotFound):
		return nil, fmt.Errorf("auth: api key ticket: %w", sb.ErrInvalidToken)
	case err != nil:
		return nil, err
	case k.UserID != t.UserID:
		return nil, fmt.Errorf("auth: api key ticket of another user: %w", sb.ErrInvalidToken)
	case k.Expired(a.now()):
		return nil, sb.ErrExpired
	}
	return keyPrincipal(k), nil
}

// boundSession reads the session a JWT or ticket names; it must be live and
// belong to userID.
func (a *Authenticator) boundSession(ctx context.Context, id, userID string) (*sb.Session, error) {
	s, err := a.sessions.Get(ctx, id)
	if errors.Is(err, sb.ErrNotFound) {
		return nil, fmt.Errorf("auth: bound session: %w", sb.ErrInvalidToken)
	}
	if err != nil {
		return nil, err
	}
	if s.UserID != userID {
		return nil, fmt.Errorf("auth: bound session of another user: %w", sb.ErrInvalidToken)
	}
	return s, nil
}

// Grants reports whether p may use the admin scope s (ScopeAdminRead or
// ScopeAdminWrite). The admin token may use both. A JWT or API key must
// hold s literally, not through a wildcard (a key for "**" frames is not an
// administrator), and no deny pattern of it may match s. Session principals
// never may: the admin API is not for the ambient cookie.
func Grants(p *sb.Principal, s string) bool {
	switch {
	case p == nil:
		return false
	case p.Method == MethodAdmin:
		return true
	case p.Method != sb.AuthJWT && p.Method != sb.AuthAPIKey:
		return false
	case !slices.Contains(p.Scopes, s):
		return false
	}
	set, err := scope.Compile(p.Scopes...)
	return err == nil && set.Allows(s)
}

// AdminScope returns the admin scope a request method needs: ScopeAdminRead
// for GET and HEAD, ScopeAdminWrite for every other.
func AdminScope(method string) string {
	if method == http.MethodGet || method == http.MethodHead {
		return ScopeAdminRead
	}
	return ScopeAdminWrite
}

type ctxKey struct{}

// NewContext returns ctx carrying res, for the handlers (and the WebSocket
// gateway) behind a door that authenticated the request.
func NewContext(ctx context.Context, res *Result) context.Context {
	return context.WithValue(ctx, ctxKey{}, res)
}

// FromContext returns the Result a door stored in ctx, if any.
func FromContext(ctx context.Context) (*Result, bool) {
	res, _ := ctx.Value(ctxKey{}).(*Result)
	return res, res != nil && res.Principal != nil
}

// Handed returns the Result a middleware already stored in r's context when
// it is what the door would find itself: on the upgrade door, only when r
// carries no query credential (?ticket=, or ?session_token= when enabled),
// which the HTTP middleware does not look at.
func (a *Authenticator) Handed(r *http.Request, door Door) (*Result, bool) {
	res, ok := FromContext(r.Context())
	if !ok {
		return nil, false
	}
	if door == Upgrade && a.hasQueryCredential(r) {
		return nil, false
	}
	return res, true
}
