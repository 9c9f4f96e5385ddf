// Package jwttest signs JWTs and builds JWK Sets for tests of code that uses
// the jwt package. It is for tests only: every function fails the test
// instead of returning an error.
package jwttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"testing"

	gojwt "github.com/golang-jwt/jwt/v5"
)

// HS256 returns a token for claims signed with HMAC-SHA256 under secret.
func HS256(t testing.TB, secret []byte, claims map[string]any) string {
	t.Helper()
	return Sign(t, "HS256", secret, "", claims)
}

// RS256 returns a token for claims signed with key, with kid in its header
// when kid is not empty.
func RS256(t testing.TB, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	return Sign(t, "RS256", key, kid, claims)
}

// Sign returns a token for claims signed with alg (any JWS algorithm name the
// golang-jwt library knows) and key: a []byte secret for HS*, else an
// *rsa.PrivateKey, *ecdsa.PrivateKey or ed25519.PrivateKey. kid goes into the
// header when not empty.
func Sign(t testing.TB, alg string, key any, kid string, claims map[string]any) string {
	t.Helper()
	m := gojwt.GetSigningMethod(alg)
	if m == nil {
		t.Fatalf("jwttest: unknown algorithm %q", alg)
	}
	tok := gojwt.NewWithClaims(m, gojwt.MapClaims(claims))
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("jwttest: signing %s token: %v", alg, err)
	}
	return s
}

var b64 = base64.RawURLEncoding

// JWK returns the public JWK of pub (an *rsa.PublicKey, *ecdsa.PublicKey or
// ed25519.PublicKey, or their private keys) with use "sig", the given kid and,
// when not empty, alg.
func JWK(t testing.TB, kid, alg string, pub crypto.PublicKey) map[string]any {
	t.Helper()
	if s, ok := pub.(crypto.Signer); ok {
		pub = s.Public()
	}
	j := map[string]any{"use": "sig"}
	if kid != "" {
		j["kid"] = kid
	}
	if alg != "" {
		j["alg"] = alg
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		j["kty"] = "RSA"
		j["n"] = b64.EncodeToString(k.N.Bytes())
		j["e"] = b64.EncodeToString(big.NewInt(int64(k.E)).Bytes())
	case *ecdsa.PublicKey:
		raw, err := k.Bytes() // 0x04 || X || Y, each padded to the curve size
		if err != nil {
			t.Fatalf("jwttest: encoding EC key: %v", err)
		}
		size := (len(raw) - 1) / 2
		j["kty"] = "EC"
		j["crv"] = k.Curve.Params().Name
		j["x"] = b64.EncodeToString(raw[1 : 1+size])
		j["y"] = b64.EncodeToString(raw[1+size:])
	case ed25519.PublicKey:
		j["kty"] = "OKP"
		j["crv"] = "Ed25519"
		j["x"] = b64.EncodeToString(k)
	default:
		t.Fatalf("jwttest: unsupported key type %T", pub)
	}
	return j
}

// JWKS returns the JSON of a JWK Set holding keys.
func JWKS(t testing.TB, keys ...map[string]any) []byte {
	t.Helper()
	if keys == nil {
		keys = []map[string]any{}
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatalf("jwttest: encoding JWKS: %v", err)
	}
	return b
}
