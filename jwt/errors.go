package jwt

import (
	"errors"
	"fmt"

	"github.com/sessionbridge/sessionbridge"
)

// Reasons a token is rejected. Every rejection returned by [Verifier.Verify]
// wraps [sessionbridge.ErrInvalidToken] (callers answer 401 on it) and exactly
// one of these, so that audit logs and metrics can tell why without seeing the
// token.
var (
	// ErrTokenExpired means the exp claim is in the past, beyond the leeway.
	ErrTokenExpired = errors.New("jwt: token expired")
	// ErrTokenNotYetValid means the nbf or iat claim is in the future, beyond
	// the leeway.
	ErrTokenNotYetValid = errors.New("jwt: token not yet valid")
	// ErrBadAlgorithm means the alg header is missing, unknown, "none", not in
	// the allow-list, or not one the selected key verifies.
	ErrBadAlgorithm = errors.New("jwt: algorithm not accepted")
	// ErrBadSignature means no candidate key verified the signature.
	ErrBadSignature = errors.New("jwt: bad signature")
	// ErrBadClaims means a claim is missing, has the wrong type or value: exp
	// missing, aud or iss not the configured one, sub missing or unusable, sid
	// not a session ID, scope not a string or array of strings.
	ErrBadClaims = errors.New("jwt: bad claims")
	// ErrBadAudience means aud does not contain the configured audience. It
	// wraps ErrBadClaims.
	ErrBadAudience = fmt.Errorf("%w: audience does not match", ErrBadClaims)
	// ErrBadIssuer means iss is not the configured issuer. It wraps
	// ErrBadClaims.
	ErrBadIssuer = fmt.Errorf("%w: issuer does not match", ErrBadClaims)
	// ErrUnknownKey means no configured or fetched key matches the token's kid
	// (or, without a kid, its algorithm).
	ErrUnknownKey = errors.New("jwt: unknown key")
	// ErrMalformed means the token is not a compact JWS: wrong length or
	// characters, not three segments, bad base64 or JSON, or a crit header.
	ErrMalformed = errors.New("jwt: malformed token")
)

// Reason returns a short, stable label for why [Verifier.Verify] failed, for
// audit records and metric labels: "expired", "not_yet_valid",
// "bad_algorithm", "bad_signature", "bad_audience", "bad_issuer",
// "bad_claims" (any other claim), "unknown_key", "malformed", or
// "unavailable" for an error wrapping sessionbridge.ErrUnavailable. It
// returns "" for nil and "invalid" for any other error.
//
// The rejections of Verify also have a method Reason() string returning the
// same label, so that callers that take any sessionbridge.TokenVerifier can
// read it without importing this package.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrTokenExpired):
		return "expired"
	case errors.Is(err, ErrTokenNotYetValid):
		return "not_yet_valid"
	case errors.Is(err, ErrBadAlgorithm):
		return "bad_algorithm"
	case errors.Is(err, ErrBadSignature):
		return "bad_signature"
	case errors.Is(err, ErrBadAudience):
		return "bad_audience"
	case errors.Is(err, ErrBadIssuer):
		return "bad_issuer"
	case errors.Is(err, ErrBadClaims):
		return "bad_claims"
	case errors.Is(err, ErrUnknownKey):
		return "unknown_key"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, sessionbridge.ErrUnavailable):
		return "unavailable"
	}
	return "invalid"
}

// rejection is a refused token: sessionbridge.ErrInvalidToken, one reason
// sentinel, and a detail that never includes the token.
type rejection struct {
	reason error
	detail string
}

func (r *rejection) Error() string {
	return sessionbridge.ErrInvalidToken.Error() + ": " + r.reason.Error() + ": " + r.detail
}

func (r *rejection) Unwrap() []error { return []error{sessionbridge.ErrInvalidToken, r.reason} }

// Reason returns the label of the rejection's reason, as [Reason] does.
func (r *rejection) Reason() string { return Reason(r.reason) }
