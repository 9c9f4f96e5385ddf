package jwt_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/jwt"
	"github.com/sessionbridge/sessionbridge/jwt/jwttest"
)

// FuzzVerify feeds arbitrary strings to Verify: it must never panic, accept
// only tokens that yield a usable principal, and reject everything else with
// ErrInvalidToken plus exactly one reason, without echoing the input.
func FuzzVerify(f *testing.F) {
	ec := ecKey256()
	jwks := jwttest.JWKS(f, jwttest.JWK(f, "ec-1", "ES256", &ec.PublicKey), jwttest.JWK(f, "ed-1", "", edKey().Public()))
	v := newVerifier(f, jwt.Config{
		HMACSecret: secret64,
		JWKSFile:   writeFile(f, "jwks.json", jwks),
		Audience:   "sessionbridge",
	})
	aud := map[string]any{"aud": "sessionbridge", "scope": "a b", "scp": []string{"c"}}
	sid, _ := sessionbridge.NewSessionID("user-1")
	for _, seed := range []string{
		jwttest.HS256(f, secret64, claims(aud)),
		jwttest.Sign(f, "HS512", secret64, "k", claims(map[string]any{"aud": []string{"x", "sessionbridge"}, "sid": sid})),
		jwttest.Sign(f, "ES256", ec, "ec-1", claims(aud)),
		jwttest.Sign(f, "EdDSA", edKey(), "", claims(aud)),
		jwttest.HS256(f, secret64, claims(map[string]any{"exp": nil})),
		jwttest.HS256(f, secret64, claims(map[string]any{"sid": "bad", "aud": "sessionbridge"})),
		rawToken(`{"alg":"none"}`, `{"sub":"x","exp":99999999999}`, nil),
		rawToken(`{"alg":"HS256","crit":["x"]}`, `{}`, []byte("s")),
		rawToken(`{"alg":"ES256","kid":{"a":1}}`, `{"exp":1e300,"nbf":-1e300}`, []byte("s")),
		rawToken(`{"alg":"RS256","kid":"ec-1"}`, `{"sub":"`+strings.Repeat("x", 300)+`"}`, []byte("s")),
		"", ".", "..", "a.b.c", "eyJ.eyJ.", strings.Repeat("A", 100) + "..",
	} {
		f.Add(seed)
	}
	reasons := []error{jwt.ErrTokenExpired, jwt.ErrTokenNotYetValid, jwt.ErrBadAlgorithm, jwt.ErrBadSignature,
		jwt.ErrBadClaims, jwt.ErrUnknownKey, jwt.ErrMalformed}
	f.Fuzz(func(t *testing.T, tok string) {
		p, err := v.Verify(context.Background(), tok)
		if err == nil {
			if p == nil || p.UserID == "" || p.Method != sessionbridge.AuthJWT || p.ExpiresAt.IsZero() {
				t.Fatalf("accepted with an unusable principal %+v", p)
			}
			return
		}
		if p != nil {
			t.Fatalf("rejected but returned a principal")
		}
		if !errors.Is(err, sessionbridge.ErrInvalidToken) {
			t.Fatalf("error %q does not wrap ErrInvalidToken", err)
		}
		n := 0
		for _, r := range reasons {
			if errors.Is(err, r) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("error %q wraps %d reasons, want 1", err, n)
		}
		assertNoLeak(t, err, tok)
	})
}

// FuzzVerifySignedClaims signs arbitrary header and payload JSON with the
// verifier's own secret, so that the fuzzer reaches claim handling behind the
// signature check: whatever the claims, Verify must not panic, and what it
// accepts must have a usable subject and expiry.
func FuzzVerifySignedClaims(f *testing.F) {
	v := newVerifier(f, jwt.Config{HMACSecret: secret64})
	f.Add(`{"alg":"HS256"}`, mustJSON(f, claims(map[string]any{"scope": "a b"})))
	f.Add(`{"alg":"HS256","kid":"x"}`, `{"sub":"u","exp":1e300}`)
	f.Add(`{"alg":"HS256"}`, `{"sub":"u","exp":-1e300,"nbf":"x"}`)
	f.Add(`{"alg":"HS256"}`, `{"sub":"\u0000","exp":99999999999,"sid":null,"scp":[null]}`)
	f.Add(`{"alg":"HS256","crit":[]}`, `{"sub":"u","exp":99999999999,"aud":[1]}`)
	f.Add(`{"alg":"HS384"}`, `[]`)
	f.Fuzz(func(t *testing.T, header, payload string) {
		signing := jwtB64.EncodeToString([]byte(header)) + "." + jwtB64.EncodeToString([]byte(payload))
		h := hmac.New(sha256.New, secret64)
		h.Write([]byte(signing))
		tok := signing + "." + jwtB64.EncodeToString(h.Sum(nil))
		p, err := v.Verify(context.Background(), tok)
		if err != nil {
			if !errors.Is(err, sessionbridge.ErrInvalidToken) {
				t.Fatalf("error %q does not wrap ErrInvalidToken", err)
			}
			return
		}
		if p.UserID == "" || p.ExpiresAt.IsZero() || !p.ExpiresAt.After(t0) {
			t.Fatalf("accepted with an unusable principal %+v", p)
		}
		if p.SessionID != "" && !sessionbridge.ValidID(p.SessionID) {
			t.Fatalf("accepted a bad sid %q", p.SessionID)
		}
	})
}
