package jwt_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/jwt"
)

// t0 is the fixed "now" of most tests.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return t0 }

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Keys are generated once per test binary: RSA generation is slow under -race.
var (
	rsaKey   = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA() })
	rsaKey2  = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA() })
	ecKey256 = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC(elliptic.P256()) })
	ecKey384 = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC(elliptic.P384()) })
	edKey    = sync.OnceValue(func() ed25519.PrivateKey {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
)

func mustRSA() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
}

func mustEC(c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	return mustEC(elliptic.P256())
}

// secret64 is long enough for HS256, HS384 and HS512.
var secret64 = []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newVerifier builds a verifier on the fixed clock (unless cfg has one) and
// closes it when the test ends.
func newVerifier(t testing.TB, cfg jwt.Config) *jwt.Verifier {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = fixedNow
	}
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	v, err := jwt.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// pemFile writes pub as a PKIX "PUBLIC KEY" PEM file and returns its path.
func pemFile(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	return writeFile(t, "key.pem", pemBytes(t, pub))
}

func pemBytes(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// claims returns valid claims at t0 for user-1, plus extra (a nil value
// deletes a claim).
func claims(extra map[string]any) map[string]any {
	c := map[string]any{
		"sub": "user-1",
		"iat": t0.Add(-time.Minute).Unix(),
		"exp": t0.Add(time.Hour).Unix(),
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// rawToken builds an unsigned-by-library token from literal header and claims
// JSON and a signature; for hand-crafted attacks.
func rawToken(header, payload string, sig []byte) string {
	e := base64.RawURLEncoding
	return e.EncodeToString([]byte(header)) + "." + e.EncodeToString([]byte(payload)) + "." + e.EncodeToString(sig)
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// assertRejected checks that err is a rejection for reason and does not
// leak the token.
func assertRejected(t testing.TB, err error, reason error, token string) {
	t.Helper()
	if err == nil {
		t.Fatalf("token accepted, want rejection with %v", reason)
	}
	if !errors.Is(err, sessionbridge.ErrInvalidToken) {
		t.Errorf("error %q does not wrap sessionbridge.ErrInvalidToken", err)
	}
	if errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Errorf("error %q wraps ErrUnavailable for a bad token", err)
	}
	if !errors.Is(err, reason) {
		t.Errorf("error %q does not wrap %v", err, reason)
	}
	assertNoLeak(t, err, token)
}

func assertNoLeak(t testing.TB, err error, token string) {
	t.Helper()
	msg := err.Error()
	for _, part := range strings.Split(token, ".") {
		if len(part) >= 8 && strings.Contains(msg, part) {
			t.Errorf("error %q contains part of the token", msg)
		}
	}
}

var jwtB64 = base64.RawURLEncoding

const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func pemEncode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func x509MarshalPKCS1(pub *rsa.PublicKey) []byte { return x509.MarshalPKCS1PublicKey(pub) }

func x509MarshalPKCS8(key any) ([]byte, error) { return x509.MarshalPKCS8PrivateKey(key) }

// mustRSAWeak returns a 1024-bit RSA key, which New must refuse.
func mustRSAWeak(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// selfSignedCert returns a PEM certificate for key.
func selfSignedCert(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "issuer"},
		NotBefore:    t0.Add(-time.Hour),
		NotAfter:     t0.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pemEncode("CERTIFICATE", der)
}
