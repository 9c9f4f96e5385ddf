package jwt_test

import (
	"context"
	"crypto/ecdsa"
	"sync"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"

	"github.com/sessionbridge/sessionbridge/jwt"
	"github.com/sessionbridge/sessionbridge/jwt/jwttest"
)

func TestVerifyIgnoresKeysEmbeddedInTheToken(t *testing.T) {
	// An attacker signs with their own key and offers it in the header (jwk)
	// or by reference (jku, x5u); none of it may be trusted.
	v := newVerifier(t, jwt.Config{PublicKeyFiles: []string{pemFile(t, &ecKey256().PublicKey)}})
	attacker := newECKey(t)
	tok := gojwt.NewWithClaims(gojwt.SigningMethodES256, gojwt.MapClaims(claims(nil)))
	tok.Header["jwk"] = jwttest.JWK(t, "", "ES256", &attacker.PublicKey)
	tok.Header["jku"] = "https://attacker.example/jwks.json"
	tok.Header["x5u"] = "https://attacker.example/cert.pem"
	s, err := tok.SignedString(attacker)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), s)
	assertRejected(t, err, jwt.ErrBadSignature, s)
}

func TestVerifyTriesABoundedNumberOfKeys(t *testing.T) {
	// Twenty kid-less keys: a token without kid is checked against the first
	// eight only, so a token cannot make us run twenty verifications.
	keys := make([]*ecdsa.PrivateKey, 20)
	jwks := make([]map[string]any, len(keys))
	for i := range keys {
		keys[i] = newECKey(t)
		jwks[i] = jwttest.JWK(t, "", "", &keys[i].PublicKey)
	}
	v := newVerifier(t, jwt.Config{JWKSFile: writeFile(t, "jwks.json", jwttest.JWKS(t, jwks...))})
	if _, err := v.Verify(context.Background(), jwttest.Sign(t, "ES256", keys[7], "", claims(nil))); err != nil {
		t.Errorf("eighth key: %v", err)
	}
	tok := jwttest.Sign(t, "ES256", keys[19], "", claims(nil))
	_, err := v.Verify(context.Background(), tok)
	assertRejected(t, err, jwt.ErrBadSignature, tok)
}

func TestJWKSSameKidForTwoKeyTypes(t *testing.T) {
	// During a migration a provider may publish an RSA and an EC key under
	// one kid; the token's alg picks between them.
	set := jwttest.JWKS(t,
		jwttest.JWK(t, "2026", "", &rsaKey().PublicKey),
		jwttest.JWK(t, "2026", "", &ecKey256().PublicKey),
	)
	v := newVerifier(t, jwt.Config{JWKSFile: writeFile(t, "jwks.json", set)})
	for _, tok := range []string{
		jwttest.RS256(t, rsaKey(), "2026", claims(nil)),
		jwttest.Sign(t, "ES256", ecKey256(), "2026", claims(nil)),
	} {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Errorf("Verify: %v", err)
		}
	}
}

func TestConcurrentVerifyDuringRefresh(t *testing.T) {
	// Run under -race: verifications read the key set while the refresher
	// replaces it.
	k1 := newECKey(t)
	srv := newJWKSServer(t, jwttest.JWKS(t, jwttest.JWK(t, "k1", "ES256", &k1.PublicKey)))
	v := newVerifier(t, jwt.Config{JWKSURL: srv.URL, JWKSRefresh: time.Millisecond, Now: fixedNow})
	tok := jwttest.Sign(t, "ES256", k1, "k1", claims(nil))
	unknown := jwttest.Sign(t, "ES256", k1, "k2", claims(nil))
	start := srv.requests.Load()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if _, err := v.Verify(context.Background(), tok); err != nil {
					errs <- err
					return
				}
				v.Verify(context.Background(), unknown)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Verify during refresh: %v", err)
	}
	waitFor(t, "background refreshes", func() bool { return srv.requests.Load() > start+2 })
}
