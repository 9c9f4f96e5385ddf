package httpapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/audit"
	"github.com/sessionbridge/sessionbridge/keys"
	"github.com/sessionbridge/sessionbridge/scope"
)

// adminScopes are the scopes that open the admin API. A user's own keys
// never allow them unless the user holds them by name: a wildcard in a
// user's request does not reach them.
var adminScopes = []string{"admin:read", "admin:write"}

// maxTTLSeconds bounds ttl_seconds when no maximum key lifetime is
// configured, so that the lifetime fits a time.Duration: 100 years.
const maxTTLSeconds = 100 * 365 * 24 * 3600

// keyView is the public view of an API key: everything but its secret's
// hash, which no answer ever carries.
type keyView struct {
	ID         string               `json:"id"`
	UserID     string               `json:"user_id"`
	Name       string               `json:"name"`
	Scopes     []string             `json:"scopes"`
	Limits     sessionbridge.Limits `json:"limits"`
	Meta       json.RawMessage      `json:"meta"`
	CreatedAt  time.Time            `json:"created_at"`
	ExpiresAt  *time.Time           `json:"expires_at"`
	LastUsedAt *time.Time           `json:"last_used_at"`
	LastIP     *string              `json:"last_ip"`
	Version    uint64               `json:"version"`
}

func viewKey(k *sessionbridge.APIKey) keyView {
	v := keyView{
		ID: k.ID, UserID: k.UserID, Name: k.Name, Scopes: k.Scopes, Limits: k.Limits, Meta: k.Meta,
		CreatedAt: k.CreatedAt.UTC(), Version: k.Version,
		ExpiresAt: timeOrNil(k.ExpiresAt), LastUsedAt: timeOrNil(k.LastUsedAt),
	}
	if v.Scopes == nil {
		v.Scopes = []string{}
	}
	if len(v.Meta) == 0 {
		v.Meta = json.RawMessage(`{}`)
	}
	if k.LastIP != "" {
		ip := k.LastIP
		v.LastIP = &ip
	}
	return v
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// issuedKey is the answer of a create or a roll: the only answers that ever
// carry a key.
type issuedKey struct {
	Key string `json:"key"`
	keyView
}

// keyList is the answer of the key lists, oldest key first.
type keyList struct {
	Keys []keyView `json:"keys"`
}

func viewKeys(list []*sessionbridge.APIKey) keyList {
	out := keyList{Keys: make([]keyView, 0, len(list))}
	for _, k := range list {
		out.Keys = append(out.Keys, viewKey(k))
	}
	return out
}

// keysEnabled answers 404 when no key manager is configured.
func (a *API) keysEnabled(w http.ResponseWriter) bool {
	if a.Keys == nil {
		writeError(w, errorf(http.StatusNotFound, CodeNotFound, "API keys are not configured"))
		return false
	}
	return true
}

// keyError maps a keys.Manager error to its answer.
func (a *API) keyError(r *http.Request, err error) *apiError {
	switch {
	case errors.Is(err, keys.ErrInvalid):
		msg := strings.TrimPrefix(err.Error(), keys.ErrInvalid.Error()+": ")
		return errorf(http.StatusBadRequest, CodeBadRequest, "%s", truncate(msg, 300))
	case errors.Is(err, sessionbridge.ErrKeyNotFound):
		return errorf(http.StatusNotFound, CodeNotFound, "no such API key")
	case errors.Is(err, sessionbridge.ErrVersionConflict):
		return errorf(http.StatusPreconditionFailed, CodeVersionConflict, "the API key changed since that version; fetch it and retry")
	case errors.Is(err, sessionbridge.ErrUnavailable):
		return errorf(http.StatusServiceUnavailable, CodeUnavailable, "the key store is unavailable; retry later")
	}
	a.logger().LogAttrs(r.Context(), slog.LevelError, "API key operation failed", slog.String("path", r.URL.Path), logAttrErr(err))
	return errorf(http.StatusInternalServerError, CodeInternal, "internal error")
}

// pathKeyID is keyID on a route that needs the key manager.
func (a *API) pathKeyID(w http.ResponseWriter, r *http.Request) (string, bool) {
	if !a.keysEnabled(w) {
		return "", false
	}
	return keyID(w, r)
}

// keyID returns the {id} of the path when it has the layout of a key ID;
// anything else cannot name a key and answers 404 without a lookup.
func keyID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !sessionbridge.ValidAPIKeyID(id) {
		writeError(w, errorf(http.StatusNotFound, CodeNotFound, "no such API key"))
		return "", false
	}
	return id, true
}

// seconds turns a count of seconds from a body into a duration, refusing a
// negative one and one above most.
func seconds(field string, n, most int64) (time.Duration, *apiError) {
	if n < 0 {
		return 0, errorf(http.StatusBadRequest, CodeBadRequest, "%s must not be negative", field)
	}
	if n > most {
		return 0, errorf(http.StatusBadRequest, CodeBadRequest, "%s must be at most %d", field, most)
	}
	return time.Duration(n) * time.Second, nil
}

func (a *API) ttl(n int64) (time.Duration, *apiError) {
	if m := a.Keys.MaxTTL; m > 0 && n > int64(m/time.Second) {
		// The Manager caps it anyway; capping here keeps the multiplication
		// from overflowing.
		return m, nil
	}
	return seconds("ttl_seconds", n, maxTTLSeconds)
}

func (a *API) keyFields(r *http.Request, k *sessionbridge.APIKey, src sessionbridge.Source) audit.Fields {
	return a.Sessions.fields(r, audit.Fields{KeyID: k.ID, UserID: k.UserID, Source: string(src)})
}

// ---------- admin routes ----------

// keyCreateRequest is the body of POST /api/v1/keys.
type keyCreateRequest struct {
	UserID string   `json:"user_id"`
	Name   string   `json:"name"`
	Scopes []string `json:"scopes"`
	// Limits override the configured rate limits for the key.
	Limits sessionbridge.Limits `json:"limits"`
	// Meta is the application's own JSON object.
	Meta json.RawMessage `json:"meta"`
	// TTLSeconds is the key's lifetime, capped by the configured maximum;
	// 0 or absent means that maximum, or no expiry.
	TTLSeconds int64 `json:"ttl_seconds"`
}

func (a *API) adminCreateKey(w http.ResponseWriter, r *http.Request) {
	if !a.keysEnabled(w) {
		return
	}
	var req keyCreateRequest
	if e := decodeJSON(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if e := checkUserID(req.UserID); e != nil {
		writeError(w, e)
		return
	}
	ttl, e := a.ttl(req.TTLSeconds)
	if e != nil {
		writeError(w, e)
		return
	}
	meta := req.Meta
	if string(meta) == "null" {
		meta = nil
	}
	key, k, err := a.Keys.Create(r.Context(), keys.NewKey{
		UserID: req.UserID, Name: req.Name, Scopes: req.Scopes, Limits: req.Limits, Meta: meta, TTL: ttl,
	})
	if err != nil {
		writeError(w, a.keyError(r, err))
		return
	}
	f := a.keyFields(r, k, sessionbridge.SourceAPI)
	f.Method = "admin_token"
	a.Audit.Log(r.Context(), audit.APIKeyCreated, f)
	w.Header().Set("Location", "/api/v1/keys/"+k.ID)
	w.Header().Set("ETag", etag(k.Version))
	writeJSON(w, http.StatusCreated, issuedKey{Key: key, keyView: viewKey(k)})
}

func (a *API) adminGetKey(w http.ResponseWriter, r *http.Request) {
	id, ok := a.pathKeyID(w, r)
	if !ok {
		return
	}
	k, err := a.Keys.Get(r.Context(), id)
	if err != nil {
		writeError(w, a.keyError(r, err))
		return
	}
	w.Header().Set("ETag", etag(k.Version))
	writeJSON(w, http.StatusOK, viewKey(k))
}

// keyPatchRequest is the body of PATCH /api/v1/keys/{id}. Each member is
// read only when present: name, scopes and limits replace the key's, meta is
// a merge patch of the key's meta.
type keyPatchRequest struct {
	Name   json.RawMessage `json:"name"`
	Scopes json.RawMessage `json:"scopes"`
	Limits json.RawMessage `json:"limits"`
	Meta   json.RawMessage `json:"meta"`
}

// patchField decodes one present member of a patch into v; null is refused, since
// none of these can be removed.
func patchField(name string, raw json.RawMessage, v any) (bool, *apiError) {
	if raw == nil {
		return false, nil
	}
	if string(raw) == "null" {
		return false, errorf(http.StatusBadRequest, CodeBadRequest, "%s cannot be null; leave it out to keep it", name)
	}
	if e := decodeStrict(raw, v); e != nil {
		e.Message = strings.Replace(e.Message, "invalid JSON body", "invalid "+name, 1)
		return false, e
	}
	return true, nil
}

func (a *API) adminPatchKey(w http.ResponseWriter, r *http.Request) {
	id, ok := a.pathKeyID(w, r)
	if !ok {
		return
	}
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
	var req keyPatchRequest
	if e := decodeStrict(body, &req); e != nil {
		writeError(w, e)
		return
	}
	var c keys.Change
	var name string
	var scopes []string
	var limits sessionbridge.Limits
	set := false
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		v    any
		use  func()
	}{
		{"name", req.Name, &name, func() { c.Name = &name }},
		{"scopes", req.Scopes, &scopes, func() {
			if scopes == nil {
				scopes = []string{}
			}
			c.Scopes = &scopes
		}},
		{"limits", req.Limits, &limits, func() { c.Limits = &limits }},
	} {
		present, e := patchField(f.name, f.raw, f.v)
		if e != nil {
			writeError(w, e)
			return
		}
		if present {
			f.use()
			set = true
		}
	}
	if req.Meta != nil {
		if !sessionbridge.ValidObject(req.Meta) {
			writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "meta must be a JSON object (a merge patch of the key's meta)"))
			return
		}
		c.Meta, set = req.Meta, true
	}
	if !set {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "nothing to change: give name, scopes, limits or meta"))
		return
	}
	k, err := a.Keys.Update(r.Context(), id, c, version)
	if err != nil {
		writeError(w, a.keyError(r, err))
		return
	}
	a.Audit.Log(r.Context(), audit.APIKeyUpdated, a.keyFields(r, k, sessionbridge.SourceAPI))
	w.Header().Set("ETag", etag(k.Version))
	writeJSON(w, http.StatusOK, viewKey(k))
}

func (a *API) adminDeleteKey(w http.ResponseWriter, r *http.Request) {
	id, ok := a.pathKeyID(w, r)
	if !ok {
		return
	}
	k, err := a.Keys.Delete(r.Context(), id)
	if err != nil {
		writeError(w, a.keyError(r, err))
		return
	}
	a.Audit.Log(r.Context(), audit.APIKeyRevoked, a.keyFields(r, k, sessionbridge.SourceAPI))
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) adminListUserKeys(w http.ResponseWriter, r *http.Request) {
	if !a.keysEnabled(w) {
		return
	}
	userID := r.PathValue("user_id")
	if e := checkUserID(userID); e != nil {
		writeError(w, e)
		return
	}
	list, err := a.Keys.List(r.Context(), userID)
	if err != nil {
		writeError(w, a.keyError(r, err))
		return
	}
	writeJSON(w, http.StatusOK, viewKeys(list))
}

// keyRollRequest is the body of the roll routes.
type keyRollRequest struct {
	// GraceSeconds is how long the old key keeps working, at most until its
	// own expiry; 0 or absent ends it now.
	GraceSeconds int64 `json:"grace_seconds"`
}

// roll issues the successor of key id and answers with it.
func (a *API) roll(w http.ResponseWriter, r *http.Request, id string, grace time.Duration, src sessionbridge.Source) {
	key, k, err := a.Keys.Roll(r.Context(), id, grace)
	if err != nil {
		writeError(w, a.keyError(r, err))
		return
	}
	f := a.keyFields(r, k, src)
	f.Detail = "replaces " + id
	a.Audit.Log(r.Context(), audit.APIKeyRolled, f)
	w.Header().Set("ETag", etag(k.Version))
	writeJSON(w, http.StatusCreated, issuedKey{Key: key, keyView: viewKey(k)})
}

func (a *API) graceOf(w http.ResponseWriter, r *http.Request) (time.Duration, bool) {
	var req keyRollRequest
	if e := decodeJSON(w, r, &req); e != nil {
		writeError(w, e)
		return 0, false
	}
	grace, e := seconds("grace_seconds", req.GraceSeconds, int64(keys.MaxRollGrace/time.Second))
	if e != nil {
		writeError(w, e)
		return 0, false
	}
	return grace, true
}

func (a *API) adminRollKey(w http.ResponseWriter, r *http.Request) {
	id, ok := a.pathKeyID(w, r)
	if !ok {
		return
	}
	grace, ok := a.graceOf(w, r)
	if !ok {
		return
	}
	a.roll(w, r, id, grace, sessionbridge.SourceAPI)
}

// keyVerifyRequest is the body of POST /api/v1/keys/verify.
type keyVerifyRequest struct {
	Key string `json:"key"`
	// IP is the address the key was presented from, as the application saw
	// it; recorded as the key's last IP.
	IP string `json:"ip"`
}

// keyVerifyResponse says whether a key is valid and, when it is, which key
// it is. It never says why a key is not valid.
type keyVerifyResponse struct {
	Valid bool     `json:"valid"`
	Key   *keyView `json:"key,omitempty"`
}

func (a *API) adminVerifyKey(w http.ResponseWriter, r *http.Request) {
	if !a.keysEnabled(w) {
		return
	}
	var req keyVerifyRequest
	if e := decodeJSON(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if req.Key == "" {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "key is required"))
		return
	}
	var ip string
	if req.IP != "" {
		addr, err := netip.ParseAddr(req.IP)
		if err != nil {
			writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "ip must be an IP address"))
			return
		}
		ip = addr.Unmap().String()
	}
	k, err := a.Keys.Verify(r.Context(), req.Key, ip)
	switch {
	case errors.Is(err, sessionbridge.ErrInvalidToken):
		f := a.Sessions.fields(r, audit.Fields{Method: "apikey", Source: string(sessionbridge.SourceAPI), Reason: "invalid_api_key", Detail: "POST /api/v1/keys/verify"})
		if id, _, perr := sessionbridge.ParseAPIKey(req.Key); perr == nil {
			// The ID is public; the rest of the key never reaches a log.
			f.KeyID = id
		}
		a.Audit.Log(r.Context(), audit.AuthnFailed, f)
		writeJSON(w, http.StatusOK, keyVerifyResponse{Valid: false})
		return
	case err != nil:
		writeError(w, a.keyError(r, err))
		return
	}
	v := viewKey(k)
	writeJSON(w, http.StatusOK, keyVerifyResponse{Valid: true, Key: &v})
}

// ---------- user routes ----------

// myKeyRequest is the body of POST /auth/keys. Limits and meta are not
// among its members: an application may trust them, so only the admin API
// sets them.
type myKeyRequest struct {
	Name       string   `json:"name"`
	Scopes     []string `json:"scopes"`
	TTLSeconds int64    `json:"ttl_seconds"`
}

// heldScopes compiles the scopes of a signed-in user (SessionScopes; nil
// means every scope), with a deny added for each admin scope the user does
// not hold by name.
func (a *API) heldScopes() (scope.Set, []string, error) {
	held := slices.Clone(a.SessionScopes)
	if held == nil {
		held = []string{"**"}
	}
	var notHeld []string
	for _, s := range adminScopes {
		if !slices.Contains(held, s) {
			notHeld = append(notHeld, s)
			held = append(held, "!"+s)
		}
	}
	set, err := scope.Compile(held...)
	return set, notHeld, err
}

// ownScopes checks that requested asks for nothing beyond the user's own
// scopes, and returns the scopes to store: requested, plus a deny of each
// admin scope the user does not hold that a wildcard of requested would
// allow. 400 for a malformed pattern, 403 for one beyond the user's scopes.
func (a *API) ownScopes(r *http.Request, requested []string) ([]string, *apiError) {
	held, notHeld, err := a.heldScopes()
	if err != nil {
		a.logger().LogAttrs(r.Context(), slog.LevelError, "the configured session scopes do not compile", logAttrErr(err))
		return nil, errorf(http.StatusInternalServerError, CodeInternal, "internal error")
	}
	want, err := scope.Compile(requested...)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, CodeBadRequest, "%s", truncate(err.Error(), 300))
	}
	out := slices.Clone(requested)
	if out == nil {
		out = []string{}
	}
	for _, s := range notHeld {
		switch {
		case slices.Contains(requested, s):
			return nil, errorf(http.StatusForbidden, CodeForbidden, "scope %q is beyond your own scopes", s)
		case want.Allows(s) && !slices.Contains(requested, "!"+s):
			out = append(out, "!"+s)
		}
	}
	if want, err = scope.Compile(out...); err != nil {
		return nil, errorf(http.StatusBadRequest, CodeBadRequest, "%s", truncate(err.Error(), 300))
	}
	if bad := held.Uncovered(want); len(bad) > 0 {
		return nil, errorf(http.StatusForbidden, CodeForbidden, "scope %q is beyond your own scopes", truncate(bad[0], 200))
	}
	return out, nil
}

func (a *API) myKeys(w http.ResponseWriter, r *http.Request) {
	if !a.keysEnabled(w) {
		return
	}
	list, err := a.Keys.List(r.Context(), current(r).UserID)
	if err != nil {
		writeError(w, a.keyError(r, err))
		return
	}
	writeJSON(w, http.StatusOK, viewKeys(list))
}

func (a *API) createMyKey(w http.ResponseWriter, r *http.Request) {
	if !a.keysEnabled(w) {
		return
	}
	me := current(r)
	var req myKeyRequest
	if e := decodeJSON(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	ttl, e := a.ttl(req.TTLSeconds)
	if e != nil {
		writeError(w, e)
		return
	}
	scopes, e := a.ownScopes(r, req.Scopes)
	if e != nil {
		if e.Status == http.StatusForbidden {
			a.Audit.Log(r.Context(), audit.AuthzFail, a.Sessions.fields(r, audit.Fields{SessionID: me.ID, UserID: me.UserID, Reason: "scope_not_held", Detail: "create API key"}))
		}
		writeError(w, e)
		return
	}
	key, k, err := a.Keys.Create(r.Context(), keys.NewKey{UserID: me.UserID, Name: req.Name, Scopes: scopes, TTL: ttl})
	if err != nil {
		writeError(w, a.keyError(r, err))
		return
	}
	f := a.keyFields(r, k, sessionbridge.SourceHTTP)
	f.SessionID, f.Method = me.ID, string(sessionbridge.AuthSession)
	a.Audit.Log(r.Context(), audit.APIKeyCreated, f)
	w.Header().Set("ETag", etag(k.Version))
	writeJSON(w, http.StatusCreated, issuedKey{Key: key, keyView: viewKey(k)})
}

// myKey returns the key {id} of the path if it belongs to the signed-in
// user. Someone else's key answers 404 exactly like a missing one, so that
// key IDs of other users cannot be probed.
func (a *API) myKey(w http.ResponseWriter, r *http.Request, action string) (*sessionbridge.APIKey, bool) {
	id, ok := keyID(w, r)
	if !ok {
		return nil, false
	}
	me := current(r)
	k, err := a.Keys.Get(r.Context(), id)
	if err == nil && k.UserID != me.UserID {
		a.Audit.Log(r.Context(), audit.AuthzFail, a.Sessions.fields(r, audit.Fields{SessionID: me.ID, UserID: me.UserID, KeyID: id, Reason: "not_owner", Detail: action}))
		err = sessionbridge.ErrKeyNotFound
	}
	if err != nil {
		writeError(w, a.keyError(r, err))
		return nil, false
	}
	return k, true
}

func (a *API) deleteMyKey(w http.ResponseWriter, r *http.Request) {
	if !a.keysEnabled(w) {
		return
	}
	k, ok := a.myKey(w, r, "revoke API key")
	if !ok {
		return
	}
	if _, err := a.Keys.Delete(r.Context(), k.ID); err != nil {
		writeError(w, a.keyError(r, err))
		return
	}
	f := a.keyFields(r, k, sessionbridge.SourceHTTP)
	f.SessionID, f.Detail = current(r).ID, "revoked by its user"
	a.Audit.Log(r.Context(), audit.APIKeyRevoked, f)
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) rollMyKey(w http.ResponseWriter, r *http.Request) {
	if !a.keysEnabled(w) {
		return
	}
	grace, ok := a.graceOf(w, r)
	if !ok {
		return
	}
	k, ok := a.myKey(w, r, "roll API key")
	if !ok {
		return
	}
	// The successor inherits the scopes, which must still be the user's to
	// give: a key an administrator made wider is rolled by an administrator.
	held, _, err := a.heldScopes()
	if err != nil {
		writeError(w, a.keyError(r, err))
		return
	}
	if have, err := scope.Compile(k.Scopes...); err != nil || len(held.Uncovered(have)) > 0 {
		me := current(r)
		a.Audit.Log(r.Context(), audit.AuthzFail, a.Sessions.fields(r, audit.Fields{SessionID: me.ID, UserID: me.UserID, KeyID: k.ID, Reason: "scope_not_held", Detail: "roll API key"}))
		writeError(w, errorf(http.StatusForbidden, CodeForbidden, "the key holds scopes beyond your own; an administrator can roll it"))
		return
	}
	a.roll(w, r, k.ID, grace, sessionbridge.SourceHTTP)
}
