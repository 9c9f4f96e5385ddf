package jwt

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"fmt"
	"math/bits"
	"strings"
)

// alg is one JWS algorithm this package knows; algSet is a set of them.
type alg uint8

const (
	hs256 alg = iota
	hs384
	hs512
	rs256
	rs384
	rs512
	ps256
	ps384
	ps512
	es256
	es384
	es512
	edDSA
	numAlgs
)

type algSet uint16

var algNames = [numAlgs]string{
	hs256: "HS256", hs384: "HS384", hs512: "HS512",
	rs256: "RS256", rs384: "RS384", rs512: "RS512",
	ps256: "PS256", ps384: "PS384", ps512: "PS512",
	es256: "ES256", es384: "ES384", es512: "ES512",
	edDSA: "EdDSA",
}

const (
	hmacAlgs       = algSet(1<<hs256 | 1<<hs384 | 1<<hs512)
	rsaAlgs        = algSet(1<<rs256 | 1<<rs384 | 1<<rs512 | 1<<ps256 | 1<<ps384 | 1<<ps512)
	asymmetricAlgs = rsaAlgs | 1<<es256 | 1<<es384 | 1<<es512 | 1<<edDSA
)

func (a alg) String() string { return algNames[a] }

func (s algSet) has(a alg) bool { return s&(1<<a) != 0 }

// names lists the set in a stable order.
func (s algSet) names() []string {
	out := make([]string, 0, bits.OnesCount16(uint16(s)))
	for a := range numAlgs {
		if s.has(a) {
			out = append(out, algNames[a])
		}
	}
	return out
}

func (s algSet) String() string { return strings.Join(s.names(), ",") }

// parseAlg returns the algorithm named exactly name (JWS names are case
// sensitive).
func parseAlg(name string) (alg, bool) {
	for a, n := range algNames {
		if n == name {
			return alg(a), true
		}
	}
	return 0, false
}

// Key size limits. RSA below 2048 bits is breakable or close to it; above
// 8192 bits, verification becomes a cheap way to burn our CPU.
const (
	minRSABits      = 2048
	maxRSABits      = 8192
	minHMACSecret   = 32
	maxRSAPublicExp = 1<<31 - 1
)

// algsForKey returns the algorithms a key of this type and size may verify: a
// key never verifies an algorithm of another family, which is what makes
// HMAC-with-a-public-key confusion impossible.
func algsForKey(pub any) (algSet, error) {
	switch k := pub.(type) {
	case []byte:
		// RFC 7518 3.2: the HMAC key must be at least as long as the hash.
		if len(k) < minHMACSecret {
			return 0, fmt.Errorf("HMAC secret has %d bytes, need at least %d", len(k), minHMACSecret)
		}
		s := algSet(1 << hs256)
		if len(k) >= 48 {
			s |= 1 << hs384
		}
		if len(k) >= 64 {
			s |= 1 << hs512
		}
		return s, nil
	case *rsa.PublicKey:
		if k.N == nil || k.N.BitLen() < minRSABits || k.N.BitLen() > maxRSABits {
			return 0, fmt.Errorf("RSA key size must be %d to %d bits", minRSABits, maxRSABits)
		}
		if k.E < 3 || k.E > maxRSAPublicExp || k.E%2 == 0 {
			return 0, fmt.Errorf("RSA public exponent is unusable")
		}
		return rsaAlgs, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return 1 << es256, nil
		case elliptic.P384():
			return 1 << es384, nil
		case elliptic.P521():
			return 1 << es512, nil
		}
		return 0, fmt.Errorf("unsupported ECDSA curve")
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return 0, fmt.Errorf("Ed25519 key has %d bytes", len(k))
		}
		return 1 << edDSA, nil
	}
	return 0, fmt.Errorf("unsupported key type %T", pub)
}
