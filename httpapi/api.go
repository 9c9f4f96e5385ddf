package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/audit"
	"github.com/sessionbridge/sessionbridge/auth"
	"github.com/sessionbridge/sessionbridge/internal/strictjson"
	"github.com/sessionbridge/sessionbridge/keys"
	"github.com/sessionbridge/sessionbridge/limit"
	"github.com/sessionbridge/sessionbridge/scope"
	"github.com/sessionbridge/sessionbridge/usage"
	"github.com/sessionbridge/sessionbridge/users"
)

// UserVerifier checks a username and password; *users.File implements it.
type UserVerifier interface {
	// Verify returns the user when password is theirs.
	Verify(username, password string) (users.User, bool)
}

// UserLister is implemented by a UserVerifier that can tell whether a
// username exists (*users.File does). The login audit names an existing user
// as such; any other name, which may well be a password typed into the wrong
// field, is logged only as a keyed hash. Without it every name of a failed
// sign-in is logged as a hash.
type UserLister interface {
	// Exists reports whether username is a user's name.
	Exists(username string) bool
}

// Publisher delivers application messages to the WebSockets of a user or a
// session on every node; the gateway implements it.
type Publisher interface {
	SendToUser(ctx context.Context, userID string, data json.RawMessage) error
	SendToSession(ctx context.Context, sessionID string, data json.RawMessage) error
}

// API serves the HTTP API of the sessionbridge server: the user routes under
// /auth/, the admin routes under /api/v1/ and the health probes. See
// docs/http-api.md for every route, body and error code.
//
// An API needs Sessions (with its Manager). Users, Presence, Publisher and
// Keys are optional, and so are the Manager's backend's Tickets: the routes
// that need a missing one answer 404. The
// admin routes answer 404 unless some credential could call them: an admin
// token, or JWTs or API keys (which need an admin scope).
//
// Credentials are read by Sessions.Auth, the authenticator the gateway
// shares; without one, the API builds one from Sessions.Manager,
// Sessions.CookieName, AdminToken and AllowedOrigins.
type API struct {
	Sessions *Sessions
	// Users checks passwords for POST /auth/login. If it is also a
	// UserLister, failed sign-ins of existing users are audited under their
	// username.
	Users UserVerifier
	// Presence counts live connections for the device lists and
	// GET /api/v1/connections.
	Presence sessionbridge.Presence
	// Publisher sends POST /api/v1/publish messages.
	Publisher Publisher
	// Keys manages the API keys of /api/v1/keys and /auth/keys.
	Keys *keys.Manager
	// Usage answers the usage routes (/api/v1/keys/{id}/usage,
	// /api/v1/users/{user_id}/usage, /api/v1/usage/top, /auth/usage and
	// /auth/keys/{id}/usage); nil answers them 404.
	Usage usage.Source
	// SessionScopes are the scopes a signed-in user holds, which bound the
	// scopes of the keys they create from /auth/keys; nil means every scope.
	SessionScopes []string
	// LoginLimiter, if set, refuses sign-ins from a client IP or for a
	// username with too many recent failures (429 rate_limited): a
	// *FailureLimiter counts for this node, the redis package's for the
	// cluster. A sign-in it cannot count is refused (503 unavailable).
	LoginLimiter limit.Failures
	// RequestLimits, if set, limits the requests of one client IP to the
	// login route and to the admin API (429 rate_limited).
	RequestLimits *RequestLimits
	// LoginConcurrency bounds the password checks that run at once across
	// all sign-ins served by the Handler; each costs a CPU core and, with
	// argon2id, 19 MiB of memory for its duration. Zero means
	// runtime.GOMAXPROCS(0).
	LoginConcurrency int
	// LoginQueueWait is how long a sign-in waits for one of those checks
	// before it is refused with 429 rate_limited; zero means
	// DefaultLoginQueueWait.
	LoginQueueWait time.Duration
	// AdminToken is the bearer token of the admin API, used only when
	// Sessions.Auth is nil (Handler panics if both are set).
	AdminToken string
	// AllowedOrigins are other origins ("https://app.example.com",
	// "https://*.example.com") whose pages may make state-changing cookie
	// requests; the server's own origin always may. Used only when
	// Sessions.Auth is nil (Handler panics if both are set).
	AllowedOrigins []string
	// Ready reports whether the store and bus are reachable, for /readyz;
	// nil means always ready.
	Ready  func(ctx context.Context) error
	Audit  *audit.Logger
	Logger *slog.Logger
	// ReadyDetails, if set, adds fields to the answer of a ready /readyz
	// (such as the store's persistence), for operators; they never make
	// the node unready.
	ReadyDetails func() map[string]any
}

func (a *API) logger() *slog.Logger {
	if a.Logger != nil {
		return a.Logger
	}
	return slog.Default()
}

// Handler returns the API's routes. Unknown paths answer 404 and known paths
// with another method 405, both with JSON bodies.
func (a *API) Handler() http.Handler {
	mux, _ := a.build(false)
	return mux
}

// Route is one path of the API and the methods it answers (HEAD, answered
// wherever GET is, is not listed).
type Route struct {
	Path    string
	Methods []string
}

// Routes returns every route Handler serves, in registration order; the
// OpenAPI document (GET /openapi.json) is checked against it.
func (a *API) Routes() []Route {
	_, routes := a.build(true)
	return routes
}

// build assembles the routes: a mux that serves them, and their list. With
// listOnly the mux is for listing only: no authenticator is made, so the
// API needs no Manager.
func (a *API) build(listOnly bool) (*http.ServeMux, []Route) {
	mux := http.NewServeMux()
	var routes []Route
	// Each path gets one pattern that dispatches on the method, so that a
	// wrong method gets a JSON 405 and literal paths such as
	// /auth/sessions/revoke-others cannot conflict with wildcard ones.
	route := func(path string, handlers map[string]http.Handler) {
		routes = append(routes, Route{Path: path, Methods: slices.Sorted(maps.Keys(handlers))})
		if h, ok := handlers[http.MethodGet]; ok {
			handlers[http.MethodHead] = h
		}
		allow := slices.Sorted(maps.Keys(handlers))
		allowed := strings.Join(allow, ", ")
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			h, ok := handlers[r.Method]
			if !ok {
				w.Header().Set("Allow", allowed)
				writeError(w, errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "method not allowed; allowed: %s", allowed))
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	hf := func(f http.HandlerFunc) http.Handler { return f }
	s := a.Sessions
	// Route kinds: user routes need a session; anyone routes any user
	// principal (a session, a JWT, an API key); change routes are user
	// routes under the cross-origin check; admin routes need an admin
	// credential. A list-only build wires none of them.
	load := func(h http.Handler) http.Handler { return h }
	sameOrigin := load
	user, anyone, change, admin := hf, hf, hf, hf
	if !listOnly {
		authn := a.authenticator()
		load = func(h http.Handler) http.Handler { return s.middleware(authn, h) }
		sameOrigin = a.sameOrigin(authn)
		user = func(f http.HandlerFunc) http.Handler { return load(s.guard(authn, true, f)) }
		anyone = func(f http.HandlerFunc) http.Handler { return load(s.guard(authn, false, f)) }
		change = func(f http.HandlerFunc) http.Handler { return sameOrigin(user(f)) }
		admin = func(f http.HandlerFunc) http.Handler {
			return a.limitRequests(RuleAdminPerMinute, a.adminRate(), a.admin(authn, f))
		}
	}

	login := a.newLogin()
	route("/auth/login", map[string]http.Handler{http.MethodPost: a.limitRequests(RuleLoginPerMinute, a.loginRate(), load(hf(login.serve)))})
	route("/auth/logout", map[string]http.Handler{http.MethodPost: sameOrigin(load(hf(a.logout)))})
	route("/auth/session", map[string]http.Handler{
		http.MethodGet:   user(a.getSession),
		http.MethodPatch: change(a.patchSession),
	})
	route("/auth/sessions", map[string]http.Handler{http.MethodGet: user(a.mySessions)})
	route("/auth/sessions/{id}", map[string]http.Handler{http.MethodDelete: change(a.deleteMySession)})
	route("/auth/sessions/revoke-others", map[string]http.Handler{http.MethodPost: change(a.revokeOthers)})
	route("/auth/ws-ticket", map[string]http.Handler{http.MethodPost: sameOrigin(anyone(a.wsTicket))})
	route("/auth/keys", map[string]http.Handler{
		http.MethodGet:  user(a.myKeys),
		http.MethodPost: change(a.createMyKey),
	})
	route("/auth/keys/{id}", map[string]http.Handler{http.MethodDelete: change(a.deleteMyKey)})
	route("/auth/keys/{id}/roll", map[string]http.Handler{http.MethodPost: change(a.rollMyKey)})
	route("/auth/keys/{id}/usage", map[string]http.Handler{http.MethodGet: user(a.myKeyUsage)})
	route("/auth/usage", map[string]http.Handler{http.MethodGet: user(a.myUsage)})

	route("/api/v1/sessions", map[string]http.Handler{http.MethodPost: admin(a.adminCreate)})
	route("/api/v1/sessions/{id}", map[string]http.Handler{
		http.MethodGet:    admin(a.adminGet),
		http.MethodPatch:  admin(a.adminPatch),
		http.MethodDelete: admin(a.adminDelete),
	})
	route("/api/v1/users/{user_id}/sessions", map[string]http.Handler{
		http.MethodGet:    admin(a.adminListUser),
		http.MethodDelete: admin(a.adminDeleteUser),
	})
	route("/api/v1/publish", map[string]http.Handler{http.MethodPost: admin(a.adminPublish)})
	route("/api/v1/connections", map[string]http.Handler{http.MethodGet: admin(a.adminConnections)})
	route("/api/v1/keys", map[string]http.Handler{http.MethodPost: admin(a.adminCreateKey)})
	route("/api/v1/keys/verify", map[string]http.Handler{http.MethodPost: admin(a.adminVerifyKey)})
	route("/api/v1/keys/{id}", map[string]http.Handler{
		http.MethodGet:    admin(a.adminGetKey),
		http.MethodPatch:  admin(a.adminPatchKey),
		http.MethodDelete: admin(a.adminDeleteKey),
	})
	route("/api/v1/keys/{id}/roll", map[string]http.Handler{http.MethodPost: admin(a.adminRollKey)})
	route("/api/v1/users/{user_id}/keys", map[string]http.Handler{
		http.MethodGet:    admin(a.adminListUserKeys),
		http.MethodDelete: admin(a.adminDeleteUserKeys),
	})
	route("/api/v1/keys/{id}/usage", map[string]http.Handler{http.MethodGet: admin(a.adminKeyUsage)})
	route("/api/v1/users/{user_id}/usage", map[string]http.Handler{http.MethodGet: admin(a.adminUserUsage)})
	route("/api/v1/usage/top", map[string]http.Handler{http.MethodGet: admin(a.adminTop)})

	route("/healthz", map[string]http.Handler{http.MethodGet: hf(a.healthz)})
	route("/readyz", map[string]http.Handler{http.MethodGet: hf(a.readyz)})
	route("/openapi.json", map[string]http.Handler{http.MethodGet: hf(serveOpenAPI)})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errorf(http.StatusNotFound, CodeNotFound, "no such route"))
	})
	return mux, routes
}

// authenticator returns the authenticator of the API's routes:
// Sessions.Auth, or one built from the API's own settings.
func (a *API) authenticator() *auth.Authenticator {
	if a.Sessions.Auth != nil {
		if a.AdminToken != "" || len(a.AllowedOrigins) > 0 {
			panic("httpapi: with Sessions.Auth set, the Authenticator decides the admin token and the allowed origins: leave API.AdminToken and API.AllowedOrigins empty")
		}
		return a.Sessions.Auth
	}
	cfg := auth.Config{Sessions: a.Sessions.Manager, CookieName: a.Sessions.CookieName, AdminToken: a.AdminToken, AllowedOrigins: a.AllowedOrigins}
	authn, err := auth.New(cfg)
	if err != nil && len(cfg.AllowedOrigins) > 0 {
		// Fewer trusted origins is stricter, never looser.
		a.logger().Warn("ignoring the allowed origins for cross-origin checks", "err", err)
		cfg.AllowedOrigins = nil
		authn, err = auth.New(cfg)
	}
	if err != nil {
		panic("httpapi: " + err.Error())
	}
	return authn
}

// sameOrigin returns a middleware that refuses cross-origin state-changing
// requests that rely on the ambient cookie, with 403 cross_origin_request,
// by the authenticator's origin policy (see auth.Origins.CheckRequest): the
// server's own origin and the allowed origins pass, and so do requests
// with an explicit credential, which a page cannot add to a cross-origin
// request without a CORS preflight that the API never grants.
func (a *API) sameOrigin(authn *auth.Authenticator) func(http.Handler) http.Handler {
	origins := authn.Origins()
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := origins.CheckRequest(r); err != nil {
				a.Audit.Log(r.Context(), audit.AuthzFail, a.Sessions.fields(r, audit.Fields{Reason: "cross_origin", Detail: r.Method + " " + r.URL.Path}))
				writeError(w, errorf(http.StatusForbidden, CodeCrossOrigin, "cross-origin request refused"))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// current returns the request's session; routes behind Require always have one.
func current(r *http.Request) *sessionbridge.Session {
	s, _ := FromContext(r.Context())
	return s
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	if a.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := a.Ready(ctx); err != nil {
			a.logger().LogAttrs(r.Context(), slog.LevelWarn, "not ready", logAttrErr(err))
			writeError(w, errorf(http.StatusServiceUnavailable, CodeNotReady, "the session store or event bus is unreachable"))
			return
		}
	}
	body := map[string]any{}
	if a.ReadyDetails != nil {
		for k, v := range a.ReadyDetails() {
			body[k] = v
		}
	}
	body["status"] = "ready"
	writeJSON(w, http.StatusOK, body)
}

// sessionView is a session in a device list: its public view, whether it is
// the requester's own, and how many WebSockets it has open across the cluster.
type sessionView struct {
	sessionbridge.PublicSession
	Current     bool `json:"current"`
	Connections int  `json:"connections"`
}

// views builds the device list of sessions, newest first, with connection
// counts. A presence failure leaves the counts at zero: the list still helps.
func (a *API) views(ctx context.Context, list []*sessionbridge.Session, currentID string) []sessionView {
	var counts map[string]int
	if a.Presence != nil && len(list) > 0 {
		ids := make([]string, len(list))
		for i, s := range list {
			ids[i] = s.ID
		}
		var err error
		if counts, err = a.Presence.SessionCounts(ctx, ids); err != nil {
			a.logger().LogAttrs(ctx, slog.LevelWarn, "connection counts unavailable", logAttrErr(err))
		}
	}
	out := make([]sessionView, 0, len(list))
	for _, s := range list {
		out = append(out, sessionView{PublicSession: s.Public(), Current: s.ID == currentID, Connections: counts[s.ID]})
	}
	slices.SortStableFunc(out, func(x, y sessionView) int { return y.CreatedAt.Compare(x.CreatedAt) })
	return out
}

// etag is the entity tag of a session or API key version.
func etag(v uint64) string { return `"` + strconv.FormatUint(v, 10) + `"` }

// ifMatch parses an If-Match header into the version it requires: 0 when
// absent or "*" (any current version).
func ifMatch(r *http.Request) (uint64, *apiError) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" || h == "*" {
		return 0, nil
	}
	q, ok := strings.CutPrefix(h, `"`)
	if ok {
		q, ok = strings.CutSuffix(q, `"`)
	}
	v, err := strconv.ParseUint(q, 10, 64)
	if !ok || err != nil || v == 0 {
		return 0, errorf(http.StatusBadRequest, CodeBadRequest, `If-Match must be a version in quotes, like "3"`)
	}
	return v, nil
}

// patch applies the request's merge patch to session id and answers with the
// updated session.
func (a *API) patch(w http.ResponseWriter, r *http.Request, id string, src sessionbridge.Source) {
	if e := checkJSONType(r, true); e != nil {
		writeError(w, e)
		return
	}
	version, e := ifMatch(r)
	if e != nil {
		writeError(w, e)
		return
	}
	body, e := readBody(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	if err := strictjson.Validate(body); err != nil {
		writeError(w, errorf(http.StatusBadRequest, CodeInvalidPatch, "invalid JSON body: %v", err))
		return
	}
	if !sessionbridge.ValidObject(body) {
		writeError(w, errorf(http.StatusBadRequest, CodeInvalidPatch, "the body must be a JSON object (a JSON merge patch)"))
		return
	}
	s, err := a.Sessions.Manager.Update(r.Context(), id, body, version, sessionbridge.Change{Source: src})
	if err != nil {
		writeError(w, a.changeError(r, err))
		return
	}
	f := audit.Fields{SessionID: s.ID, UserID: s.UserID, Source: string(src)}
	if src == sessionbridge.SourceAPI {
		f = a.adminFields(r, f)
	} else {
		f = a.Sessions.fields(r, f)
	}
	a.Audit.Log(r.Context(), audit.SessionUpdated, f)
	w.Header().Set("ETag", etag(s.Version))
	writeJSON(w, http.StatusOK, s.Public())
}

// changeError maps a Manager error to its answer.
func (a *API) changeError(r *http.Request, err error) *apiError {
	switch {
	case errors.Is(err, sessionbridge.ErrNotFound):
		return errorf(http.StatusNotFound, CodeNotFound, "no such session")
	case errors.Is(err, sessionbridge.ErrVersionConflict):
		return errorf(http.StatusPreconditionFailed, CodeVersionConflict, "the session changed since that version; fetch it and retry")
	case errors.Is(err, sessionbridge.ErrInvalidPatch):
		return errorf(http.StatusBadRequest, CodeInvalidPatch, "session data must be a JSON object")
	case errors.Is(err, sessionbridge.ErrInvalidUserID):
		return badUserID()
	case errors.Is(err, scope.ErrInvalid):
		return errorf(http.StatusBadRequest, CodeBadRequest, "scopes must be valid scope patterns")
	case errors.Is(err, sessionbridge.ErrDataTooLarge):
		maxBytes, _ := a.Sessions.Manager.DataLimits()
		return errorf(http.StatusRequestEntityTooLarge, CodeDataTooLarge, "session data would be larger than %d bytes; nothing was changed", maxBytes)
	case errors.Is(err, sessionbridge.ErrDataTooDeep):
		_, maxDepth := a.Sessions.Manager.DataLimits()
		return errorf(http.StatusBadRequest, CodeDataTooDeep, "session data would nest arrays and objects deeper than %d levels; nothing was changed", maxDepth)
	}
	if !errors.Is(err, sessionbridge.ErrUnavailable) {
		a.logger().LogAttrs(r.Context(), slog.LevelError, "session operation failed", slog.String("path", r.URL.Path), logAttrErr(err))
	}
	return storeError(err)
}
