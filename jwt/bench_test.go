package jwt_test

import (
	"context"
	"testing"

	"github.com/sessionbridge/sessionbridge/jwt"
	"github.com/sessionbridge/sessionbridge/jwt/jwttest"
)

func benchVerify(b *testing.B, v *jwt.Verifier, tok string) {
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyHS256(b *testing.B) {
	v := newVerifier(b, jwt.Config{HMACSecret: secret64})
	benchVerify(b, v, jwttest.HS256(b, secret64, claims(map[string]any{"scope": "read write"})))
}

func BenchmarkVerifyES256(b *testing.B) {
	v := newVerifier(b, jwt.Config{PublicKeyFiles: []string{pemFile(b, &ecKey256().PublicKey)}})
	benchVerify(b, v, jwttest.Sign(b, "ES256", ecKey256(), "", claims(map[string]any{"scope": "read write"})))
}

func BenchmarkVerifyRS256(b *testing.B) {
	v := newVerifier(b, jwt.Config{PublicKeyFiles: []string{pemFile(b, &rsaKey().PublicKey)}})
	benchVerify(b, v, jwttest.RS256(b, rsaKey(), "", claims(map[string]any{"scope": "read write"})))
}

func BenchmarkVerifyEdDSA(b *testing.B) {
	v := newVerifier(b, jwt.Config{PublicKeyFiles: []string{pemFile(b, edKey().Public())}})
	benchVerify(b, v, jwttest.Sign(b, "EdDSA", edKey(), "", claims(map[string]any{"scope": "read write"})))
}

// BenchmarkRejectGarbage measures the cost of turning away junk, which an
// attacker can send at will.
func BenchmarkRejectGarbage(b *testing.B) {
	v := newVerifier(b, jwt.Config{HMACSecret: secret64})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, "not a token at all"); err == nil {
			b.Fatal("accepted garbage")
		}
	}
}
