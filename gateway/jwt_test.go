package gateway

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/jwt"
	"github.com/sessionbridge/sessionbridge/jwt/jwttest"
)

// TestJWTVerifierOverWebSocket runs the real JWT verifier behind the gateway
// and attacks it with a real WebSocket client: every forged, misused or
// out-of-date token is refused 401 at the upgrade, a valid one connects, and
// auth.refresh extends only with a valid token of the same subject.
func TestJWTVerifierOverWebSocket(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	pemPath := filepath.Join(t.TempDir(), "idp.pem")
	if err := os.WriteFile(pemPath, pubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// The verifier reads the test's clock, which exists only once the
	// environment is built.
	var clock atomic.Pointer[fakeClock]
	v, err := jwt.New(context.Background(), jwt.Config{
		PublicKeyFiles: []string{pemPath}, Algorithms: []string{"RS256"},
		Audience: "sessionbridge", Issuer: "https://idp.example",
		Now: func() time.Time { return clock.Load().Now() },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	e := newEnv(t, func(c *Config) { c.JWT = v })
	clock.Store(e.clock)
	now := e.clock.Now()

	claims := func(extra map[string]any) map[string]any {
		c := map[string]any{
			"sub": "bob", "aud": "sessionbridge", "iss": "https://idp.example", "scope": "ws:connect auth.refresh read",
			"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
		}
		for k, x := range extra {
			c[k] = x
		}
		return c
	}
	b64 := base64.RawURLEncoding
	payload, err := json.Marshal(claims(nil))
	if err != nil {
		t.Fatal(err)
	}
	unsigned := b64.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64.EncodeToString(payload) + "."

	refused := map[string]string{
		"alg none":                      unsigned,
		"alg not allowed (PS256)":       jwttest.Sign(t, "PS256", key, "", claims(nil)),
		"HS256 keyed with the RSA key":  jwttest.HS256(t, pubPEM, claims(nil)),
		"tampered payload":              tamper(jwttest.RS256(t, key, "", claims(nil))),
		"expired":                       jwttest.RS256(t, key, "", claims(map[string]any{"exp": now.Add(-time.Second).Unix()})),
		"not yet valid (nbf in future)": jwttest.RS256(t, key, "", claims(map[string]any{"nbf": now.Add(time.Hour).Unix()})),
		"wrong audience":                jwttest.RS256(t, key, "", claims(map[string]any{"aud": "another-app"})),
		"wrong issuer":                  jwttest.RS256(t, key, "", claims(map[string]any{"iss": "https://evil.example"})),
		"no exp":                        jwttest.RS256(t, key, "", map[string]any{"sub": "bob", "aud": "sessionbridge", "iss": "https://idp.example"}),
	}
	for name, tok := range refused {
		_, resp, err := e.tryDial(bearer(tok), "")
		if err == nil {
			t.Errorf("%s: upgrade accepted", name)
			continue
		}
		if resp == nil || resp.StatusCode != 401 {
			t.Errorf("%s: got %v, want 401", name, err)
		}
		if strings.Contains(e.logs.String(), tok) {
			t.Errorf("%s: the token appears in the logs", name)
		}
	}

	c, w := e.dial(bearer(jwttest.RS256(t, key, "", claims(nil))), "")
	if w.Auth != sb.AuthJWT || w.UserID != "bob" || w.ExpiresAt == nil || !w.ExpiresAt.Equal(now.Add(10*time.Minute)) ||
		len(w.Scopes) != 3 || w.Scopes[2] != "read" {
		t.Fatalf("welcome %+v", w)
	}
	for i, tok := range []string{
		jwttest.RS256(t, key, "", claims(map[string]any{"sub": "mallory", "exp": now.Add(time.Hour).Unix()})),
		jwttest.HS256(t, pubPEM, claims(map[string]any{"exp": now.Add(time.Hour).Unix()})),
		unsigned,
	} {
		c.send("auth.refresh", "bad", map[string]any{"token": tok})
		if d := errorOf(t, c.read()); d.Code != CodeForbidden {
			t.Fatalf("refresh %d with a foreign or forged token: %+v", i, d)
		}
	}
	later := now.Add(30 * time.Minute)
	c.send("auth.refresh", "ok", map[string]any{"token": jwttest.RS256(t, key, "", claims(map[string]any{"exp": later.Unix()}))})
	f := c.read()
	var ack ackData
	if f.Type != TypeAck || json.Unmarshal(f.Data, &ack) != nil || ack.ExpiresAt == nil || !ack.ExpiresAt.Equal(later) {
		t.Fatalf("refresh: %+v %s", f, f.Data)
	}
	e.clock.Advance(15 * time.Minute) // past the first token's exp
	c.send("ping", "p", nil)
	if f := c.read(); f.Type != TypePong {
		t.Fatalf("after the first exp: %+v", f)
	}
	e.clock.Advance(15 * time.Minute)
	c.expectClose(CloseReauthenticate, ReasonTokenExpired)
}

// tamper changes the payload of a signed token, keeping its signature.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	p, _ := base64.RawURLEncoding.DecodeString(parts[1])
	p = []byte(strings.Replace(string(p), `"bob"`, `"eve"`, 1))
	parts[1] = base64.RawURLEncoding.EncodeToString(p)
	return strings.Join(parts, ".")
}

// TestJWTLeewayOverWebSocket: with a 30 s leeway, a token 10 s past its exp
// still opens a socket, and the socket lives until exp plus the leeway, as
// the verifier accepts the token until then; it closes 4401 token_expired
// after that, not at exp.
func TestJWTLeewayOverWebSocket(t *testing.T) {
	secret := []byte("a-test-secret-of-at-least-32-bytes-long")
	var clock atomic.Pointer[fakeClock]
	v, err := jwt.New(context.Background(), jwt.Config{
		HMACSecret: secret, Leeway: 30 * time.Second,
		Now: func() time.Time { return clock.Load().Now() },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	e := newEnv(t, func(c *Config) { c.JWT = v })
	clock.Store(e.clock)

	exp := e.clock.Now().Truncate(time.Second).Add(-10 * time.Second)
	c, w := e.dial(bearer(jwttest.HS256(t, secret, map[string]any{"sub": "bob", "scope": "ws:connect", "exp": exp.Unix()})), "")
	if deadline := exp.Add(30 * time.Second); w.ExpiresAt == nil || !w.ExpiresAt.Equal(deadline) {
		t.Fatalf("welcome expires_at %v, want exp + leeway = %v", w.ExpiresAt, deadline)
	}
	e.clock.Advance(exp.Add(29 * time.Second).Sub(e.clock.Now()))
	c.send("ping", "p", nil)
	if f := c.read(); f.Type != TypePong {
		t.Fatalf("within the leeway: %+v", f)
	}
	e.clock.Advance(time.Second)
	c.expectClose(CloseReauthenticate, ReasonTokenExpired)
}

// TestJWTRefusalReasons: a refused JWT is audited and counted with why it was
// refused, at the upgrade and in auth.refresh, not as one "invalid_bearer".
func TestJWTRefusalReasons(t *testing.T) {
	secret := []byte("a-test-secret-of-at-least-32-bytes-long")
	var clock atomic.Pointer[fakeClock]
	v, err := jwt.New(context.Background(), jwt.Config{
		HMACSecret: secret, Audience: "sessionbridge", Issuer: "https://idp.example",
		Now: func() time.Time { return clock.Load().Now() },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	e := newEnv(t, func(c *Config) { c.JWT = v })
	clock.Store(e.clock)
	now := e.clock.Now()
	claims := func(extra map[string]any) map[string]any {
		c := map[string]any{"sub": "bob", "aud": "sessionbridge", "iss": "https://idp.example", "scope": "ws:connect auth.refresh", "exp": now.Add(time.Hour).Unix()}
		for k, x := range extra {
			if x == nil {
				delete(c, k)
				continue
			}
			c[k] = x
		}
		return c
	}
	b64 := base64.RawURLEncoding
	payload, _ := json.Marshal(claims(nil))
	unsigned := b64.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64.EncodeToString(payload) + "."

	for reason, tok := range map[string]string{
		"expired":       jwttest.HS256(t, secret, claims(map[string]any{"exp": now.Add(-time.Minute).Unix()})),
		"not_yet_valid": jwttest.HS256(t, secret, claims(map[string]any{"nbf": now.Add(time.Hour).Unix()})),
		"bad_algorithm": unsigned,
		"bad_signature": jwttest.HS256(t, []byte("another-secret-of-at-least-32-bytes-long"), claims(nil)),
		"bad_audience":  jwttest.HS256(t, secret, claims(map[string]any{"aud": "another-app"})),
		"bad_issuer":    jwttest.HS256(t, secret, claims(map[string]any{"iss": "https://evil.example"})),
		"bad_claims":    jwttest.HS256(t, secret, claims(map[string]any{"sub": nil})),
		"malformed":     "bm90.anNvbg.c2ln",
	} {
		_, resp, err := e.tryDial(bearer(tok), "")
		if err == nil || resp == nil || resp.StatusCode != 401 {
			t.Errorf("%s: upgrade not refused 401: %v", reason, err)
			continue
		}
		if !strings.Contains(e.logs.String(), "reason=jwt_"+reason) {
			t.Errorf("%s: no authn_failed record with reason=jwt_%s", reason, reason)
		}
		if n := e.counter("sessionbridge_jwt_rejections_total", map[string]string{"reason": reason}); n != 1 {
			t.Errorf("jwt_rejections_total{reason=%q} = %v, want 1", reason, n)
		}
	}

	c, _ := e.dial(bearer(jwttest.HS256(t, secret, claims(nil))), "")
	c.send("auth.refresh", "r", map[string]any{"token": jwttest.HS256(t, secret, claims(map[string]any{"aud": "another-app"}))})
	if d := errorOf(t, c.read()); d.Code != CodeForbidden {
		t.Fatalf("refresh with a token for another audience: %+v", d)
	}
	if !strings.Contains(e.logs.String(), "reason=refresh_jwt_bad_audience") {
		t.Error("no authn_failed record with reason=refresh_jwt_bad_audience")
	}
	if n := e.counter("sessionbridge_jwt_rejections_total", map[string]string{"reason": "bad_audience"}); n != 2 {
		t.Errorf("jwt_rejections_total{reason=bad_audience} = %v after a refused refresh, want 2", n)
	}
}
