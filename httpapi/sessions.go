package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/audit"
	"github.com/sessionbridge/sessionbridge/auth"
	"github.com/sessionbridge/sessionbridge/device"
)

// DefaultCookieName is the session cookie's name when neither Sessions.Auth
// nor Sessions.CookieName names another.
const DefaultCookieName = auth.DefaultCookieName

// HeaderSessionToken is the request header that carries a session token for
// clients that do not use cookies.
const HeaderSessionToken = auth.HeaderSessionToken

// Sessions loads, creates and ends cookie sessions for HTTP handlers.
//
// Credentials are read by an [auth.Authenticator], the one the WebSocket
// gateway uses too, so both doors follow one precedence order
// (Authorization Bearer, X-Session-Token, the cookie) and one conflict rule
// (every credential present must carry the same token). What is the HTTP
// door's own: a request whose explicit credential (Bearer or X-Session-Token)
// is bad, expired or conflicting is refused with 401 invalid_token or
// conflicting_credentials, since a client that states a credential must not
// silently act as someone else, or as no one. A bad or expired cookie alone
// is cleared and the request proceeds unauthenticated, so that a stale cookie
// never locks a browser out of the login page; several different session
// cookies (one may have been planted from a sibling domain) make the request
// proceed unauthenticated too, without clearing anything.
//
// A Sessions needs a Manager; every other field has a working zero value. It
// is safe for concurrent use once configured.
type Sessions struct {
	Manager *sessionbridge.Manager
	// Auth authenticates requests; share it with the gateway
	// (gateway.Config.Auth) so that JWTs and API keys work at both doors and
	// a socket mounted behind Middleware is not authenticated twice. Nil
	// means an authenticator of session tokens only, with CookieName.
	Auth *auth.Authenticator
	// CookieName is the session cookie's name when Auth is nil; empty means
	// "sb_session". With Auth set, Auth names the cookie.
	CookieName string
	// Insecure drops the Secure attribute from the cookie, for plain-HTTP
	// development. Browsers treat http://localhost as secure, so it is rarely
	// needed even there.
	Insecure bool
	// TrustedProxies are the proxies whose X-Forwarded-For is believed when
	// recording the client's address.
	TrustedProxies []netip.Prefix
	Audit          *audit.Logger
	// Logger receives operational log lines; nil means slog.Default(). No
	// token, secret or cookie value is ever logged.
	Logger *slog.Logger

	buildOnce sync.Once
	built     *auth.Authenticator
	buildErr  error
}

// ctxKey keys the request state in a request context.
type ctxKey struct{}

// requestState is what the middleware learnt about a request's credentials.
// It is a pointer in the context so that Login and Logout can update it for
// the rest of the request.
type requestState struct {
	// p is who the request acts for; nil when unauthenticated.
	p *sessionbridge.Principal
	// session is the session the request is bound to (a session
	// credential's, or a JWT's sid), as touched now; nil for none.
	session *sessionbridge.Session
	// err is set when the store could not answer: the request proceeds
	// unauthenticated, but protected handlers answer 503 instead of 401.
	err error
}

// FromContext returns the session the middleware loaded for the request whose
// context is ctx, if the request is bound to one: by a session credential,
// or by a JWT whose sid claim names it.
func FromContext(ctx context.Context) (*sessionbridge.Session, bool) {
	st, _ := ctx.Value(ctxKey{}).(*requestState)
	if st == nil || st.session == nil {
		return nil, false
	}
	return st.session, true
}

// PrincipalFromContext returns who the request whose context is ctx acts
// for, if the middleware authenticated it: a session, a JWT or an API key.
func PrincipalFromContext(ctx context.Context) (*sessionbridge.Principal, bool) {
	st, _ := ctx.Value(ctxKey{}).(*requestState)
	if st == nil || st.p == nil {
		return nil, false
	}
	return st.p, true
}

func stateFrom(ctx context.Context) *requestState {
	st, _ := ctx.Value(ctxKey{}).(*requestState)
	return st
}

// authenticator returns Auth, or the session-only authenticator built once
// from Manager and CookieName.
func (s *Sessions) authenticator() (*auth.Authenticator, error) {
	if s.Auth != nil {
		return s.Auth, nil
	}
	s.buildOnce.Do(func() {
		s.built, s.buildErr = auth.New(auth.Config{Sessions: s.Manager, CookieName: s.CookieName})
	})
	return s.built, s.buildErr
}

func (s *Sessions) cookieName() string {
	if s.Auth != nil {
		return s.Auth.CookieName()
	}
	if s.CookieName != "" {
		return s.CookieName
	}
	return DefaultCookieName
}

func (s *Sessions) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Middleware loads the request's principal and session into its context
// (see [FromContext], [PrincipalFromContext], and [auth.FromContext], which
// the gateway reads so that a socket upgraded behind the middleware is not
// authenticated again) and records the activity, extending the session's
// idle deadline at most once per touch interval. Unauthenticated requests
// proceed; guard handlers that need a session with [Sessions.Require].
func (s *Sessions) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		authn, err := s.authenticator()
		if err != nil {
			writeError(w, storeError(err))
			return
		}
		s.middleware(authn, next).ServeHTTP(w, r)
	})
}

func (s *Sessions) middleware(authn *auth.Authenticator, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, res, e := s.load(w, r, authn)
		if e != nil {
			writeError(w, e)
			return
		}
		ctx := context.WithValue(r.Context(), ctxKey{}, st)
		if res != nil {
			ctx = auth.NewContext(ctx, res)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// Require answers 401 unauthenticated to requests without a principal, 403
// session_required to a principal bound to no session (an API key, a JWT
// without a sid claim, the admin token) and 503 unavailable when the store
// could not be asked; others reach next, with [FromContext] returning their
// session. It loads the request's credentials itself when the request did
// not pass through the middleware.
func (s *Sessions) Require(next http.Handler) http.Handler {
	return s.guard(nil, true, next)
}

// guard is Require (needSession) or its variant for routes any user
// principal may call. authn nil means the Sessions' own authenticator.
func (s *Sessions) guard(authn *auth.Authenticator, needSession bool, next http.Handler) http.Handler {
	guarded := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := stateFrom(r.Context())
		switch {
		case st.err != nil:
			writeError(w, storeError(st.err))
		case st.p == nil:
			writeError(w, errorf(http.StatusUnauthorized, CodeUnauthenticated, "sign in first"))
		case st.p.Method == auth.MethodAdmin:
			writeError(w, errorf(http.StatusForbidden, CodeForbidden, "the admin token acts for no user; use it on /api/v1 only"))
		case needSession && st.session == nil:
			writeError(w, errorf(http.StatusForbidden, CodeSessionRequired, "this route needs a session: a session cookie or token, or a JWT whose sid claim names a session"))
		default:
			next.ServeHTTP(w, r)
		}
	})
	loading := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if authn != nil {
			s.middleware(authn, guarded).ServeHTTP(w, r)
			return
		}
		s.Middleware(guarded).ServeHTTP(w, r)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if stateFrom(r.Context()) == nil {
			loading.ServeHTTP(w, r)
			return
		}
		guarded.ServeHTTP(w, r)
	})
}

// load authenticates the request's credentials. It returns an *apiError
// only for a bad explicit credential; every other outcome is a state, with
// the authentication result when there is a principal.
func (s *Sessions) load(w http.ResponseWriter, r *http.Request, authn *auth.Authenticator) (*requestState, *auth.Result, *apiError) {
	ctx := r.Context()
	st := &requestState{}
	cred, err := authn.Extract(r, auth.HTTP)
	switch {
	case errors.Is(err, auth.ErrNoCredentials):
		return st, nil, nil
	case err != nil && !cred.Explicit:
		// Only the cookies are at fault: several different session cookies
		// (one may have been planted from a sibling domain: cookie tossing)
		// or an oversized one. Acting as either could be acting as the
		// attacker, so the request proceeds as no one; the gateway refuses
		// it. No cookie is cleared: a planted one may not be ours to clear.
		s.Audit.Log(ctx, audit.AuthnFailed, s.fields(r, audit.Fields{Reason: err.Error(), Detail: "session cookie ignored"}))
		return st, nil, nil
	case errors.Is(err, auth.ErrConflicting):
		return nil, nil, s.refuse(r, cred, CodeConflictingTokens, err.Error())
	case err != nil:
		return nil, nil, s.refuse(r, cred, CodeInvalidToken, err.Error())
	}
	res, err := authn.Authenticate(ctx, cred, s.keyClientIP(r, cred))
	switch {
	case errors.Is(err, sessionbridge.ErrInvalidToken) || errors.Is(err, sessionbridge.ErrExpired):
		if cred.Source != auth.SourceCookie {
			return nil, nil, s.refuse(r, cred, CodeInvalidToken, reasonOf(err))
		}
		s.Audit.Log(ctx, audit.AuthnFailed, s.fields(r, audit.Fields{Method: cred.Kind.String(), Reason: reasonOf(err), Detail: "session cookie cleared"}))
		s.clearCookie(w)
		return st, nil, nil
	case err != nil:
		// Fail closed: the request proceeds as no one, and protected
		// routes answer 503.
		s.logger().LogAttrs(ctx, slog.LevelWarn, "authentication failed", slog.String("method", cred.Kind.String()), logAttrErr(err))
		st.err = err
		return st, nil, nil
	}
	p := res.Principal
	if p.Session != nil {
		p.Session = s.touch(ctx, p.Session)
		if p.Session == nil {
			if cred.Source != auth.SourceCookie {
				return nil, nil, s.refuse(r, cred, CodeInvalidToken, "session deleted")
			}
			s.clearCookie(w)
			return st, nil, nil
		}
	}
	st.p, st.session = p, p.Session
	return st, res, nil
}

// touch records activity on sess and returns the session as it now stands,
// or nil when it was deleted meanwhile. A touch that fails for another reason
// is logged and ignored: the session was read, only its deadline did not move.
func (s *Sessions) touch(ctx context.Context, sess *sessionbridge.Session) *sessionbridge.Session {
	next, err := s.Manager.Touch(ctx, sess, sessionbridge.Change{Source: sessionbridge.SourceHTTP})
	if errors.Is(err, sessionbridge.ErrNotFound) {
		return nil
	}
	if err != nil {
		s.logger().LogAttrs(ctx, slog.LevelWarn, "session touch failed", slog.String("session_id", sess.ID), logAttrErr(err))
		return sess
	}
	return next
}

// keyClientIP is the client address an API key's use is recorded with;
// other credentials need none, so the request's address is not worked out
// for them.
func (s *Sessions) keyClientIP(r *http.Request, cred auth.Credential) string {
	if cred.Kind != auth.KindAPIKey {
		return ""
	}
	return device.ClientIP(r, s.TrustedProxies)
}

// refuse audits a refused explicit credential and returns its 401.
func (s *Sessions) refuse(r *http.Request, cred auth.Credential, code, reason string) *apiError {
	s.Audit.Log(r.Context(), audit.AuthnFailed, s.fields(r, audit.Fields{Method: cred.Kind.String(), Reason: reason, Detail: cred.Source.String()}))
	if code == CodeConflictingTokens {
		return errorf(http.StatusUnauthorized, code, "the request carries conflicting credentials")
	}
	return errorf(http.StatusUnauthorized, code, "invalid or expired credentials")
}

func reasonOf(err error) string {
	switch {
	case errors.Is(err, sessionbridge.ErrExpired):
		return "session_expired"
	case errors.Is(err, sessionbridge.ErrInvalidToken):
		return "invalid_token"
	}
	return "error"
}

// fields fills the request's address and user agent into f.
func (s *Sessions) fields(r *http.Request, f audit.Fields) audit.Fields {
	f.IP = device.ClientIP(r, s.TrustedProxies)
	f.UserAgent = r.UserAgent()
	if f.Source == "" {
		f.Source = string(sessionbridge.SourceHTTP)
	}
	return f
}

// requestSession returns the session of the request's session credential
// (cookie, X-Session-Token or a bearer session token): from the context when
// the middleware ran, else by authenticating the request. A JWT bound to a
// session is not a session credential: Login, Logout and Rotate leave its
// session alone.
func (s *Sessions) requestSession(r *http.Request) (*sessionbridge.Session, error) {
	if st := stateFrom(r.Context()); st != nil {
		if st.p != nil && st.p.Method != sessionbridge.AuthSession {
			return nil, nil
		}
		return st.session, st.err
	}
	authn, err := s.authenticator()
	if err != nil {
		return nil, err
	}
	cred, err := authn.Extract(r, auth.HTTP)
	if err != nil || cred.Kind != auth.KindSession {
		return nil, nil
	}
	res, err := authn.Authenticate(r.Context(), cred, "")
	if errors.Is(err, sessionbridge.ErrInvalidToken) || errors.Is(err, sessionbridge.ErrExpired) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return res.Principal.Session, nil
}

// Login creates a session for userID with the given data (a JSON object; nil
// means {}), recording the requesting device, and sets the session cookie:
// HttpOnly, SameSite=Lax, Path=/, Secure unless Insecure, Max-Age the
// session's absolute lifetime. Any session the request already carried is
// deleted, so every login starts with a new session ID (no session fixation).
// Call it only after the user proved who they are.
func (s *Sessions) Login(w http.ResponseWriter, r *http.Request, userID string, data json.RawMessage) (*sessionbridge.Session, error) {
	return s.LoginWith(w, r, sessionbridge.NewSession{UserID: userID, Data: data})
}

// LoginWith is Login for the session ns describes: its user, data, scopes
// (nil: the configured default) and TTL. Its Device is the requesting
// device's, whatever ns says.
func (s *Sessions) LoginWith(w http.ResponseWriter, r *http.Request, ns sessionbridge.NewSession) (*sessionbridge.Session, error) {
	ctx := r.Context()
	old, err := s.requestSession(r)
	if err != nil {
		return nil, fmt.Errorf("httpapi: login: reading the current session: %w", err)
	}
	ns.Device = device.FromRequest(r, s.TrustedProxies)
	sess, token, err := s.Manager.Create(ctx, ns, sessionbridge.Change{Source: sessionbridge.SourceHTTP})
	if err != nil {
		return nil, fmt.Errorf("httpapi: login: %w", err)
	}
	if old != nil {
		_, err := s.Manager.Delete(ctx, old.ID, sessionbridge.ReasonLogout, sessionbridge.Change{Source: sessionbridge.SourceHTTP})
		switch {
		case err == nil:
			s.Audit.Log(ctx, audit.SessionLogout, s.fields(r, audit.Fields{SessionID: old.ID, UserID: old.UserID, Reason: "replaced_by_login"}))
		case !errors.Is(err, sessionbridge.ErrNotFound):
			// The new session stands; the old one runs out at its deadline.
			s.logger().LogAttrs(ctx, slog.LevelWarn, "deleting the replaced session failed", slog.String("session_id", old.ID), logAttrErr(err))
		}
	}
	s.setCookie(w, token, sess.AbsoluteExpiresAt.Sub(sess.CreatedAt))
	if st := stateFrom(ctx); st != nil {
		st.p, st.session, st.err = sessionPrincipal(sess), sess, nil
	}
	f := s.fields(r, audit.Fields{SessionID: sess.ID, UserID: sess.UserID, Method: string(sessionbridge.AuthSession)})
	s.Audit.Log(ctx, audit.SessionCreated, f)
	s.Audit.Log(ctx, audit.AuthnLoginSuccess, f)
	return sess, nil
}

// Rotate gives the request's session a new ID and secret, keeping its data
// and deadlines, and sets the new cookie. Call it when the session gains
// privileges (a step-up sign-in, a role change) so that an ID an attacker
// planted or learnt before is worthless afterwards. The old ID stops working
// at once; its WebSockets are told as for any rotation. It returns
// ErrNotFound (wrapped) when the request has no session.
func (s *Sessions) Rotate(w http.ResponseWriter, r *http.Request) (*sessionbridge.Session, error) {
	ctx := r.Context()
	old, err := s.requestSession(r)
	if err != nil {
		return nil, fmt.Errorf("httpapi: rotate: %w", err)
	}
	if old == nil {
		return nil, fmt.Errorf("httpapi: rotate: %w", sessionbridge.ErrNotFound)
	}
	sess, token, err := s.Manager.Rotate(ctx, old.ID, sessionbridge.Change{Source: sessionbridge.SourceHTTP})
	if err != nil {
		return nil, fmt.Errorf("httpapi: rotate: %w", err)
	}
	s.setCookie(w, token, sess.AbsoluteExpiresAt.Sub(time.Now()))
	if st := stateFrom(ctx); st != nil {
		st.p, st.session, st.err = sessionPrincipal(sess), sess, nil
	}
	s.Audit.Log(ctx, audit.SessionRenewed, s.fields(r, audit.Fields{SessionID: sess.ID, UserID: sess.UserID, Detail: "rotated from " + old.ID}))
	return sess, nil
}

// setCookie sets the session cookie to token for lifetime (at least a
// second): HttpOnly, SameSite=Lax, Path=/, Secure unless Insecure.
func (s *Sessions) setCookie(w http.ResponseWriter, token string, lifetime time.Duration) {
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(), Value: token, Path: "/",
		MaxAge:   max(1, int(lifetime/time.Second)),
		HttpOnly: true, Secure: !s.Insecure, SameSite: http.SameSiteLaxMode,
	})
}

// Logout deletes the request's session, which closes its WebSockets on every
// node, and clears the cookie. A request without a session is not an error.
// When the store cannot be reached it returns the error and keeps the cookie,
// so that the client can retry rather than believe it signed out.
func (s *Sessions) Logout(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	sess, err := s.requestSession(r)
	if err != nil {
		return fmt.Errorf("httpapi: logout: %w", err)
	}
	if sess != nil {
		_, err := s.Manager.Delete(ctx, sess.ID, sessionbridge.ReasonLogout, sessionbridge.Change{Source: sessionbridge.SourceHTTP})
		if err != nil && !errors.Is(err, sessionbridge.ErrNotFound) {
			return fmt.Errorf("httpapi: logout: %w", err)
		}
		s.Audit.Log(ctx, audit.SessionLogout, s.fields(r, audit.Fields{SessionID: sess.ID, UserID: sess.UserID, Reason: sessionbridge.ReasonLogout}))
	}
	if st := stateFrom(ctx); st != nil && sess != nil {
		st.p, st.session = nil, nil
	}
	s.clearCookie(w)
	return nil
}

// sessionPrincipal is the principal of a session the request just got.
func sessionPrincipal(sess *sessionbridge.Session) *sessionbridge.Principal {
	return &sessionbridge.Principal{Method: sessionbridge.AuthSession, UserID: sess.UserID, SessionID: sess.ID, Session: sess, ExpiresAt: sess.Deadline()}
}

// clearCookie tells the browser to drop the session cookie.
func (s *Sessions) clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: !s.Insecure, SameSite: http.SameSiteLaxMode,
	})
}

// storeError maps a store failure to its answer: 503 when the store is
// unreachable, 500 otherwise.
func storeError(err error) *apiError {
	if errors.Is(err, sessionbridge.ErrUnavailable) {
		return errorf(http.StatusServiceUnavailable, CodeUnavailable, "the session store is unavailable; retry later")
	}
	return errorf(http.StatusInternalServerError, CodeInternal, "internal error")
}
