package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/audit"
	"github.com/sessionbridge/sessionbridge/auth"
	"github.com/sessionbridge/sessionbridge/device"
	"github.com/sessionbridge/sessionbridge/internal/strictjson"
	"github.com/sessionbridge/sessionbridge/scope"
)

// admin guards an admin route. It authenticates the request with the
// authenticator every door uses and admits the admin token, and JWT and API
// key principals that hold the route's admin scope (admin:read for GET and
// HEAD, admin:write for the rest; see auth.Grants); a session is never
// admitted. Without any credential that could be admitted the admin API does
// not exist (404), so that a server started without one exposes nothing to
// guess at. The handler finds the principal with auth.FromContext.
func (a *API) admin(authn *auth.Authenticator, next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !authn.AdminEnabled() {
			writeError(w, errorf(http.StatusNotFound, CodeNotFound, "the admin API is disabled; start the server with an admin token to enable it"))
			return
		}
		ctx := r.Context()
		cred, err := authn.Extract(r, auth.HTTP)
		var res *auth.Result
		if err == nil {
			res, err = authn.Authenticate(ctx, cred, a.Sessions.keyClientIP(r, cred))
		}
		fail := audit.Fields{Method: cred.Kind.String(), Source: string(sessionbridge.SourceAPI), Detail: r.Method + " " + r.URL.Path}
		switch {
		case err == nil:
		case errors.Is(err, auth.ErrConflicting):
			fail.Reason = err.Error()
			a.Audit.Log(ctx, audit.AuthnFailed, a.Sessions.fields(r, fail))
			writeError(w, errorf(http.StatusUnauthorized, CodeConflictingTokens, "the request carries conflicting credentials"))
			return
		case errors.Is(err, auth.ErrNoCredentials), errors.Is(err, auth.ErrMalformed),
			errors.Is(err, sessionbridge.ErrInvalidToken), errors.Is(err, sessionbridge.ErrExpired):
			fail.Reason = "invalid_" + cred.Source.String()
			if errors.Is(err, auth.ErrNoCredentials) {
				fail.Reason = "missing_credentials"
			}
			a.Audit.Log(ctx, audit.AuthnFailed, a.Sessions.fields(r, fail))
			w.Header().Set("WWW-Authenticate", `Bearer realm="sessionbridge admin"`)
			writeError(w, errorf(http.StatusUnauthorized, CodeUnauthenticated, "a valid admin token, or a JWT or API key with an admin scope, is required"))
			return
		default:
			// Fail closed: nobody gets in while credentials cannot be
			// checked.
			a.logger().LogAttrs(ctx, slog.LevelWarn, "admin authentication failed", slog.String("method", cred.Kind.String()), logAttrErr(err))
			writeError(w, errorf(http.StatusServiceUnavailable, CodeUnavailable, "authentication is temporarily unavailable; retry later"))
			return
		}
		ctx = auth.NewContext(ctx, res)
		r = r.WithContext(ctx)
		if need := auth.AdminScope(r.Method); !auth.Grants(res.Principal, need) {
			a.Audit.Log(ctx, audit.AuthzFail, a.adminFields(r, audit.Fields{UserID: res.Principal.UserID, Reason: "missing_scope", Detail: r.Method + " " + r.URL.Path + " needs " + need}))
			writeError(w, errorf(http.StatusForbidden, CodeForbidden, "this route needs the scope %s (sessions never call the admin API)", need))
			return
		}
		next(w, r)
	})
}

// adminFields fills in the request's address and who called the admin API:
// the method of the credential ("admin_token", "jwt", "apikey") and an API
// key's ID, so that every admin action is audited by key.
func (a *API) adminFields(r *http.Request, f audit.Fields) audit.Fields {
	f.Source = string(sessionbridge.SourceAPI)
	if res, ok := auth.FromContext(r.Context()); ok {
		f.Method, f.KeyID = string(res.Principal.Method), res.Principal.KeyID
		if res.Principal.Method == auth.MethodAdmin {
			f.Method = "admin_token"
		}
	}
	return a.Sessions.fields(r, f)
}

// createRequest is the body of POST /api/v1/sessions.
type createRequest struct {
	UserID string          `json:"user_id"`
	Data   json.RawMessage `json:"data"`
	// TTLSeconds is the session's absolute lifetime, capped by the configured
	// absolute timeout; 0 or absent means that timeout.
	TTLSeconds int64 `json:"ttl_seconds"`
	// Device describes the browser the session is for, as the calling
	// application saw it.
	Device *deviceRequest `json:"device"`
	// Scopes are the session's own scope patterns; absent or null means
	// the configured default.
	Scopes json.RawMessage `json:"scopes"`
}

type deviceRequest struct {
	UserAgent string `json:"user_agent"`
	IP        string `json:"ip"`
}

// createResponse is the answer of POST /api/v1/sessions: the only answer that
// ever carries a session token.
type createResponse struct {
	ID        string                      `json:"id"`
	Token     string                      `json:"token"`
	ExpiresAt time.Time                   `json:"expires_at"`
	Session   sessionbridge.PublicSession `json:"session"`
}

// checkUserID refuses a user ID, from a body, path or query, that
// sessionbridge.CheckUserID refuses.
func checkUserID(id string) *apiError {
	if sessionbridge.CheckUserID(id) != nil {
		return badUserID()
	}
	return nil
}

// badUserID is the answer to a user ID that sessionbridge.CheckUserID
// refuses.
func badUserID() *apiError {
	return errorf(http.StatusBadRequest, CodeBadRequest, "user_id must be 1 to %d bytes of printable UTF-8 (no control characters, no U+FFFD)", sessionbridge.MaxUserIDLen)
}

func (a *API) adminCreate(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if e := decodeJSON(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if e := checkUserID(req.UserID); e != nil {
		writeError(w, e)
		return
	}
	if req.TTLSeconds < 0 {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "ttl_seconds must not be negative"))
		return
	}
	data := req.Data
	if string(data) == "null" {
		data = nil
	}
	if data != nil && !sessionbridge.ValidObject(data) {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "data must be a JSON object"))
		return
	}
	var scopes []string
	if len(req.Scopes) > 0 && string(req.Scopes) != "null" {
		list, e := decodeScopes(req.Scopes)
		if e != nil {
			writeError(w, e)
			return
		}
		scopes = list
	}
	m := a.Sessions.Manager
	var ttl time.Duration
	if req.TTLSeconds > 0 {
		// Capping in seconds first keeps the multiplication from overflowing.
		ttl = time.Duration(min(req.TTLSeconds, int64(m.Absolute()/time.Second))) * time.Second
	}
	var dev sessionbridge.Device
	if d := req.Device; d != nil {
		dev.UserAgent = device.CleanUserAgent(d.UserAgent)
		dev.Browser, dev.OS, dev.DeviceType = device.Parse(dev.UserAgent)
		if d.IP != "" {
			ip, err := netip.ParseAddr(d.IP)
			if err != nil {
				writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "device.ip must be an IP address"))
				return
			}
			dev.IP = ip.Unmap().String()
		}
	}
	s, token, err := m.Create(r.Context(), sessionbridge.NewSession{UserID: req.UserID, Data: data, Device: dev, TTL: ttl, Scopes: scopes}, sessionbridge.Change{Source: sessionbridge.SourceAPI})
	if err != nil {
		writeError(w, a.changeError(r, err))
		return
	}
	a.Audit.Log(r.Context(), audit.SessionCreated, a.adminFields(r, audit.Fields{SessionID: s.ID, UserID: s.UserID}))
	w.Header().Set("Location", "/api/v1/sessions/"+s.ID)
	writeJSON(w, http.StatusCreated, createResponse{ID: s.ID, Token: token, ExpiresAt: s.ExpiresAt, Session: s.Public()})
}

func (a *API) adminGet(w http.ResponseWriter, r *http.Request) {
	s, err := a.Sessions.Manager.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, a.changeError(r, err))
		return
	}
	w.Header().Set("ETag", etag(s.Version))
	writeJSON(w, http.StatusOK, s.Public())
}

// adminPatchRequest is the application/json body of PATCH
// /api/v1/sessions/{id}: a merge patch of the session's data, new scopes, or
// both. An application/merge-patch+json body is the merge patch of the data
// itself, as in the original contract.
type adminPatchRequest struct {
	Data   json.RawMessage `json:"data"`
	Scopes json.RawMessage `json:"scopes"`
}

func (a *API) adminPatch(w http.ResponseWriter, r *http.Request) {
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
	// The rules of strictjson first, under the code of every merge patch.
	if err := strictjson.Validate(body); err != nil {
		writeError(w, errorf(http.StatusBadRequest, CodeInvalidPatch, "invalid JSON body: %v", err))
		return
	}
	var req adminPatchRequest
	if isMergePatch(r) {
		// RFC 7386's media type says what the body is: a patch of the
		// session's data, which is all the original contract knew.
		req.Data = body
	} else if e := decodeStrict(body, &req); e != nil {
		writeError(w, e)
		return
	}
	var p sessionbridge.SessionPatch
	if len(req.Data) > 0 && string(req.Data) != "null" {
		if !sessionbridge.ValidObject(req.Data) {
			writeError(w, errorf(http.StatusBadRequest, CodeInvalidPatch, "data must be a JSON object (a JSON merge patch of the session's data)"))
			return
		}
		p.Data = req.Data
	}
	if len(req.Scopes) > 0 {
		if string(req.Scopes) == "null" {
			writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "scopes must be a list of scope patterns; to give a session the default again, send the default list"))
			return
		}
		list, e := decodeScopes(req.Scopes)
		if e != nil {
			writeError(w, e)
			return
		}
		p.Scopes = &list
	}
	if p.Data == nil && p.Scopes == nil {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, `the body must be {"data": <merge patch>, "scopes": [<pattern>, ...]} with at least one of the two`))
		return
	}
	s, err := a.Sessions.Manager.Patch(r.Context(), r.PathValue("id"), p, version, sessionbridge.Change{Source: sessionbridge.SourceAPI})
	if err != nil {
		writeError(w, a.changeError(r, err))
		return
	}
	f := audit.Fields{SessionID: s.ID, UserID: s.UserID, Source: string(sessionbridge.SourceAPI), Detail: fmt.Sprintf("version %d", s.Version)}
	if p.Scopes != nil {
		f.Detail += "; scopes " + strings.Join(s.Scopes, " ")
	}
	a.Audit.Log(r.Context(), audit.SessionUpdated, a.Sessions.fields(r, f))
	w.Header().Set("ETag", etag(s.Version))
	writeJSON(w, http.StatusOK, s.Public())
}

// isMergePatch reports whether r's body is declared an RFC 7386 merge
// patch (application/merge-patch+json).
func isMergePatch(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/merge-patch+json"
}

// decodeScopes reads a list of scope patterns from a request body and checks
// each under sessionbridge.CompileScopes. Refusals name the position of the
// bad pattern, never the pattern itself.
func decodeScopes(raw json.RawMessage) ([]string, *apiError) {
	var list []string
	if err := strictjson.Decode(raw, &list); err != nil || list == nil {
		return nil, errorf(http.StatusBadRequest, CodeBadRequest, "scopes must be a JSON array of scope patterns")
	}
	if len(list) > scope.MaxPatterns {
		return nil, errorf(http.StatusBadRequest, CodeBadRequest, "scopes: at most %d patterns", scope.MaxPatterns)
	}
	for i, p := range list {
		if _, err := sessionbridge.CompileScopes([]string{p}); err != nil {
			return nil, errorf(http.StatusBadRequest, CodeBadRequest,
				"scopes/%d is not a valid scope pattern: segments of letters, digits, '_', '-' and ':' split on '.', '*' as a whole segment, '**' only as the last one, at most %d bytes, '!' in front to deny", i, scope.MaxPatternLen)
		}
	}
	return list, nil
}

func (a *API) adminDelete(w http.ResponseWriter, r *http.Request) {
	s, err := a.Sessions.Manager.Delete(r.Context(), r.PathValue("id"), sessionbridge.ReasonRevoked, sessionbridge.Change{Source: sessionbridge.SourceAPI})
	if err != nil {
		writeError(w, a.changeError(r, err))
		return
	}
	a.Audit.Log(r.Context(), audit.SessionRevoked, a.adminFields(r, audit.Fields{SessionID: s.ID, UserID: s.UserID, Reason: sessionbridge.ReasonRevoked}))
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) adminListUser(w http.ResponseWriter, r *http.Request) {
	userID := r.PathValue("user_id")
	if e := checkUserID(userID); e != nil {
		writeError(w, e)
		return
	}
	list, err := a.Sessions.Manager.List(r.Context(), userID)
	if err != nil {
		writeError(w, a.changeError(r, err))
		return
	}
	writeJSON(w, http.StatusOK, sessionList{Sessions: a.views(r.Context(), list, "")})
}

func (a *API) adminDeleteUser(w http.ResponseWriter, r *http.Request) {
	userID := r.PathValue("user_id")
	if e := checkUserID(userID); e != nil {
		writeError(w, e)
		return
	}
	ids, err := a.Sessions.Manager.DeleteUser(r.Context(), userID, "", sessionbridge.ReasonRevoked, sessionbridge.Change{Source: sessionbridge.SourceAPI})
	for _, id := range ids {
		a.Audit.Log(r.Context(), audit.SessionRevoked, a.adminFields(r, audit.Fields{SessionID: id, UserID: userID, Reason: sessionbridge.ReasonRevoked}))
	}
	if err != nil {
		writeError(w, a.changeError(r, err))
		return
	}
	writeJSON(w, http.StatusOK, revoked(ids))
}

// publishRequest is the body of POST /api/v1/publish: exactly one of UserID
// and SessionID.
type publishRequest struct {
	UserID    string          `json:"user_id"`
	SessionID string          `json:"session_id"`
	Data      json.RawMessage `json:"data"`
}

func (a *API) adminPublish(w http.ResponseWriter, r *http.Request) {
	if a.Publisher == nil {
		writeError(w, errorf(http.StatusNotFound, CodeNotFound, "publishing is not configured"))
		return
	}
	var req publishRequest
	if e := decodeJSON(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if (req.UserID == "") == (req.SessionID == "") {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "give exactly one of user_id and session_id"))
		return
	}
	if req.UserID != "" {
		if e := checkUserID(req.UserID); e != nil {
			writeError(w, e)
			return
		}
	}
	if len(req.Data) == 0 {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "data is required"))
		return
	}
	var err error
	if req.UserID != "" {
		err = a.Publisher.SendToUser(r.Context(), req.UserID, req.Data)
	} else {
		err = a.Publisher.SendToSession(r.Context(), req.SessionID, req.Data)
	}
	if err != nil {
		writeError(w, a.changeError(r, err))
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "accepted"})
}

// connectionList is the answer of GET /api/v1/connections.
type connectionList struct {
	Connections []sessionbridge.ConnInfo `json:"connections"`
}

func (a *API) adminConnections(w http.ResponseWriter, r *http.Request) {
	if a.Presence == nil {
		writeError(w, errorf(http.StatusNotFound, CodeNotFound, "connection presence is not configured"))
		return
	}
	userID, keyID := r.URL.Query().Get("user_id"), r.URL.Query().Get("key_id")
	if userID != "" {
		if e := checkUserID(userID); e != nil {
			writeError(w, e)
			return
		}
	}
	var list []sessionbridge.ConnInfo
	var err error
	switch {
	case keyID != "" && userID != "":
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "give user_id or key_id, not both"))
		return
	case keyID != "":
		if !sessionbridge.ValidAPIKeyID(keyID) {
			writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "key_id is not an API key ID"))
			return
		}
		list, err = a.keyConnections(r, keyID)
	default:
		list, err = a.Presence.UserConnections(r.Context(), userID)
	}
	if err != nil {
		writeError(w, a.changeError(r, err))
		return
	}
	if list == nil {
		list = []sessionbridge.ConnInfo{}
	}
	writeJSON(w, http.StatusOK, connectionList{Connections: list})
}
