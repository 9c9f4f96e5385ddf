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
