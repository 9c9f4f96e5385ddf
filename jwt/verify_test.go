package jwt_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/jwt"
	"github.com/sessionbridge/sessionbridge/jwt/jwttest"
)

func TestVerifyAcceptsEverySupportedAlgorithm(t *testing.T) {
	sid, err := sessionbridge.NewSessionID("user-1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		alg string
		key any
		cfg func(t *testing.T) jwt.Config
	}{
		{"HS256", secret64, func(*testing.T) jwt.Config { return jwt.Config{HMACSecret: secret64} }},
		{"HS384", secret64, func(*testing.T) jwt.Config { return jwt.Config{HMACSecret: secret64} }},
		{"HS512", secret64, func(*testing.T) jwt.Config { return jwt.Config{HMACSecret: secret64} }},
		{"RS256", rsaKey(), func(t *testing.T) jwt.Config {
			return jwt.Config{PublicKeyFiles: []string{pemFile(t, &rsaKey().PublicKey)}}
		}},
		{"RS512", rsaKey(), func(t *testing.T) jwt.Config {
			return jwt.Config{PublicKeyFiles: []string{pemFile(t, &rsaKey().PublicKey)}}
		}},
		{"PS256", rsaKey(), func(t *testing.T) jwt.Config {
			return jwt.Config{PublicKeyFiles: []string{pemFile(t, &rsaKey().PublicKey)}}
		}},
		{"ES256", ecKey256(), func(t *testing.T) jwt.Config {
			return jwt.Config{PublicKeyFiles: []string{pemFile(t, &ecKey256().PublicKey)}}
		}},
		{"ES384", ecKey384(), func(t *testing.T) jwt.Config {
			return jwt.Config{PublicKeyFiles: []string{pemFile(t, &ecKey384().PublicKey)}}
		}},
		{"EdDSA", edKey(), func(t *testing.T) jwt.Config {
			return jwt.Config{PublicKeyFiles: []string{pemFile(t, edKey().Public())}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.alg, func(t *testing.T) {
			v := newVerifier(t, tt.cfg(t))
			exp := t0.Add(time.Hour)
			tok := jwttest.Sign(t, tt.alg, tt.key, "", claims(map[string]any{
				"sid": sid, "scope": "read write", "exp": exp.Unix(),
			}))
			p, err := v.Verify(context.Background(), tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if p.Method != sessionbridge.AuthJWT || p.UserID != "user-1" || p.SessionID != sid {
				t.Errorf("principal = %+v", p)
			}
			if !slices.Equal(p.Scopes, []string{"read", "write"}) {
				t.Errorf("scopes = %q", p.Scopes)
			}
			if !p.ExpiresAt.Equal(exp) {
				t.Errorf("ExpiresAt = %v, want %v", p.ExpiresAt, exp)
			}
		})
	}
}

func TestVerifyPEMVariants(t *testing.T) {
	// A PKCS#1 "RSA PUBLIC KEY" block and a certificate both carry keys.
	pkcs1 := pemEncode("RSA PUBLIC KEY", x509MarshalPKCS1(&rsaKey().PublicKey))
	cert := selfSignedCert(t, ecKey256())
	both := append(append([]byte{}, pkcs1...), cert...)
	v := newVerifier(t, jwt.Config{PublicKeyFiles: []string{writeFile(t, "keys.pem", both)}})
	for _, tok := range []string{
		jwttest.RS256(t, rsaKey(), "", claims(nil)),
		jwttest.Sign(t, "ES256", ecKey256(), "", claims(nil)),
	} {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Errorf("Verify: %v", err)
		}
	}
}

func TestVerifyScopes(t *testing.T) {
	tests := []struct {
		name       string
		scopeClaim string
		extra      map[string]any
		want       []string
	}{
		{"scope string", "", map[string]any{"scope": "a  b c"}, []string{"a", "b", "c"}},
		{"scp array", "", map[string]any{"scp": []string{"x", "y"}}, []string{"x", "y"}},
		{"scp string", "", map[string]any{"scp": "x y"}, []string{"x", "y"}},
		{"scope wins over scp", "", map[string]any{"scope": "a", "scp": []string{"x"}}, []string{"a"}},
		{"none", "", nil, nil},
		{"custom claim", "permissions", map[string]any{"permissions": []string{"p1"}, "scope": "ignored"}, []string{"p1"}},
		{"custom claim absent falls back to scp", "permissions", map[string]any{"scp": []string{"s"}}, []string{"s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, jwt.Config{HMACSecret: secret64, ScopeClaim: tt.scopeClaim})
			p, err := v.Verify(context.Background(), jwttest.HS256(t, secret64, claims(tt.extra)))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !slices.Equal(p.Scopes, tt.want) {
				t.Errorf("scopes = %q, want %q", p.Scopes, tt.want)
			}
			for _, s := range tt.want {
				if !p.HasScope(s) {
					t.Errorf("HasScope(%q) = false", s)
				}
			}
		})
	}
}

func TestVerifyTimeClaims(t *testing.T) {
	v := newVerifier(t, jwt.Config{HMACSecret: secret64, Leeway: 30 * time.Second})
	tests := []struct {
		name  string
		extra map[string]any
		want  error // nil: accepted
	}{
		{"expired", map[string]any{"exp": t0.Add(-time.Hour).Unix()}, jwt.ErrTokenExpired},
		{"expired within leeway", map[string]any{"exp": t0.Add(-10 * time.Second).Unix()}, nil},
		{"expired just past leeway", map[string]any{"exp": t0.Add(-31 * time.Second).Unix()}, jwt.ErrTokenExpired},
		{"exp missing", map[string]any{"exp": nil}, jwt.ErrBadClaims},
		{"exp not a number", map[string]any{"exp": "tomorrow"}, jwt.ErrBadClaims},
		{"nbf in future", map[string]any{"nbf": t0.Add(time.Hour).Unix()}, jwt.ErrTokenNotYetValid},
		{"nbf within leeway", map[string]any{"nbf": t0.Add(10 * time.Second).Unix()}, nil},
		{"nbf past", map[string]any{"nbf": t0.Add(-time.Hour).Unix()}, nil},
		{"iat in future", map[string]any{"iat": t0.Add(time.Hour).Unix()}, jwt.ErrTokenNotYetValid},
		{"iat within leeway", map[string]any{"iat": t0.Add(10 * time.Second).Unix()}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := jwttest.HS256(t, secret64, claims(tt.extra))
			_, err := v.Verify(context.Background(), tok)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			assertRejected(t, err, tt.want, tok)
		})
	}
}

func TestVerifyLeewayConfig(t *testing.T) {
	tok := jwttest.HS256(t, secret64, claims(map[string]any{"exp": t0.Add(-5 * time.Second).Unix()}))

	strict := newVerifier(t, jwt.Config{HMACSecret: secret64}) // zero leeway
	_, err := strict.Verify(context.Background(), tok)
	assertRejected(t, err, jwt.ErrTokenExpired, tok)

	wide := newVerifier(t, jwt.Config{HMACSecret: secret64, Leeway: 2 * time.Minute})
	if _, err := wide.Verify(context.Background(), jwttest.HS256(t, secret64,
		claims(map[string]any{"exp": t0.Add(-90 * time.Second).Unix()}))); err != nil {
		t.Errorf("2m leeway rejected a token expired 90s ago: %v", err)
	}
}

// TestVerifyLeewayInExpiresAt: a token past exp but within the leeway is
// accepted, and its principal lives until exp plus the leeway, which is when
// a connection made with it must close, not at exp.
func TestVerifyLeewayInExpiresAt(t *testing.T) {
	v := newVerifier(t, jwt.Config{HMACSecret: secret64, Leeway: 30 * time.Second})
	exp := t0.Add(-10 * time.Second)
	p, err := v.Verify(context.Background(), jwttest.HS256(t, secret64, claims(map[string]any{"exp": exp.Unix()})))
	if err != nil {
		t.Fatalf("a token 10s past exp with 30s leeway: %v", err)
	}
	if want := exp.Add(30 * time.Second); !p.ExpiresAt.Equal(want) {
		t.Errorf("ExpiresAt = %v, want exp + leeway = %v", p.ExpiresAt, want)
	}
	if !p.ExpiresAt.After(t0) {
		t.Errorf("an accepted token's ExpiresAt %v is not after now %v", p.ExpiresAt, t0)
	}
}

func TestVerifyAudienceAndIssuer(t *testing.T) {
	v := newVerifier(t, jwt.Config{HMACSecret: secret64, Audience: "sessionbridge", Issuer: "https://idp.example"})
	good := map[string]any{"aud": "sessionbridge", "iss": "https://idp.example"}
	tests := []struct {
		name  string
		extra map[string]any
		want  error
	}{
		{"both match", good, nil},
		{"aud in array", map[string]any{"aud": []string{"other", "sessionbridge"}, "iss": "https://idp.example"}, nil},
		{"wrong aud", map[string]any{"aud": "other", "iss": "https://idp.example"}, jwt.ErrBadAudience},
		{"aud missing", map[string]any{"iss": "https://idp.example"}, jwt.ErrBadClaims},
		{"aud wrong type", map[string]any{"aud": 7, "iss": "https://idp.example"}, jwt.ErrBadClaims},
		{"wrong iss", map[string]any{"aud": "sessionbridge", "iss": "https://evil.example"}, jwt.ErrBadIssuer},
		{"iss missing", map[string]any{"aud": "sessionbridge"}, jwt.ErrBadClaims},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := jwttest.HS256(t, secret64, claims(tt.extra))
			_, err := v.Verify(context.Background(), tok)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			assertRejected(t, err, tt.want, tok)
			// Audience and issuer failures are claim failures too.
			assertRejected(t, err, jwt.ErrBadClaims, tok)
		})
	}
}

func TestVerifySubjectAndSessionClaims(t *testing.T) {
	v := newVerifier(t, jwt.Config{HMACSecret: secret64})
	tests := []struct {
		name  string
		extra map[string]any
	}{
		{"sub missing", map[string]any{"sub": nil}},
		{"sub empty", map[string]any{"sub": ""}},
		{"sub number", map[string]any{"sub": 42}},
		{"sub control character", map[string]any{"sub": "user\n1"}},
		{"sub too long", map[string]any{"sub": strings.Repeat("u", 257)}},
		{"sid malformed", map[string]any{"sid": "not-a-session-id"}},
		{"sid number", map[string]any{"sid": 12}},
		{"sid empty", map[string]any{"sid": ""}},
		{"scope number", map[string]any{"scope": 3}},
		{"scp with a number", map[string]any{"scp": []any{"a", 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := jwttest.HS256(t, secret64, claims(tt.extra))
			_, err := v.Verify(context.Background(), tok)
			assertRejected(t, err, jwt.ErrBadClaims, tok)
		})
	}
	t.Run("no sid is fine", func(t *testing.T) {
		p, err := v.Verify(context.Background(), jwttest.HS256(t, secret64, claims(nil)))
		if err != nil {
			t.Fatal(err)
		}
		if p.SessionID != "" {
			t.Errorf("SessionID = %q, want empty", p.SessionID)
		}
	})
}

func TestVerifyRejectsAlgorithmAttacks(t *testing.T) {
	ctx := context.Background()
	rsaPEM := pemBytes(t, &rsaKey().PublicKey)
	rsaFile := writeFile(t, "rsa.pem", rsaPEM)
	rsaOnly := newVerifier(t, jwt.Config{PublicKeyFiles: []string{rsaFile}})
	mixed := newVerifier(t, jwt.Config{HMACSecret: secret64, PublicKeyFiles: []string{rsaFile}})
	payload := mustJSON(t, claims(nil))

	t.Run("alg none", func(t *testing.T) {
		for _, alg := range []string{"none", "None", "NONE", "nOnE"} {
			tok := rawToken(`{"alg":"`+alg+`","typ":"JWT"}`, payload, nil)
			for _, v := range []*jwt.Verifier{rsaOnly, mixed} {
				_, err := v.Verify(ctx, tok)
				assertRejected(t, err, jwt.ErrBadAlgorithm, tok)
			}
		}
	})
	t.Run("alg none with a signature", func(t *testing.T) {
		tok := rawToken(`{"alg":"none"}`, payload, []byte("whatever"))
		_, err := mixed.Verify(ctx, tok)
		assertRejected(t, err, jwt.ErrBadAlgorithm, tok)
	})
	t.Run("alg missing", func(t *testing.T) {
		tok := rawToken(`{"typ":"JWT"}`, payload, []byte("sig"))
		_, err := mixed.Verify(ctx, tok)
		assertRejected(t, err, jwt.ErrBadAlgorithm, tok)
	})
	t.Run("HS256 signed with the RSA public key PEM", func(t *testing.T) {
		// The classic key-confusion attack: the public key is public, so if a
		// verifier fed it to HMAC, anybody could mint tokens.
		tok := jwttest.HS256(t, rsaPEM, claims(nil))
		_, err := rsaOnly.Verify(ctx, tok)
		assertRejected(t, err, jwt.ErrBadAlgorithm, tok)
		_, err = mixed.Verify(ctx, tok)
		assertRejected(t, err, jwt.ErrBadSignature, tok)
		// Also hand-rolled, in case a signer library refused such a key.
		h := hmac.New(sha256.New, rsaPEM)
		signing := rawToken(`{"alg":"HS256","typ":"JWT"}`, payload, nil)
		signing = signing[:len(signing)-1]
		h.Write([]byte(signing))
		tok2 := signing + "." + b64(h.Sum(nil))
		_, err = rsaOnly.Verify(ctx, tok2)
		assertRejected(t, err, jwt.ErrBadAlgorithm, tok2)
	})
	t.Run("algorithm of another key type", func(t *testing.T) {
		tok := jwttest.Sign(t, "ES256", ecKey256(), "", claims(nil))
		_, err := rsaOnly.Verify(ctx, tok)
		assertRejected(t, err, jwt.ErrBadAlgorithm, tok)
	})
	t.Run("algorithm outside the allow-list", func(t *testing.T) {
		v := newVerifier(t, jwt.Config{PublicKeyFiles: []string{rsaFile}, Algorithms: []string{"PS256"}})
		tok := jwttest.RS256(t, rsaKey(), "", claims(nil))
		_, err := v.Verify(ctx, tok)
		assertRejected(t, err, jwt.ErrBadAlgorithm, tok)
		if _, err := v.Verify(ctx, jwttest.Sign(t, "PS256", rsaKey(), "", claims(nil))); err != nil {
			t.Errorf("PS256 rejected: %v", err)
		}
	})
	t.Run("HS512 with a secret too short for it", func(t *testing.T) {
		short := secret64[:32]
		v := newVerifier(t, jwt.Config{HMACSecret: short})
		tok := jwttest.Sign(t, "HS512", short, "", claims(nil))
		_, err := v.Verify(ctx, tok)
		assertRejected(t, err, jwt.ErrBadAlgorithm, tok)
	})
	t.Run("signed by another RSA key", func(t *testing.T) {
		tok := jwttest.RS256(t, rsaKey2(), "", claims(nil))
		_, err := rsaOnly.Verify(ctx, tok)
		assertRejected(t, err, jwt.ErrBadSignature, tok)
	})
}

func b64(b []byte) string { return jwtB64.EncodeToString(b) }

func TestVerifyRejectsTampering(t *testing.T) {
	ctx := context.Background()
	v := newVerifier(t, jwt.Config{HMACSecret: secret64})
	good := jwttest.HS256(t, secret64, claims(nil))
	parts := strings.Split(good, ".")

	t.Run("payload swapped", func(t *testing.T) {
		evil := b64([]byte(mustJSON(t, claims(map[string]any{"sub": "admin"}))))
		tok := parts[0] + "." + evil + "." + parts[2]
		_, err := v.Verify(ctx, tok)
		assertRejected(t, err, jwt.ErrBadSignature, tok)
	})
	t.Run("signature altered", func(t *testing.T) {
		sig := []byte(parts[2])
		if sig[0] == 'A' {
			sig[0] = 'B'
		} else {
			sig[0] = 'A'
		}
		tok := parts[0] + "." + parts[1] + "." + string(sig)
		_, err := v.Verify(ctx, tok)
		assertRejected(t, err, jwt.ErrBadSignature, tok)
	})
	t.Run("signature stripped", func(t *testing.T) {
		tok := parts[0] + "." + parts[1] + "."
		_, err := v.Verify(ctx, tok)
		assertRejected(t, err, jwt.ErrBadSignature, tok)
	})
	t.Run("signature with non-canonical padding bits", func(t *testing.T) {
		// A 32-byte HMAC is 43 base64 characters whose last carries 2 unused
		// bits; setting them must not yield a second valid encoding.
		sig := []byte(parts[2])
		last := strings.IndexByte(b64Alphabet, sig[len(sig)-1])
		sig[len(sig)-1] = b64Alphabet[last|1]
		if string(sig) == parts[2] {
			sig[len(sig)-1] = b64Alphabet[last|2]
		}
		tok := parts[0] + "." + parts[1] + "." + string(sig)
		_, err := v.Verify(ctx, tok)
		assertRejected(t, err, jwt.ErrMalformed, tok)
	})
	t.Run("crit header", func(t *testing.T) {
		tok := jwttest.Sign(t, "HS256", secret64, "", claims(nil))
		hdr := rawToken(`{"alg":"HS256","crit":["b64"],"b64":false}`, mustJSON(t, claims(nil)), nil)
		h := hmac.New(sha256.New, secret64)
		signing := hdr[:len(hdr)-1]
		h.Write([]byte(signing))
		tok = signing + "." + b64(h.Sum(nil))
		_, err := v.Verify(ctx, tok)
		assertRejected(t, err, jwt.ErrMalformed, tok)
	})
	t.Run("kid not a string", func(t *testing.T) {
		hdr := rawToken(`{"alg":"HS256","kid":5}`, mustJSON(t, claims(nil)), nil)
		h := hmac.New(sha256.New, secret64)
		signing := hdr[:len(hdr)-1]
		h.Write([]byte(signing))
		tok := signing + "." + b64(h.Sum(nil))
		_, err := v.Verify(ctx, tok)
		assertRejected(t, err, jwt.ErrMalformed, tok)
	})
	t.Run("still accepts the original", func(t *testing.T) {
		if _, err := v.Verify(ctx, good); err != nil {
			t.Fatal(err)
		}
	})
}

func TestVerifyRejectsGarbage(t *testing.T) {
	v := newVerifier(t, jwt.Config{HMACSecret: secret64})
	good := jwttest.HS256(t, secret64, claims(nil))
	garbage := []string{
		"",
		"x",
		"a.b",
		"a.b.c",
		"a.b.c.d",
		"...",
		".eyJ.sig",
		"Bearer " + good,
		good + " ",
		good + ".",
		strings.Replace(good, ".", "..", 1),
		"eyJhbGciOiJIUzI1NiJ9.not json at all.sig",
		rawToken("not json", "{}", nil),
		rawToken(`{"alg":"HS256"}`, "not json", []byte("s")),
		rawToken(`["alg","HS256"]`, "{}", []byte("s")),
		"\x00\x01\x02.\xff\xfe.\x80",
		"ключ.ключ.ключ",
	}
	for _, tok := range garbage {
		_, err := v.Verify(context.Background(), tok)
		assertRejected(t, err, jwt.ErrMalformed, tok)
	}
}

func TestVerifyRejectsOversizedToken(t *testing.T) {
	v := newVerifier(t, jwt.Config{HMACSecret: secret64})
	// Validly signed, but too big: the cap applies before any work.
	tok := jwttest.HS256(t, secret64, claims(map[string]any{"pad": strings.Repeat("p", jwt.MaxTokenLen)}))
	if len(tok) <= jwt.MaxTokenLen {
		t.Fatalf("token of %d bytes is not oversized", len(tok))
	}
	_, err := v.Verify(context.Background(), tok)
	assertRejected(t, err, jwt.ErrMalformed, tok)

	// Just under the cap is fine.
	fits := jwttest.HS256(t, secret64, claims(map[string]any{"pad": strings.Repeat("p", jwt.MaxTokenLen/2)}))
	if _, err := v.Verify(context.Background(), fits); err != nil {
		t.Errorf("token of %d bytes rejected: %v", len(fits), err)
	}
}

func TestZeroVerifierRejects(t *testing.T) {
	var v jwt.Verifier
	tok := jwttest.HS256(t, secret64, claims(nil))
	_, err := v.Verify(context.Background(), tok)
	assertRejected(t, err, jwt.ErrUnknownKey, tok)
	if err := v.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestNewRefusesUnusableConfig(t *testing.T) {
	rsaPath := pemFile(t, &rsaKey().PublicKey)
	privDER, err := x509MarshalPKCS8(ecKey256())
	if err != nil {
		t.Fatal(err)
	}
	weakRSA := mustRSAWeak(t)
	tests := []struct {
		name string
		cfg  jwt.Config
	}{
		{"no keys", jwt.Config{}},
		{"short secret", jwt.Config{HMACSecret: []byte("too short to be a secret")}},
		{"unknown algorithm", jwt.Config{HMACSecret: secret64, Algorithms: []string{"HS999"}}},
		{"none algorithm", jwt.Config{HMACSecret: secret64, Algorithms: []string{"none"}}},
		{"lower-case algorithm", jwt.Config{HMACSecret: secret64, Algorithms: []string{"hs256"}}},
		{"algorithm no key verifies", jwt.Config{HMACSecret: secret64, Algorithms: []string{"HS256", "RS256"}}},
		{"HS512 with a 32-byte secret", jwt.Config{HMACSecret: secret64[:32], Algorithms: []string{"HS512"}}},
		{"key no allowed algorithm fits", jwt.Config{HMACSecret: secret64, PublicKeyFiles: []string{rsaPath}, Algorithms: []string{"RS256"}}},
		{"missing key file", jwt.Config{PublicKeyFiles: []string{"does-not-exist.pem"}}},
		{"not PEM", jwt.Config{PublicKeyFiles: []string{writeFile(t, "x.pem", []byte("hello"))}}},
		{"private key PEM", jwt.Config{PublicKeyFiles: []string{writeFile(t, "p.pem", pemEncode("PRIVATE KEY", privDER))}}},
		{"RSA key too small", jwt.Config{PublicKeyFiles: []string{pemFile(t, &weakRSA.PublicKey)}}},
		{"garbage inside PEM", jwt.Config{PublicKeyFiles: []string{writeFile(t, "g.pem", pemEncode("PUBLIC KEY", []byte("junk")))}}},
		{"JWKS file not JSON", jwt.Config{JWKSFile: writeFile(t, "j.json", []byte("{"))}},
		{"JWKS file without keys", jwt.Config{JWKSFile: writeFile(t, "j.json", []byte(`{"keys":[]}`))}},
		{"JWKS file with only unusable keys", jwt.Config{JWKSFile: writeFile(t, "j.json", []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`))}},
		{"JWKS file over 1 MiB", jwt.Config{JWKSFile: writeFile(t, "big.json", append(jwttest.JWKS(t, jwttest.JWK(t, "k", "", &ecKey256().PublicKey)), strings.Repeat(" ", 1<<20)...))}},
		{"JWKS URL not http", jwt.Config{JWKSURL: "file:///etc/passwd"}},
		{"JWKS URL relative", jwt.Config{JWKSURL: "/jwks.json"}},
		{"negative leeway", jwt.Config{HMACSecret: secret64, Leeway: -time.Second}},
		{"negative refresh", jwt.Config{JWKSURL: "https://idp.example/jwks", JWKSRefresh: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = discardLogger()
			v, err := jwt.New(context.Background(), tt.cfg)
			if err == nil {
				v.Close()
				t.Fatal("New accepted an unusable config")
			}
			if strings.Contains(err.Error(), string(secret64[:32])) {
				t.Errorf("error %q contains the secret", err)
			}
		})
	}
}

func TestNewCopiesSecret(t *testing.T) {
	secret := append([]byte(nil), secret64...)
	v := newVerifier(t, jwt.Config{HMACSecret: secret})
	tok := jwttest.HS256(t, secret64, claims(nil))
	for i := range secret {
		secret[i] = 0
	}
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("changing the caller's buffer changed the key: %v", err)
	}
}

func TestErrorsAreDistinct(t *testing.T) {
	all := []error{jwt.ErrTokenExpired, jwt.ErrTokenNotYetValid, jwt.ErrBadAlgorithm, jwt.ErrBadSignature,
		jwt.ErrBadClaims, jwt.ErrUnknownKey, jwt.ErrMalformed}
	for _, claim := range []error{jwt.ErrBadAudience, jwt.ErrBadIssuer} {
		if !errors.Is(claim, jwt.ErrBadClaims) {
			t.Errorf("%v does not wrap ErrBadClaims", claim)
		}
	}
	if errors.Is(jwt.ErrBadAudience, jwt.ErrBadIssuer) || errors.Is(jwt.ErrBadIssuer, jwt.ErrBadAudience) {
		t.Error("audience and issuer errors match each other")
	}
	for i, a := range all {
		for j, b := range all {
			if i != j && errors.Is(a, b) {
				t.Errorf("%v matches %v", a, b)
			}
		}
		if errors.Is(a, sessionbridge.ErrInvalidToken) {
			t.Errorf("bare sentinel %v should not itself be ErrInvalidToken", a)
		}
	}
}

func TestReason(t *testing.T) {
	v := newVerifier(t, jwt.Config{HMACSecret: secret64, Audience: "sessionbridge", Issuer: "https://idp.example"})
	ctx := context.Background()
	good := func(extra map[string]any) map[string]any {
		c := claims(map[string]any{"aud": "sessionbridge", "iss": "https://idp.example"})
		for k, x := range extra {
			c[k] = x
		}
		return c
	}
	cases := map[string]string{
		jwttest.HS256(t, secret64, good(map[string]any{"aud": "another-app"})):             "bad_audience",
		jwttest.HS256(t, secret64, good(map[string]any{"iss": "https://evil.example"})):    "bad_issuer",
		jwttest.Sign(t, "RS256", rsaKey(), "", good(nil)):                                  "bad_algorithm",
		jwttest.HS256(t, secret64, good(map[string]any{"exp": t0.Add(-time.Hour).Unix()})): "expired",
		jwttest.HS256(t, secret64, good(map[string]any{"nbf": t0.Add(time.Hour).Unix()})):  "not_yet_valid",
		rawToken(`{"alg":"none"}`, `{}`, nil):                                              "bad_algorithm",
		jwttest.HS256(t, secret64[1:], good(nil)):                                          "bad_signature",
		jwttest.HS256(t, secret64, good(map[string]any{"sub": nil})):                       "bad_claims",
		"garbage": "malformed",
	}
	for tok, want := range cases {
		_, err := v.Verify(ctx, tok)
		if got := jwt.Reason(err); got != want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, want)
		}
		// Callers that do not import this package read the same label from
		// the error itself.
		var r interface{ Reason() string }
		if !errors.As(err, &r) || r.Reason() != want {
			t.Errorf("error %v does not carry its reason %q", err, want)
		}
	}
	var zero jwt.Verifier
	if _, err := zero.Verify(ctx, "x.y.z"); jwt.Reason(err) != "unknown_key" {
		t.Errorf("Reason(%v) = %q, want unknown_key", err, jwt.Reason(err))
	}
	if got := jwt.Reason(nil); got != "" {
		t.Errorf("Reason(nil) = %q", got)
	}
	if got := jwt.Reason(errors.New("other")); got != "invalid" {
		t.Errorf("Reason(other) = %q", got)
	}
	if got := jwt.Reason(fmt.Errorf("x: %w", sessionbridge.ErrUnavailable)); got != "unavailable" {
		t.Errorf("Reason(unavailable) = %q", got)
	}
}
