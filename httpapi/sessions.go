package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/audit"
	"github.com/sessionbridge/sessionbridge/device"
)

// DefaultCookieName is the session cookie's name when Sessions.CookieName is
// empty.
const DefaultCookieName = "sb_session"

// HeaderSessionToken is the request header that carries a session token for
// clients that do not use cookies.
const HeaderSessionToken = "X-Session-Token"

// Sessions loads, creates and ends cookie sessions for HTTP handlers.
//
// Credentials: the X-Session-Token header, when present, is authoritative. A
// request whose header names a bad or expired token is refused with 401
// invalid_token, and one that also carries a session cookie with a different
// token is refused with 401 conflicting_credentials: a client that states a
// credential explicitly must not silently act as someone else. Without the
// header the cookie is used; a bad or expired cookie is cleared and the
// request proceeds unauthenticated, so that a stale cookie never locks a
// browser out of the login page. A request with several session cookies of
// different values (one may have been planted from a sibling domain) also
// proceeds unauthenticated, as the gateway refuses it too.
//
// A Sessions needs a Manager; every other field has a working zero value. It
// is safe for concurrent use once configured.
type Sessions struct {
	Manager *sessionbridge.Manager
	// CookieName is the session cookie's name; empty means "sb_session".
	// The WebSocket gateway reads only "sb_session": change it only for an
	// application that does not use the gateway's cookie authentication.
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
}

// ctxKey keys the request state in a request context.
type ctxKey struct{}

// requestState is what the middleware learnt about a request's credentials.
// It is a pointer in the context so that Login and Logout can update it for
// the rest of the request.
type requestState struct {
	session *sessionbridge.Session
	// err is set when the store could not answer: the request proceeds
	// unauthenticated, but protected handlers answer 503 instead of 401.
	err error
}

// FromContext returns the session the middleware loaded for the request whose
// context is ctx, if the request is authenticated.
func FromContext(ctx context.Context) (*sessionbridge.Session, bool) {
	st, _ := ctx.Value(ctxKey{}).(*requestState)
	if st == nil || st.session == nil {
		return nil, false
	}
	return st.session, true
}

func stateFrom(ctx context.Context) *requestState {
	st, _ := ctx.Value(ctxKey{}).(*requestState)
	return st
}

func (s *Sessions) cookieName() string {
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

// Middleware loads the request's session into its context (see
// [FromContext]) and records the activity, extending the session's idle
// deadline at most once per touch interval. Unauthenticated requests proceed;
// guard handlers that need a session with [Sessions.Require].
func (s *Sessions) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, e := s.load(w, r)
		if e != nil {
			writeError(w, e)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, st)))
	})
}

// Require answers 401 unauthenticated to requests without a session and 503
// unavailable when the store could not be asked; others reach next. It loads
// the session itself when the request did not pass through the middleware.
func (s *Sessions) Require(next http.Handler) http.Handler {
	guarded := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := stateFrom(r.Context())
		switch {
		case st.err != nil:
			writeError(w, storeError(st.err))
		case st.session == nil:
			writeError(w, errorf(http.StatusUnauthorized, CodeUnauthenticated, "sign in first"))
		default:
			next.ServeHTTP(w, r)
		}
	})
	loading := s.Middleware(guarded)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if stateFrom(r.Context()) == nil {
			loading.ServeHTTP(w, r)
			return
		}
		guarded.ServeHTTP(w, r)
	})
}

// load authenticates the request's credential. It returns an *apiError only
// for a bad explicit header credential; every other outcome is a state.
func (s *Sessions) load(w http.ResponseWriter, r *http.Request) (*requestState, *apiError) {
	ctx := r.Context()
	st := &requestState{}
	headers := headerTokens(r)
	cookieTok, cookieConflict := s.cookieToken(r)
	if len(headers) > 0 {
		tok := headers[0]
		for _, h := range headers[1:] {
			if h != tok {
				return nil, s.refuse(r, CodeConflictingTokens, "several different X-Session-Token headers")
			}
		}
		if cookieConflict || (cookieTok != "" && cookieTok != tok) {
			return nil, s.refuse(r, CodeConflictingTokens, "X-Session-Token header and session cookie differ")
		}
		sess, err := s.Manager.Authenticate(ctx, tok)
		switch {
		case errors.Is(err, sessionbridge.ErrInvalidToken) || errors.Is(err, sessionbridge.ErrExpired):
			return nil, s.refuse(r, CodeInvalidToken, reasonOf(err))
		case err != nil:
			s.logger().LogAttrs(ctx, slog.LevelWarn, "session lookup failed", logAttrErr(err))
			st.err = err
			return st, nil
		}
		st.session = s.touch(ctx, sess)
		if st.session == nil {
			return nil, s.refuse(r, CodeInvalidToken, "session deleted")
		}
		return st, nil
	}
	if cookieConflict {
		// Several different session cookies: one may have been planted from
		// a sibling domain (cookie tossing). Acting as either could be acting
		// as the attacker, so the request proceeds as no one, as it does on
		// the WebSocket. No cookie is cleared: a planted one may not be ours
		// to clear.
		s.Audit.Log(ctx, audit.AuthnFailed, s.fields(r, audit.Fields{Reason: CodeConflictingTokens, Detail: "several different session cookies"}))
		return st, nil
	}
	if cookieTok == "" {
		return st, nil
	}
	sess, err := s.Manager.Authenticate(ctx, cookieTok)
	switch {
	case errors.Is(err, sessionbridge.ErrInvalidToken) || errors.Is(err, sessionbridge.ErrExpired):
		s.Audit.Log(ctx, audit.AuthnFailed, s.fields(r, audit.Fields{Reason: reasonOf(err), Detail: "session cookie cleared"}))
		s.clearCookie(w)
		return st, nil
	case err != nil:
		s.logger().LogAttrs(ctx, slog.LevelWarn, "session lookup failed", logAttrErr(err))
		st.err = err
		return st, nil
	}
	st.session = s.touch(ctx, sess)
	if st.session == nil {
		s.clearCookie(w)
	}
	return st, nil
}

// headerTokens returns the non-empty X-Session-Token values of the request:
// an empty value counts as absent, as it does on the WebSocket.
func headerTokens(r *http.Request) []string {
	var out []string
	for _, v := range r.Header.Values(HeaderSessionToken) {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// cookieToken returns the token of the request's session cookie, and
// whether the request carries several session cookies with different values.
func (s *Sessions) cookieToken(r *http.Request) (tok string, conflict bool) {
	for _, c := range r.CookiesNamed(s.cookieName()) {
		if c.Value == "" {
			continue
		}
		if tok != "" && c.Value != tok {
			return "", true
		}
		tok = c.Value
	}
	return tok, false
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

// refuse audits a refused explicit credential and returns its 401.
func (s *Sessions) refuse(r *http.Request, code, reason string) *apiError {
	s.Audit.Log(r.Context(), audit.AuthnFailed, s.fields(r, audit.Fields{Reason: reason, Detail: "X-Session-Token"}))
	if code == CodeConflictingTokens {
		return errorf(http.StatusUnauthorized, code, "the request carries conflicting session credentials")
	}
	return errorf(http.StatusUnauthorized, code, "invalid or expired session token")
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

// requestSession returns the request's session: from the context when the
// middleware ran, else by authenticating the request's credential.
func (s *Sessions) requestSession(r *http.Request) (*sessionbridge.Session, error) {
	if st := stateFrom(r.Context()); st != nil {
		return st.session, st.err
	}
	var tok string
	if h := headerTokens(r); len(h) > 0 {
		tok = h[0]
	} else {
		tok, _ = s.cookieToken(r)
	}
	if tok == "" {
		return nil, nil
	}
	sess, err := s.Manager.Authenticate(r.Context(), tok)
	if errors.Is(err, sessionbridge.ErrInvalidToken) || errors.Is(err, sessionbridge.ErrExpired) {
		return nil, nil
	}
	return sess, err
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
		st.session, st.err = sess, nil
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
		st.session, st.err = sess, nil
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
	if st := stateFrom(ctx); st != nil {
		st.session = nil
	}
	s.clearCookie(w)
	return nil
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
