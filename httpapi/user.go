package httpapi

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/audit"
	"github.com/sessionbridge/sessionbridge/limit"
	"github.com/sessionbridge/sessionbridge/users"
)

// loginRequest is the body of POST /auth/login.
type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// loginHandler serves POST /auth/login with the password check slots and the
// audit name key its Handler was built with.
type loginHandler struct {
	*API
	hashes *hashSlots
	// nameKey keys the hashes that stand for unknown usernames in audit
	// records. Random per handler: a hash can be matched with others of the
	// same process, never reversed into the name, even by brute force over
	// likely passwords.
	nameKey []byte
}

func (a *API) newLogin() *loginHandler {
	key := make([]byte, 32)
	// crypto/rand.Read never fails (it crashes the program instead).
	_, _ = rand.Read(key)
	return &loginHandler{API: a, hashes: newHashSlots(a.LoginConcurrency, a.LoginQueueWait), nameKey: key}
}

// auditName is how the username of a sign-in appears in its audit record: as
// is for a user that exists, else "unknown:" and 12 hex digits of a keyed
// hash. People type passwords into the username field; OWASP's logging
// guidance is not to record them.
func (a *loginHandler) auditName(username string) string {
	if l, ok := a.Users.(UserLister); ok && l.Exists(username) {
		return sanitizeName(username)
	}
	mac := hmac.New(sha256.New, a.nameKey)
	mac.Write([]byte(username))
	return "unknown:" + hex.EncodeToString(mac.Sum(nil)[:6])
}

func (a *loginHandler) serve(w http.ResponseWriter, r *http.Request) {
	if a.Users == nil {
		writeError(w, errorf(http.StatusNotFound, CodeNotFound, "password login is not configured"))
		return
	}
	var req loginRequest
	if e := decodeJSON(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if req.Username == "" || req.Password == "" {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "username and password are required"))
		return
	}
	f := a.Sessions.fields(r, audit.Fields{UserID: a.auditName(req.Username), Method: "password"})
	// Keys carry a prefix so that a username cannot collide with an IP.
	ipKey, userKey := "ip:"+f.IP, "user:"+truncate(req.Username, 128)
	// The attempt counts before the password is checked, so that attempts
	// made at once cannot all pass the limit. Refunds and resets outlive a
	// client that hangs up: an attempt left counted costs its user a try.
	keep := context.WithoutCancel(r.Context())
	var attempt limit.Reservation
	if a.LoginLimiter != nil {
		var (
			wait time.Duration
			ok   bool
			err  error
		)
		attempt, wait, ok, err = a.LoginLimiter.Reserve(r.Context(), ipKey, userKey)
		if err != nil {
			// Fail closed: a sign-in that cannot be counted is not
			// checked, or the limit would fall with the store.
			a.logger().LogAttrs(r.Context(), slog.LevelWarn, "sign-in failures cannot be counted", logAttrErr(err))
			f.Reason = "limit_unavailable"
			a.Audit.Log(r.Context(), audit.AuthnLoginFail, f)
			w.Header().Set("Retry-After", "1")
			writeError(w, errorf(http.StatusServiceUnavailable, CodeUnavailable, "sign-in is temporarily unavailable; retry later"))
			return
		}
		if !ok {
			f.Reason = "rate_limited"
			a.Audit.Log(r.Context(), audit.AuthnLoginFail, f)
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Round(time.Second)/time.Second)+1))
			writeError(w, errorf(http.StatusTooManyRequests, CodeRateLimited, "too many failed sign-ins; retry later"))
			return
		}
	}
	refund := func() {
		if attempt != nil {
			attempt.Refund(keep)
		}
	}
	if !a.hashes.acquire(r.Context()) {
		// Not evaluated: the attempt costs the client nothing.
		refund()
		f.Reason = "login_busy"
		a.Audit.Log(r.Context(), audit.AuthnLoginFail, f)
		w.Header().Set("Retry-After", "1")
		writeError(w, errorf(http.StatusTooManyRequests, CodeRateLimited, "too many sign-ins in progress; retry in a moment"))
		return
	}
	u, ok := func() (users.User, bool) {
		defer a.hashes.release()
		return a.Users.Verify(req.Username, req.Password)
	}()
	if !ok {
		f.Reason = "invalid_credentials"
		a.Audit.Log(r.Context(), audit.AuthnLoginFail, f)
		writeError(w, errorf(http.StatusUnauthorized, CodeInvalidCredentials, "invalid username or password"))
		return
	}
	refund()
	if a.LoginLimiter != nil {
		if err := a.LoginLimiter.Reset(keep, userKey); err != nil {
			// The user is in; their earlier failures stay counted until
			// the window passes.
			a.logger().LogAttrs(r.Context(), slog.LevelWarn, "sign-in failures of a user cannot be reset", logAttrErr(err))
		}
	}
	// The users file's scopes become the session's own; a user listed
	// without any gets the configured default.
	var scopes []string
	if len(u.Scopes) > 0 {
		scopes = u.Scopes
	}
	s, err := a.Sessions.LoginWith(w, r, sessionbridge.NewSession{UserID: u.Username, Scopes: scopes})
	if err != nil {
		writeError(w, a.changeError(r, err))
		return
	}
	w.Header().Set("ETag", etag(s.Version))
	writeJSON(w, http.StatusOK, s.Public())
}

// sanitizeName makes a client-supplied username fit for an audit line: valid
// UTF-8, no control characters, at most 64 bytes. Audit neutralises control
// characters too.
func sanitizeName(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return '\uFFFD'
		}
		return r
	}, s)
	return truncate(s, 64)
}

func (a *API) logout(w http.ResponseWriter, r *http.Request) {
	if err := a.Sessions.Logout(w, r); err != nil {
		writeError(w, a.changeError(r, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) getSession(w http.ResponseWriter, r *http.Request) {
	s := current(r)
	w.Header().Set("ETag", etag(s.Version))
	writeJSON(w, http.StatusOK, s.Public())
}

func (a *API) patchSession(w http.ResponseWriter, r *http.Request) {
	a.patch(w, r, current(r).ID, sessionbridge.SourceHTTP)
}

// sessionList is the body of the device lists.
type sessionList struct {
	Sessions []sessionView `json:"sessions"`
}

func (a *API) mySessions(w http.ResponseWriter, r *http.Request) {
	me := current(r)
	list, err := a.Sessions.Manager.List(r.Context(), me.UserID)
	if err != nil {
		writeError(w, a.changeError(r, err))
		return
	}
	writeJSON(w, http.StatusOK, sessionList{Sessions: a.views(r.Context(), list, me.ID)})
}

func (a *API) deleteMySession(w http.ResponseWriter, r *http.Request) {
	me := current(r)
	id := r.PathValue("id")
	target, err := a.Sessions.Manager.Get(r.Context(), id)
	if err == nil && target.UserID != me.UserID {
		// Someone else's session answers exactly like a missing one, so
		// that session IDs of other users cannot be probed.
		a.Audit.Log(r.Context(), audit.AuthzFail, a.Sessions.fields(r, audit.Fields{SessionID: me.ID, UserID: me.UserID, Reason: "not_owner", Detail: "delete session " + id}))
		err = sessionbridge.ErrNotFound
	}
	if err == nil {
		_, err = a.Sessions.Manager.Delete(r.Context(), id, sessionbridge.ReasonRevoked, sessionbridge.Change{Source: sessionbridge.SourceHTTP})
	}
	if err != nil {
		writeError(w, a.changeError(r, err))
		return
	}
	a.Audit.Log(r.Context(), audit.SessionRevoked, a.Sessions.fields(r, audit.Fields{SessionID: id, UserID: me.UserID, Reason: sessionbridge.ReasonRevoked, Detail: "revoked by its user"}))
	if id == me.ID {
		a.Sessions.clearCookie(w)
		stateFrom(r.Context()).session = nil
	}
	w.WriteHeader(http.StatusNoContent)
}

// revokedList is the answer of the bulk revocations.
type revokedList struct {
	Revoked []string `json:"revoked"`
	Count   int      `json:"count"`
}

func revoked(ids []string) revokedList {
	if ids == nil {
		ids = []string{}
	}
	return revokedList{Revoked: ids, Count: len(ids)}
}

func (a *API) revokeOthers(w http.ResponseWriter, r *http.Request) {
	me := current(r)
	ids, err := a.Sessions.Manager.DeleteUser(r.Context(), me.UserID, me.ID, sessionbridge.ReasonRevoked, sessionbridge.Change{Source: sessionbridge.SourceHTTP})
	for _, id := range ids {
		a.Audit.Log(r.Context(), audit.SessionRevoked, a.Sessions.fields(r, audit.Fields{SessionID: id, UserID: me.UserID, Reason: sessionbridge.ReasonRevoked, Detail: "revoked by another session of its user"}))
	}
	if err != nil {
		writeError(w, a.changeError(r, err))
		return
	}
	writeJSON(w, http.StatusOK, revoked(ids))
}

// ticketResponse is the answer of POST /auth/ws-ticket.
type ticketResponse struct {
	Ticket    string    `json:"ticket"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (a *API) wsTicket(w http.ResponseWriter, r *http.Request) {
	// Issued where the node's authenticator redeems them: the Manager's
	// backend.
	tickets := a.Sessions.Manager.Backend().Tickets
	if tickets == nil {
		writeError(w, errorf(http.StatusNotFound, CodeNotFound, "WebSocket tickets are not configured"))
		return
	}
	p, _ := PrincipalFromContext(r.Context())
	// The ticket stands for the principal as it is: a session ticket
	// follows its session; a JWT or API key ticket carries its scopes and
	// expiry (and the key's ID, which the upgrade reads again).
	t := sessionbridge.Ticket{UserID: p.UserID, SessionID: p.SessionID, Method: p.Method}
	if p.Method != sessionbridge.AuthSession {
		t.Scopes, t.ExpiresAt, t.KeyID = p.Scopes, p.ExpiresAt, p.KeyID
	}
	// Taken before issuing, so that the announced deadline is never later
	// than the real one.
	expires := time.Now().Add(sessionbridge.TicketTTL).UTC()
	ticket, err := tickets.Issue(r.Context(), t, sessionbridge.TicketTTL)
	if err != nil {
		writeError(w, a.changeError(r, err))
		return
	}
	writeJSON(w, http.StatusOK, ticketResponse{Ticket: ticket, ExpiresAt: expires})
}
