// Package jwt verifies JSON Web Tokens (compact JWS, RFC 7515/7519) for
// WebSocket and API authentication, and turns an accepted token into a
// [sessionbridge.Principal] with Method [sessionbridge.AuthJWT].
//
// # Keys
//
// A [Verifier] is built by [New] from a [Config] naming at least one key
// source; sources combine:
//
//   - HMACSecret: a shared secret of at least 32 bytes. It verifies HS256, and
//     also HS384 from 48 bytes and HS512 from 64 bytes (RFC 7518 wants the key
//     as long as the hash).
//   - PublicKeyFiles: PEM files with "PUBLIC KEY" (PKIX), "RSA PUBLIC KEY"
//     (PKCS #1) or "CERTIFICATE" blocks holding RSA (2048 to 8192 bits),
//     ECDSA (P-256, P-384, P-521) or Ed25519 keys. Private keys are refused.
//   - JWKSFile: a JWK Set (RFC 7517) read once.
//   - JWKSURL: a JWK Set fetched by New, then every JWKSRefresh (10 min) in a
//     background goroutine that [Verifier.Close] stops, and whenever a token
//     names a kid we do not know, at most once per JWKSMinRefresh (30 s)
//     however many tokens ask; concurrent requests share one fetch. A fetch
//     that fails, or returns no usable key, leaves the keys already held in
//     place. Responses are limited to 1 MiB. The default HTTP client times
//     out after 5 s and refuses redirects from https to http; a plain-http URL
//     to a host other than loopback is logged as a warning.
//
// From a JWK Set, RSA (n, e), EC (crv, x, y) and OKP Ed25519 (x) keys are
// used; keys with use other than "sig", key_ops without "verify", symmetric
// ("oct") keys and anything unparsable are skipped. A JWK's alg, if present,
// is the only algorithm that key verifies.
//
// # Algorithms
//
// Each key verifies only the algorithms of its own type: RSA keys RS256,
// RS384, RS512, PS256, PS384, PS512; ECDSA keys the ES algorithm of their
// curve (P-256 ES256, P-384 ES384, P-521 ES512); Ed25519 keys EdDSA; the HMAC
// secret HS*. Config.Algorithms narrows this further; by default it is
// everything the configured keys can verify (with a JWKS URL, every
// asymmetric algorithm). "none" is never accepted, and a token signed with
// HMAC using a public key as the secret is rejected: public keys never take
// part in HMAC.
//
// The kid header selects the key when a key with that kid exists. Otherwise,
// and for tokens without a kid, the keys that can verify the token's alg are
// tried, at most 8 of them; keys configured without a kid (the secret, PEM
// files) are trusted whatever kid a token carries. Headers that point at
// other keys (jku, jwk, x5u, x5c) are ignored, and a token with a crit header
// is rejected, since this package implements no JWS extension.
//
// # Claims
//
// Tokens longer than [MaxTokenLen] are rejected before any decoding.
//
//   - exp is required; nbf and iat, when present, must not be in the future.
//     All three get Config.Leeway of clock skew (zero means none;
//     [DefaultLeeway], 30 s, is the server's default).
//   - aud must contain Config.Audience, and iss must equal Config.Issuer,
//     when those are set (the claims are then required).
//   - sub is required and becomes Principal.UserID: a non-empty string of at
//     most 256 bytes of UTF-8 without control characters.
//   - sid, when present, must be a well-formed session ID
//     ([sessionbridge.ValidID]) and becomes Principal.SessionID, binding the
//     principal to that session's revocation and expiry.
//   - Scopes come from the claim named by Config.ScopeClaim ("scope": a
//     space-separated string, or an array of strings), or, when the token
//     lacks it, from "scp" (an array of strings, or a string).
//   - Principal.ExpiresAt is exp plus Config.Leeway: the token is accepted
//     until then, so a connection made with it lives until then too.
//
// # Errors
//
// A rejected token yields an error wrapping [sessionbridge.ErrInvalidToken]
// (answer 401) and exactly one reason: [ErrTokenExpired],
// [ErrTokenNotYetValid], [ErrBadAlgorithm], [ErrBadSignature],
// [ErrBadClaims], [ErrUnknownKey] or [ErrMalformed]. When the key a token
// needs would have to come from a JWKS URL that cannot be fetched, the error
// wraps [sessionbridge.ErrUnavailable] instead (answer 503: the token may be
// good). [Reason] turns either into a short label for audit records and
// metrics. Errors never contain the token; they may contain its kid, quoted and
// truncated. Verify does not log; JWKS fetch failures are logged to
// Config.Logger with the URL's scheme, host and path only.
package jwt
