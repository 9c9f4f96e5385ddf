package jwt_test

import (
	"context"
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
