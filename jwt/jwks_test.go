package jwt_test

import (
	"context"
	"crypto/elliptic"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/jwt"
	"github.com/sessionbridge/sessionbridge/jwt/jwttest"
)

func TestJWKSFile(t *testing.T) {
	ctx := context.Background()
	ecOther := newECKey(t)
	set := jwttest.JWKS(t,
		jwttest.JWK(t, "rsa-1", "RS256", &rsaKey().PublicKey),
		jwttest.JWK(t, "ec-1", "", &ecKey256().PublicKey),
		jwttest.JWK(t, "ed-1", "EdDSA", edKey().Public()),
		// Unusable members are skipped, not fatal.
		map[string]any{"kty": "RSA", "kid": "enc-1", "use": "enc", "n": "AQAB", "e": "AQAB"},
		withUse(jwttest.JWK(t, "enc-2", "", &ecOther.PublicKey), "enc"),
		withKeyOps(jwttest.JWK(t, "wrap-1", "", &ecOther.PublicKey), "wrapKey"),
		map[string]any{"kty": "oct", "kid": "hmac-1", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},
		jwttest.JWK(t, "mismatch-1", "ES384", &ecOther.PublicKey), // P-256 key claiming ES384
		map[string]any{"kty": "EC", "kid": "short-1", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
		map[string]any{"kty": "RSA", "kid": "weak-1", "n": jwtB64.EncodeToString(mustRSAWeak(t).N.Bytes()), "e": "AQAB"},
		map[string]any{"kty": "OKP", "kid": "x25519-1", "crv": "X25519", "x": jwtB64.EncodeToString(make([]byte, 32))},
		map[string]any{"kty": 7},
	)
	v := newVerifier(t, jwt.Config{JWKSFile: writeFile(t, "jwks.json", set)})

	accepted := map[string]string{
		"RS256 by kid": jwttest.RS256(t, rsaKey(), "rsa-1", claims(nil)),
		"RS256 no kid": jwttest.RS256(t, rsaKey(), "", claims(nil)),
		"ES256 by kid": jwttest.Sign(t, "ES256", ecKey256(), "ec-1", claims(nil)),
		"EdDSA by kid": jwttest.Sign(t, "EdDSA", edKey(), "ed-1", claims(nil)),
		"EdDSA no kid": jwttest.Sign(t, "EdDSA", edKey(), "", claims(nil)),
		"ES256 no kid": jwttest.Sign(t, "ES256", ecKey256(), "", claims(nil)),
	}
	for name, tok := range accepted {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	rejected := []struct {
		name string
		tok  string
		want error
	}{
		{"alg pinned by the JWK", jwttest.Sign(t, "PS256", rsaKey(), "rsa-1", claims(nil)), jwt.ErrBadAlgorithm},
		{"alg of another key type for the kid", jwttest.Sign(t, "ES256", ecKey256(), "rsa-1", claims(nil)), jwt.ErrBadAlgorithm},
		{"encryption key", jwttest.Sign(t, "ES256", ecOther, "enc-2", claims(nil)), jwt.ErrUnknownKey},
		{"key_ops without verify", jwttest.Sign(t, "ES256", ecOther, "wrap-1", claims(nil)), jwt.ErrUnknownKey},
		{"symmetric JWK is never used", jwttest.Sign(t, "HS256", []byte("secretsecretsecretsecretsecret"), "hmac-1", claims(nil)), jwt.ErrBadAlgorithm},
		{"unknown kid", jwttest.Sign(t, "ES256", ecKey256(), "nope", claims(nil)), jwt.ErrUnknownKey},
		{"right kid, wrong key", jwttest.Sign(t, "ES256", ecOther, "ec-1", claims(nil)), jwt.ErrBadSignature},
		{"no kid, wrong key", jwttest.Sign(t, "ES256", ecOther, "", claims(nil)), jwt.ErrBadSignature},
		{"ES384 has no key", jwttest.Sign(t, "ES384", ecKey384(), "", claims(nil)), jwt.ErrBadAlgorithm},
	}
	for _, tt := range rejected {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(ctx, tt.tok)
			assertRejected(t, err, tt.want, tt.tok)
		})
	}
}

func TestKidlessKeysServeTokensWithKid(t *testing.T) {
	// Keys from a secret or a PEM file have no kid; an issuer that stamps a
	// kid on its tokens must still be accepted by them.
	v := newVerifier(t, jwt.Config{HMACSecret: secret64, PublicKeyFiles: []string{pemFile(t, &ecKey256().PublicKey)}})
	for _, tok := range []string{
		jwttest.Sign(t, "HS256", secret64, "2026-key", claims(nil)),
		jwttest.Sign(t, "ES256", ecKey256(), "whatever", claims(nil)),
	} {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Errorf("Verify: %v", err)
		}
	}
}

func withUse(j map[string]any, use string) map[string]any { j["use"] = use; return j }

func withKeyOps(j map[string]any, ops ...string) map[string]any {
	delete(j, "use")
	j["key_ops"] = ops
	return j
}

// jwksServer serves a JWK Set that tests can change, and counts requests.
type jwksServer struct {
	*httptest.Server
	requests atomic.Int64

	mu     sync.Mutex
	body   []byte
	status int
	gate   chan struct{} // when set, requests wait for it to close
}

func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	t.Helper()
	s := &jwksServer{body: body, status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		body, status, gate := s.body, s.status, s.gate
		s.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(body []byte, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.status = body, status
}

func (s *jwksServer) setGate(g chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gate = g
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, not synchronisation
	}
}

func remoteVerifier(t *testing.T, url string, clock *fakeClock) *jwt.Verifier {
	t.Helper()
	return newVerifier(t, jwt.Config{
		JWKSURL:        url,
		Now:            clock.Now,
		JWKSRefresh:    time.Hour, // no background fetch during the test
		JWKSMinRefresh: 30 * time.Second,
	})
}

func TestJWKSURLKeyRotation(t *testing.T) {
	ctx := context.Background()
	k1, k2 := newECKey(t), newECKey(t)
	srv := newJWKSServer(t, jwttest.JWKS(t, jwttest.JWK(t, "k1", "ES256", &k1.PublicKey)))
	clock := newFakeClock()
	v := remoteVerifier(t, srv.URL, clock)
	if n := srv.requests.Load(); n != 1 {
		t.Fatalf("New made %d requests, want 1", n)
	}
	if _, err := v.Verify(ctx, jwttest.Sign(t, "ES256", k1, "k1", claims(nil))); err != nil {
		t.Fatalf("k1: %v", err)
	}
	if n := srv.requests.Load(); n != 1 {
		t.Fatalf("a known kid caused a fetch (%d requests)", n)
	}

	// The issuer rotates: k2 appears. Its first token triggers one fetch.
	srv.set(jwttest.JWKS(t, jwttest.JWK(t, "k1", "ES256", &k1.PublicKey), jwttest.JWK(t, "k2", "ES256", &k2.PublicKey)), http.StatusOK)
	clock.Advance(time.Minute)
	tok2 := jwttest.Sign(t, "ES256", k2, "k2", claims(nil))
	if _, err := v.Verify(ctx, tok2); err != nil {
		t.Fatalf("k2 after rotation: %v", err)
	}
	if n := srv.requests.Load(); n != 2 {
		t.Fatalf("requests = %d, want 2 (one refetch for the new kid)", n)
	}
	for range 5 {
		if _, err := v.Verify(ctx, tok2); err != nil {
			t.Fatalf("k2 again: %v", err)
		}
	}
	if n := srv.requests.Load(); n != 2 {
		t.Fatalf("requests = %d, want still 2", n)
	}

	// k1 is retired: after the next fetch it no longer verifies.
	srv.set(jwttest.JWKS(t, jwttest.JWK(t, "k2", "ES256", &k2.PublicKey)), http.StatusOK)
	clock.Advance(time.Minute)
	k3 := newECKey(t)
	_, err := v.Verify(ctx, jwttest.Sign(t, "ES256", k3, "k3", claims(nil))) // unknown: refetch
	assertRejected(t, err, jwt.ErrUnknownKey, "")
	tok1 := jwttest.Sign(t, "ES256", k1, "k1", claims(nil))
	_, err = v.Verify(ctx, tok1)
	assertRejected(t, err, jwt.ErrUnknownKey, tok1)
}

func TestJWKSUnknownKidFloodIsRateLimited(t *testing.T) {
	ctx := context.Background()
	k1 := newECKey(t)
	srv := newJWKSServer(t, jwttest.JWKS(t, jwttest.JWK(t, "k1", "ES256", &k1.PublicKey)))
	clock := newFakeClock()
	v := remoteVerifier(t, srv.URL, clock)
	clock.Advance(time.Minute) // out of the window of New's fetch

	// Hold the refetch until every verifier has started, so that they
	// overlap with the fetch in flight.
	gate := make(chan struct{})
	srv.setGate(gate)
	const n = 50
	errs := make(chan error, n)
	for i := range n {
		tok := jwttest.Sign(t, "ES256", k1, fmt.Sprintf("made-up-%d", i), claims(nil))
		go func() {
			_, err := v.Verify(ctx, tok)
			errs <- err
		}()
	}
	waitFor(t, "the refetch to reach the server", func() bool { return srv.requests.Load() == 2 })
	srv.setGate(nil)
	close(gate)
	for range n {
		assertRejected(t, <-errs, jwt.ErrUnknownKey, "")
	}
	if got := srv.requests.Load(); got != 2 {
		t.Fatalf("requests = %d after %d unknown kids, want 2 (New + one refetch)", got, n)
	}

	// Later unknown kids in the same window fetch nothing.
	clock.Advance(29 * time.Second)
	for i := range 20 {
		_, err := v.Verify(ctx, jwttest.Sign(t, "ES256", k1, fmt.Sprintf("again-%d", i), claims(nil)))
		assertRejected(t, err, jwt.ErrUnknownKey, "")
	}
	if got := srv.requests.Load(); got != 2 {
		t.Fatalf("requests = %d within the window, want 2", got)
	}

	// The next window allows one more.
	clock.Advance(2 * time.Second)
	for i := range 20 {
		_, err := v.Verify(ctx, jwttest.Sign(t, "ES256", k1, fmt.Sprintf("later-%d", i), claims(nil)))
		assertRejected(t, err, jwt.ErrUnknownKey, "")
	}
	if got := srv.requests.Load(); got != 3 {
		t.Fatalf("requests = %d in the next window, want 3", got)
	}
	// Known keys keep working throughout.
	if _, err := v.Verify(ctx, jwttest.Sign(t, "ES256", k1, "k1", claims(nil))); err != nil {
		t.Fatal(err)
	}
}

func TestJWKSServerDownKeepsCachedKeys(t *testing.T) {
	ctx := context.Background()
	k1 := newECKey(t)
	srv := newJWKSServer(t, jwttest.JWKS(t, jwttest.JWK(t, "k1", "ES256", &k1.PublicKey)))
	clock := newFakeClock()
	v := remoteVerifier(t, srv.URL, clock)

	srv.set([]byte("oops"), http.StatusInternalServerError)
	clock.Advance(time.Minute)
	// The unknown kid makes a fetch that fails...
	_, err := v.Verify(ctx, jwttest.Sign(t, "ES256", k1, "k9", claims(nil)))
	if !errors.Is(err, sessionbridge.ErrUnavailable) || errors.Is(err, sessionbridge.ErrInvalidToken) {
		t.Fatalf("unknown kid while JWKS is down: %v, want ErrUnavailable only", err)
	}
	if n := srv.requests.Load(); n != 2 {
		t.Fatalf("requests = %d, want 2", n)
	}
	// ...and the cached key still verifies.
	if _, err := v.Verify(ctx, jwttest.Sign(t, "ES256", k1, "k1", claims(nil))); err != nil {
		t.Fatalf("cached key while JWKS is down: %v", err)
	}
	// A broken-but-200 answer must not wipe the cache either.
	srv.set([]byte(`{"keys":[]}`), http.StatusOK)
	clock.Advance(time.Minute)
	_, err = v.Verify(ctx, jwttest.Sign(t, "ES256", k1, "k8", claims(nil)))
	if !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Fatalf("unknown kid with an empty JWKS: %v, want ErrUnavailable", err)
	}
	if _, err := v.Verify(ctx, jwttest.Sign(t, "ES256", k1, "k1", claims(nil))); err != nil {
		t.Fatalf("cached key after an empty JWKS: %v", err)
	}
	// Fully gone: connection refused.
	srv.Close()
	clock.Advance(time.Minute)
	_, err = v.Verify(ctx, jwttest.Sign(t, "ES256", k1, "k7", claims(nil)))
	if !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Fatalf("unknown kid with the server gone: %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), srv.URL) {
		t.Errorf("error %q repeats the JWKS URL", err)
	}
	if _, err := v.Verify(ctx, jwttest.Sign(t, "ES256", k1, "k1", claims(nil))); err != nil {
		t.Fatalf("cached key with the server gone: %v", err)
	}
}

func TestJWKSDownWithNoKeysIsUnavailable(t *testing.T) {
	ctx := context.Background()
	k1 := newECKey(t)
	srv := newJWKSServer(t, nil)
	srv.set([]byte("down"), http.StatusServiceUnavailable)
	clock := newFakeClock()
	v := remoteVerifier(t, srv.URL+"/jwks?api_key=hunter2", clock) // New succeeds: the IdP may come up later

	for _, tok := range []string{
		jwttest.Sign(t, "ES256", k1, "k1", claims(nil)),
		jwttest.Sign(t, "ES256", k1, "", claims(nil)),
	} {
		_, err := v.Verify(ctx, tok)
		if !errors.Is(err, sessionbridge.ErrUnavailable) {
			t.Fatalf("Verify: %v, want ErrUnavailable", err)
		}
		if errors.Is(err, sessionbridge.ErrInvalidToken) {
			t.Errorf("Verify: %v also wraps ErrInvalidToken", err)
		}
		assertNoLeak(t, err, tok)
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error %q leaks the URL's query", err)
		}
	}

	// The IdP comes up; the next window's fetch brings the keys.
	srv.set(jwttest.JWKS(t, jwttest.JWK(t, "k1", "ES256", &k1.PublicKey)), http.StatusOK)
	clock.Advance(time.Minute)
	if _, err := v.Verify(ctx, jwttest.Sign(t, "ES256", k1, "k1", claims(nil))); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

func TestJWKSBodyLimit(t *testing.T) {
	k1 := newECKey(t)
	big := jwttest.JWKS(t, jwttest.JWK(t, "k1", "ES256", &k1.PublicKey))
	// Valid JSON, padded past 1 MiB with whitespace.
	big = append(big[:len(big)-1], append([]byte(strings.Repeat(" ", 1<<20)), '}')...)
	srv := newJWKSServer(t, big)
	v := remoteVerifier(t, srv.URL, newFakeClock())
	_, err := v.Verify(context.Background(), jwttest.Sign(t, "ES256", k1, "k1", claims(nil)))
	if !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Fatalf("Verify with an oversized JWKS: %v, want ErrUnavailable", err)
	}
}

func TestJWKSBackgroundRefresh(t *testing.T) {
	ctx := context.Background()
	k1, k2 := newECKey(t), newECKey(t)
	srv := newJWKSServer(t, jwttest.JWKS(t, jwttest.JWK(t, "k1", "ES256", &k1.PublicKey)))
	clock := newFakeClock() // frozen: unknown kids cannot trigger fetches after the first
	v := newVerifier(t, jwt.Config{
		JWKSURL:        srv.URL,
		Now:            clock.Now,
		JWKSRefresh:    5 * time.Millisecond,
		JWKSMinRefresh: time.Hour,
	})
	tok1 := jwttest.Sign(t, "ES256", k1, "k1", claims(nil))
	if _, err := v.Verify(ctx, tok1); err != nil {
		t.Fatal(err)
	}
	// Replace k1 by k2 on the server: only the background refresher can
	// notice, since the clock never leaves New's rate-limit window.
	srv.set(jwttest.JWKS(t, jwttest.JWK(t, "k2", "ES256", &k2.PublicKey)), http.StatusOK)
	tok2 := jwttest.Sign(t, "ES256", k2, "k2", claims(nil))
	waitFor(t, "the background refresh to pick up k2", func() bool {
		_, err := v.Verify(ctx, tok2)
		return err == nil
	})
	_, err := v.Verify(ctx, tok1)
	assertRejected(t, err, jwt.ErrUnknownKey, tok1)

	// Close stops the refresher and any fetching (goleak in TestMain checks
	// that the goroutine is gone).
	v.Close()
	before := srv.requests.Load()
	clock.Advance(2 * time.Hour) // out of every rate-limit window
	tok3 := jwttest.Sign(t, "ES256", k2, "k3", claims(nil))
	if _, err := v.Verify(ctx, tok3); !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Errorf("unknown kid after Close: %v, want ErrUnavailable", err)
	}
	if got := srv.requests.Load(); got != before {
		t.Errorf("a closed verifier fetched the JWKS (%d requests, was %d)", got, before)
	}
	if v.Close() != nil {
		t.Error("second Close failed")
	}
	// Verify still works with the keys held.
	late := jwttest.Sign(t, "ES256", k2, "k2", claims(map[string]any{"exp": t0.Add(3 * time.Hour).Unix()}))
	if _, err := v.Verify(ctx, late); err != nil {
		t.Errorf("Verify after Close: %v", err)
	}
}

func TestJWKSVerifyHonoursContext(t *testing.T) {
	k1 := newECKey(t)
	srv := newJWKSServer(t, jwttest.JWKS(t, jwttest.JWK(t, "k1", "ES256", &k1.PublicKey)))
	clock := newFakeClock()
	v := remoteVerifier(t, srv.URL, clock)
	gate := make(chan struct{})
	defer close(gate)
	srv.setGate(gate) // the refetch hangs
	clock.Advance(time.Minute)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	tok := jwttest.Sign(t, "ES256", k1, "k2", claims(nil))
	go func() {
		_, err := v.Verify(ctx, tok)
		done <- err
	}()
	waitFor(t, "the refetch to start", func() bool { return srv.requests.Load() == 2 })
	cancel()
	err := <-done
	if !errors.Is(err, sessionbridge.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify with a cancelled context: %v", err)
	}
	// Close cancels the hung fetch and returns.
	v.Close()
}

func TestNewHonoursContext(t *testing.T) {
	srv := newJWKSServer(t, []byte(`{"keys":[]}`))
	gate := make(chan struct{})
	defer close(gate)
	srv.setGate(gate)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	v, err := jwt.New(ctx, jwt.Config{JWKSURL: srv.URL, Logger: discardLogger()})
	if err == nil {
		v.Close()
		t.Fatal("New succeeded although its context ended during the first fetch")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("New: %v, want DeadlineExceeded", err)
	}
}

func TestJWKSFileP521(t *testing.T) {
	// P-521 coordinates are 66 bytes, often with leading zeros: the JWK
	// encoding must keep them and the parser must accept them.
	for range 4 {
		k := mustEC(elliptic.P521())
		v := newVerifier(t, jwt.Config{JWKSFile: writeFile(t, "jwks.json", jwttest.JWKS(t, jwttest.JWK(t, "p521", "ES512", k)))})
		if _, err := v.Verify(context.Background(), jwttest.Sign(t, "ES512", k, "p521", claims(nil))); err != nil {
			t.Fatalf("ES512: %v", err)
		}
	}
}
