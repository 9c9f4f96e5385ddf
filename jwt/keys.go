package jwt

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// key is one verification key with the algorithms it may verify.
type key struct {
	kid  string
	pub  any // []byte, *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	algs algSet
}

func newKey(kid string, pub any) (*key, error) {
	algs, err := algsForKey(pub)
	if err != nil {
		return nil, err
	}
	return &key{kid: kid, pub: pub, algs: algs}, nil
}

// keySet is an immutable set of keys, indexed by kid. It is replaced, never
// changed, so readers need no lock.
type keySet struct {
	all   []*key
	byKID map[string][]*key
}

func newKeySet(keys []*key) *keySet {
	s := &keySet{all: keys, byKID: make(map[string][]*key)}
	for _, k := range keys {
		if k.kid != "" {
			s.byKID[k.kid] = append(s.byKID[k.kid], k)
		}
	}
	return s
}

func (s *keySet) algs() algSet {
	var a algSet
	if s == nil {
		return 0
	}
	for _, k := range s.all {
		a |= k.algs
	}
	return a
}

// maxKeyFile bounds what we read from a key file; real PEM and JWKS files are
// a few kilobytes.
const maxKeyFile = 1 << 20

func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxKeyFile)
	}
	return b, nil
}

// parsePEMKeys parses every PEM block of data as a public key or a
// certificate. Keys from PEM have no kid: they are tried for any token whose
// algorithm they can verify.
func parsePEMKeys(data []byte) ([]*key, error) {
	var keys []*key
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		pub, err := parsePEMBlock(block)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d (%s): %w", n, block.Type, err)
		}
		k, err := newKey("", pub)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d (%s): %w", n, block.Type, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM-encoded public key or certificate found")
	}
	return keys, nil
}

func parsePEMBlock(block *pem.Block) (any, error) {
	switch {
	case block.Type == "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(block.Bytes)
	case block.Type == "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(block.Bytes)
	case block.Type == "CERTIFICATE":
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		return c.PublicKey, nil
	case strings.Contains(block.Type, "PRIVATE KEY"):
		// A verifier has no business holding a signing key; refusing it keeps
		// it out of a config that may be shared more widely than the issuer's.
		return nil, errors.New("a private key; configure the public key instead")
	}
	return nil, errors.New("not a public key or certificate")
}
