// Package audit writes the security audit trail of sessionbridge: one
// structured log/slog record for every authentication decision, session change
// and WebSocket connection, named with the OWASP logging vocabulary
// (session_created, authn_login_fail, authz_fail, ...).
//
// Records go to the *slog.Logger the application supplies, with the message
// "audit", the attribute audit=true (so that operators can route or filter
// them) and the attribute event. Failures of authentication and authorization
// are logged at WARN, everything else at INFO.
//
// Values are treated as hostile: control characters are escaped so that a
// forged User-Agent cannot start a fake log line, values are length-capped,
// and anything shaped like a credential (a session token, its secret, a JWT, a
// long word after "Bearer") is replaced by [REDACTED]. That is a safety net,
// not a licence: callers must never put secrets into Fields.
package audit
