package sessionbridge

import (
	"slices"
	"time"
)

// AuthMethod says how a connection or request authenticated.
type AuthMethod string

// Authentication methods.
const (
	AuthSession AuthMethod = "session"
	AuthJWT     AuthMethod = "jwt"
	AuthAPIKey  AuthMethod = "apikey"
)

// Principal is who a request or connection acts for.
type Principal struct {
	Method AuthMethod
	UserID string
	// SessionID binds the principal to a session: its revocation and expiry
	// apply. Empty for a JWT without a sid claim and for API keys.
	SessionID string
	// Session is the bound session as read at authentication, if any.
	Session *Session
	Scopes  []string
	// ExpiresAt is when the credential stops being valid (session deadline;
	// for a JWT its exp plus the verifier's clock-skew leeway); zero for
	// none. Connections made with the credential close then.
	ExpiresAt time.Time
	// KeyID names the API key, for API-key principals.
	KeyID string
	// KeyVersion is the version of the API key as read at authentication,
	// so that events about older versions are not applied to its sockets.
	KeyVersion uint64
}

// HasScope reports whether p holds scope. Session principals hold every scope
// their user has; scopes restrict JWT and API-key principals.
func (p *Principal) HasScope(scope string) bool {
	return scope == "" || slices.Contains(p.Scopes, scope) || slices.Contains(p.Scopes, "*")
}
