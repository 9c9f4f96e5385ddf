package sessionbridge

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// Token layout: "<id>.<secret>".
//
// The id is public: it appears in device lists, events, logs and metrics. It is
// two lowercase hex digits of shard (derived from the user ID, so that a session
// and its user's index share a Redis Cluster hash slot) followed by 16 base64url
// characters (96 random bits). The secret is 43 base64url characters (256
// random bits from crypto/rand); only its SHA-256 is stored.
const (
	shardLen    = 2
	idRandBytes = 12
	// IDLen is the length of a session ID.
	IDLen       = shardLen + 16
	secretBytes = 32
	secretLen   = 43
	// TokenLen is the length of a session token.
	TokenLen = IDLen + 1 + secretLen
)

var b64 = base64.RawURLEncoding

// Shard returns the two-hex-digit shard of a user: the first byte of the
// SHA-256 of the user ID. Every session ID of the user starts with it.
func Shard(userID string) string {
	sum := sha256.Sum256([]byte(userID))
	return hex.EncodeToString(sum[:1])
}

// ShardOfID returns the shard prefix of a well-formed session ID.
func ShardOfID(id string) string {
	if len(id) < shardLen {
		return ""
	}
	return id[:shardLen]
}

// NewSessionID returns a fresh random session ID for userID.
func NewSessionID(userID string) (string, error) {
	var b [idRandBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("sessionbridge: reading random bytes: %w", err)
	}
	return Shard(userID) + b64.EncodeToString(b[:]), nil
}

// NewSecret returns a fresh secret and its SHA-256.
func NewSecret() (secret string, hash [32]byte, err error) {
	var b [secretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", hash, fmt.Errorf("sessionbridge: reading random bytes: %w", err)
	}
	secret = b64.EncodeToString(b[:])
	return secret, HashSecret(secret), nil
}

// HashSecret returns the SHA-256 of a token secret, as stored.
func HashSecret(secret string) [32]byte {
	return sha256.Sum256([]byte(secret))
}

// VerifySecret reports, in constant time, whether secret hashes to hash.
func VerifySecret(secret string, hash [32]byte) bool {
	got := HashSecret(secret)
	return subtle.ConstantTimeCompare(got[:], hash[:]) == 1
}

// FormatToken joins a session ID and secret into a token.
func FormatToken(id, secret string) string { return id + "." + secret }

// ParseToken splits a token into its ID and secret. It accepts only the exact
// layout this package issues and returns ErrInvalidToken for anything else, so
// that a token the server never issued cannot even be looked up.
func ParseToken(token string) (id, secret string, err error) {
	if len(token) != TokenLen || token[IDLen] != '.' {
		return "", "", ErrInvalidToken
	}
	id, secret = token[:IDLen], token[IDLen+1:]
	if !ValidID(id) || !isB64(secret) {
		return "", "", ErrInvalidToken
	}
	// The last base64 character of 32 bytes carries 2 padding bits that must be
	// zero; a non-canonical encoding is not a token we issued.
	if b, err := b64.DecodeString(secret); err != nil || len(b) != secretBytes || b64.EncodeToString(b) != secret {
		return "", "", ErrInvalidToken
	}
	return id, secret, nil
}

// ValidID reports whether id has the layout of a session ID.
func ValidID(id string) bool {
	if len(id) != IDLen {
		return false
	}
	for i := 0; i < shardLen; i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return isB64(id[shardLen:])
}

func isB64(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return s != "" && !strings.ContainsAny(s, "=")
}
