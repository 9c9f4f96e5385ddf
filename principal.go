package sessionbridge

import (
	"fmt"
	"slices"
	"time"

	"github.com/sessionbridge/sessionbridge/scope"
)

// AuthMethod says how a connection or request authenticated.
type AuthMethod string

// Authentication methods.
const (
	AuthSession AuthMethod = "session"
	AuthJWT     AuthMethod = "jwt"
	AuthAPIKey  AuthMethod = "apikey"
)

// ScopeConnect is the scope a principal needs to open a WebSocket at all.
const ScopeConnect = "ws:connect"

// Principal is who a request or connection acts for.
type Principal struct {
	Method AuthMethod
	UserID string
	// SessionID binds the principal to a session: its revocation and expiry
	// apply. Empty for a JWT without a sid claim and for API keys.
	SessionID string
	// Session is the bound session as read at authentication, if any.
	Session *Session
	// Scopes are the principal's scope patterns (see package scope and
	// CompileScopes): the frame types it may send, and rights such as
	// ws:connect.
	Scopes []string
	// ExpiresAt is when the credential stops being valid (session deadline;
	// for a JWT its exp plus the verifier's clock-skew leeway); zero for
	// none. Connections made with the credential close then.
	ExpiresAt time.Time
	// KeyID names the API key, for API-key principals.
	KeyID string
	// KeyVersion is the version of the API key as read at authentication,
	// so that events about older versions are not applied to its sockets.
	KeyVersion uint64
	// Limits are the API key's own rate limits (zero rules: the configured
	// defaults), for API-key principals.
	Limits Limits
}

// HasScope reports whether p's scopes allow name under the pattern rules of
// CompileScopes (the empty name is always allowed). It compiles the patterns
// on every call: code that checks often, such as a per-frame check, compiles
// once with CompileScopes and keeps the Set. Patterns that do not compile
// allow nothing.
func (p *Principal) HasScope(name string) bool {
	if name == "" {
		return true
	}
	set, err := CompileScopes(p.Scopes)
	return err == nil && set.Allows(name)
}

// CompileScopes compiles a principal's scope patterns with scope.Compile,
// reading a bare "*" as "**": before patterns had segments, "*" was the scope
// that grants everything, and credentials and sessions issued then still
// carry it. Only the bare allow pattern is read so; "*" inside a pattern
// ("chat.*") and "!*" keep their meaning of one segment. Errors wrap
// scope.ErrInvalid.
func CompileScopes(patterns []string) (scope.Set, error) {
	if slices.Contains(patterns, "*") {
		patterns = slices.Clone(patterns)
		for i, p := range patterns {
			if p == "*" {
				patterns[i] = "**"
			}
		}
	}
	set, err := scope.Compile(patterns...)
	if err != nil {
		return scope.Set{}, fmt.Errorf("sessionbridge: scopes: %w", err)
	}
	return set, nil
}
