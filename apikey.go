package sessionbridge

import (
	"crypto/rand"
	"fmt"
	"hash/crc32"
	"strings"
)

// API key layout: "sbk_<id>_<secret><check>".
//
// The id is public, like a session ID: two lowercase hex digits of the owner's
// shard (see Shard) then 14 base62 characters. The secret is 43 base62
// characters (62^43 > 2^256) from crypto/rand; only its SHA-256 is stored. The
// check is 6 base62 characters of the CRC32 (IEEE) of everything before it,
// so that a secret scanner can tell a real key from noise with
// APIKeyPattern and a mistyped key is refused before any store lookup.
const (
	apiKeyPrefix    = "sbk_"
	apiKeyRandIDLen = 14
	// APIKeyIDLen is the length of an API key ID.
	APIKeyIDLen     = shardLen + apiKeyRandIDLen
	apiKeySecretLen = 43
	apiKeyCheckLen  = 6
	// APIKeyLen is the length of an API key.
	APIKeyLen = len(apiKeyPrefix) + APIKeyIDLen + 1 + apiKeySecretLen + apiKeyCheckLen
)

// APIKeyPattern is a regular expression (RE2 and PCRE) that matches API keys
// and little else; secret scanners publish it. The CRC32 check, verified by
// ParseAPIKey, tells a real key from a random match.
const APIKeyPattern = `\bsbk_[0-9a-f]{2}[0-9A-Za-z]{14}_[0-9A-Za-z]{49}\b`

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NewAPIKey returns a fresh API key for userID, its ID and the SHA-256 of its
// secret, which is all that is ever stored.
func NewAPIKey(userID string) (key, id string, hash [32]byte, err error) {
	random, err := randomBase62(apiKeyRandIDLen + apiKeySecretLen)
	if err != nil {
		return "", "", hash, err
	}
	id = Shard(userID) + random[:apiKeyRandIDLen]
	secret := random[apiKeyRandIDLen:]
	body := apiKeyPrefix + id + "_" + secret
	return body + apiKeyCheck(body), id, HashSecret(secret), nil
}

// ParseAPIKey splits an API key into its ID and secret. It accepts only the
// exact layout NewAPIKey issues, with a matching check, and returns
// ErrInvalidToken for anything else, without a store lookup.
func ParseAPIKey(key string) (id, secret string, err error) {
	if len(key) != APIKeyLen || !strings.HasPrefix(key, apiKeyPrefix) {
		return "", "", ErrInvalidToken
	}
	rest := key[len(apiKeyPrefix):]
	id, secret, check := rest[:APIKeyIDLen], rest[APIKeyIDLen+1:len(rest)-apiKeyCheckLen], rest[len(rest)-apiKeyCheckLen:]
	if rest[APIKeyIDLen] != '_' || !ValidAPIKeyID(id) || !isBase62(secret) ||
		check != apiKeyCheck(key[:len(key)-apiKeyCheckLen]) {
		return "", "", ErrInvalidToken
	}
	return id, secret, nil
}

// IsAPIKey reports whether a bearer credential claims to be an API key, by
// its prefix alone; ParseAPIKey then decides whether it is well formed.
func IsAPIKey(credential string) bool { return strings.HasPrefix(credential, apiKeyPrefix) }

// ValidAPIKeyID reports whether id has the layout of an API key ID.
func ValidAPIKeyID(id string) bool {
	if len(id) != APIKeyIDLen {
		return false
	}
	for i := 0; i < shardLen; i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return isBase62(id[shardLen:])
}

// apiKeyCheck is the CRC32 of body as 6 base62 digits, most significant first.
func apiKeyCheck(body string) string {
	n := uint64(crc32.ChecksumIEEE([]byte(body)))
	var b [apiKeyCheckLen]byte
	for i := apiKeyCheckLen - 1; i >= 0; i-- {
		b[i] = base62[n%62]
		n /= 62
	}
	return string(b[:])
}

// randomBase62 returns n uniformly random base62 characters, rejecting the
// bytes that would bias the modulo.
func randomBase62(n int) (string, error) {
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/4)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("sessionbridge: reading random bytes: %w", err)
		}
		for _, c := range buf {
			if c < 248 && len(out) < n { // 248 = 4 × 62
				out = append(out, base62[c%62])
			}
		}
	}
	return string(out), nil
}

func isBase62(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return s != ""
}
