package audit

import (
	"context"
	"log/slog"
	"time"
)

// Audit event names, from the OWASP logging vocabulary.
const (
	// SessionCreated: a session was created (login, admin API).
	SessionCreated = "session_created"
	// SessionRenewed: a session's ID was rotated or its lifetime renewed.
	SessionRenewed = "session_renewed"
	// SessionExpired: a session passed its idle or absolute deadline.
	SessionExpired = "session_expired"
	// SessionLogout: the owner ended a session.
	SessionLogout = "session_logout"
	// SessionRevoked: a session was ended by someone other than its owner's
	// logout (another device, an administrator, the system).
	SessionRevoked = "session_revoked"
	// SessionUpdated: a session's data changed.
	SessionUpdated = "session_updated"
	// AuthnLoginSuccess: a username and password were accepted.
	AuthnLoginSuccess = "authn_login_success"
	// AuthnLoginFail: a username and password were rejected.
	AuthnLoginFail = "authn_login_fail"
	// AuthnFailed: any other credential (session token, JWT, API key, ticket)
	// was rejected on /ws or an API.
	AuthnFailed = "authn_failed"
	// AuthnTokenRefreshed: a connection's credential was refreshed.
	AuthnTokenRefreshed = "authn_token_refreshed"
	// AuthzFail: an authenticated principal was refused an action.
	AuthzFail = "authz_fail"
	// WSConnected: a WebSocket connection was authenticated and opened.
	WSConnected = "ws_connected"
	// WSDisconnected: a WebSocket connection closed.
	WSDisconnected = "ws_disconnected"
	// APIKeyCreated: an API key was issued.
	APIKeyCreated = "apikey_created"
	// APIKeyUpdated: an API key's name, scopes, limits or meta changed.
	APIKeyUpdated = "apikey_updated"
	// APIKeyRolled: an API key was replaced by a successor; KeyID names the
	// successor, Detail the key it replaces.
	APIKeyRolled = "apikey_rolled"
	// APIKeyRevoked: an API key was deleted.
	APIKeyRevoked = "apikey_revoked"
)

// Fields are the facts of an audit record. Empty fields are left out.
//
// Fields must never carry secrets: no session tokens or their secret half, no
// JWTs, API keys, passwords, cookies or tickets. Identify sessions by their
// public ID (SessionID) only. Values that look like credentials are redacted
// anyway, as a last line of defence.
type Fields struct {
	SessionID string
	UserID    string
	// KeyID is the public ID of an API key (the one acted on, or the one
	// the principal authenticated with), never the key itself.
	KeyID        string
	ConnectionID string
	IP           string
	UserAgent    string
	// Method is how the principal authenticated (session, jwt, apikey,
	// password) or the HTTP method, as the caller documents.
	Method string
	// Source is the door a change came through (http, websocket, api, system).
	Source string
	// Reason is a short machine-readable cause (bad_password, session_revoked).
	Reason string
	// Detail is free text for humans.
	Detail string
}

// Logger writes audit records to a *slog.Logger. A nil *Logger, and a Logger
// made from a nil *slog.Logger, are valid and discard every record. A Logger is
// safe for concurrent use if its slog.Handler is (the standard ones are).
type Logger struct {
	l *slog.Logger
}

// New returns a Logger writing to l. If l is nil the Logger discards.
func New(l *slog.Logger) *Logger {
	return &Logger{l: l}
}

// Message is the message of every audit record.
const Message = "audit"

// Level returns the level event is logged at: WARN for failures of
// authentication and authorization, INFO for everything else.
func Level(event string) slog.Level {
	switch event {
	case AuthnLoginFail, AuthnFailed, AuthzFail:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// Log writes one audit record for event with the non-empty fields of f. Every
// value is cleaned (see the package documentation) before it is written.
func (l *Logger) Log(ctx context.Context, event string, f Fields) {
	if l == nil || l.l == nil {
		return
	}
	if ctx == nil {
		ctx = context.Background()
	}
	level := Level(event)
	h := l.l.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	// The record goes to the handler directly: Logger.LogAttrs would also
	// walk the stack for the caller's PC, which an audit record never shows
	// (and which would name this function anyway).
	r := slog.NewRecord(time.Now(), level, Message, 0)
	var buf [12]slog.Attr
	attrs := append(buf[:0], slog.Bool("audit", true), slog.String("event", Clean(event)))
	attrs = appendField(attrs, "session_id", f.SessionID)
	attrs = appendField(attrs, "user_id", f.UserID)
	attrs = appendField(attrs, "key_id", f.KeyID)
	attrs = appendField(attrs, "connection_id", f.ConnectionID)
	attrs = appendField(attrs, "ip", f.IP)
	attrs = appendField(attrs, "user_agent", f.UserAgent)
	attrs = appendField(attrs, "method", f.Method)
	attrs = appendField(attrs, "source", f.Source)
	attrs = appendField(attrs, "reason", f.Reason)
	attrs = appendField(attrs, "detail", f.Detail)
	r.AddAttrs(attrs...)
	// Like Logger.LogAttrs, a handler's error is not reported.
	_ = h.Handle(ctx, r)
}

// appendField appends key=Clean(v) to attrs unless v is empty.
func appendField(attrs []slog.Attr, key, v string) []slog.Attr {
	if v == "" {
		return attrs
	}
	return append(attrs, slog.String(key, Clean(v)))
}
