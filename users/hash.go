package users

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Algorithm names a password hashing algorithm.
type Algorithm string

// Password hashing algorithms. The zero Algorithm means Argon2id.
const (
	Argon2id Algorithm = "argon2id"
	Bcrypt   Algorithm = "bcrypt"
)

// ParseAlgorithm returns the Algorithm named s ("argon2id" or "bcrypt"; ""
// means Argon2id).
func ParseAlgorithm(s string) (Algorithm, error) {
	switch a := Algorithm(strings.ToLower(strings.TrimSpace(s))); a {
	case "", Argon2id:
		return Argon2id, nil
	case Bcrypt:
		return Bcrypt, nil
	}
	return "", fmt.Errorf("users: unknown hash algorithm %q (want argon2id or bcrypt)", s)
}

// Argon2Params are the argon2id cost parameters of new hashes.
type Argon2Params struct {
	// Memory in KiB.
	Memory  uint32
	Time    uint32
	Threads uint8
	SaltLen uint32
	KeyLen  uint32
}

// DefaultArgon2Params returns the OWASP-recommended argon2id parameters:
// 19 MiB of memory, 2 iterations, 1 thread, a 16-byte salt and a 32-byte key.
func DefaultArgon2Params() Argon2Params {
	return Argon2Params{Memory: 19456, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}
}

// DefaultBcryptCost is the bcrypt cost of new hashes.
const DefaultBcryptCost = 12

// Limits on hashes read from a file. Hashes outside them are rejected rather
// than computed: a hash is a recipe for how much work a login costs.
const (
	maxArgon2Memory = 1 << 20 // KiB: 1 GiB
	maxArgon2Time   = 64
	minArgon2Salt   = 8
	maxArgon2Salt   = 64
	minArgon2Key    = 16
	maxArgon2Key    = 128
	maxBcryptCost   = 18
	// bcrypt reads at most 72 bytes of a password.
	maxBcryptPassword = 72
)

// MaxPasswordLen is the longest password accepted, in bytes.
const MaxPasswordLen = 1024

// ErrUnsupportedHash means a stored hash is not an argon2id PHC string or a
// bcrypt hash, or its parameters are out of range.
var ErrUnsupportedHash = errors.New("users: unsupported password hash")

var b64 = base64.RawStdEncoding

// argon2Hash is a parsed "$argon2id$v=19$m=...,t=...,p=...$salt$key" string.
type argon2Hash struct {
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

func (h *argon2Hash) String() string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, h.memory, h.time, h.threads, b64.EncodeToString(h.salt), b64.EncodeToString(h.key))
}

// verify reports, in constant time, whether password matches h.
func (h *argon2Hash) verify(password string) bool {
	got := argon2.IDKey([]byte(password), h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(got, h.key) == 1
}

// hashArgon2 returns the PHC string of password under p.
func hashArgon2(password string, p Argon2Params) (string, error) {
	if err := checkArgon2Params(p.Memory, p.Time, p.Threads, p.SaltLen, p.KeyLen); err != nil {
		return "", err
	}
	salt := make([]byte, p.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("users: reading random salt: %w", err)
	}
	h := argon2Hash{memory: p.Memory, time: p.Time, threads: p.Threads, salt: salt}
	h.key = argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return h.String(), nil
}

func checkArgon2Params(memory, time uint32, threads uint8, saltLen, keyLen uint32) error {
	switch {
	case time < 1 || time > maxArgon2Time:
		return fmt.Errorf("%w: argon2id t=%d out of range 1..%d", ErrUnsupportedHash, time, maxArgon2Time)
	case threads < 1:
		return fmt.Errorf("%w: argon2id p=%d out of range 1..255", ErrUnsupportedHash, threads)
	case memory < 8*uint32(threads) || memory > maxArgon2Memory:
		return fmt.Errorf("%w: argon2id m=%d out of range %d..%d", ErrUnsupportedHash, memory, 8*uint32(threads), maxArgon2Memory)
	case saltLen < minArgon2Salt || saltLen > maxArgon2Salt:
		return fmt.Errorf("%w: argon2id salt of %d bytes out of range %d..%d", ErrUnsupportedHash, saltLen, minArgon2Salt, maxArgon2Salt)
	case keyLen < minArgon2Key || keyLen > maxArgon2Key:
		return fmt.Errorf("%w: argon2id key of %d bytes out of range %d..%d", ErrUnsupportedHash, keyLen, minArgon2Key, maxArgon2Key)
	}
	return nil
}

// parseArgon2 parses an argon2id PHC string. Parameters must appear in the
// order m, t, p, as the reference implementation writes them.
func parseArgon2(s string) (*argon2Hash, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return nil, fmt.Errorf("%w: not an argon2id PHC string", ErrUnsupportedHash)
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return nil, fmt.Errorf("%w: argon2id version %q, want v=%d", ErrUnsupportedHash, parts[2], argon2.Version)
	}
	params := strings.Split(parts[3], ",")
	if len(params) != 3 {
		return nil, fmt.Errorf("%w: argon2id parameters %q", ErrUnsupportedHash, parts[3])
	}
	var vals [3]uint64
	for i, name := range [3]string{"m=", "t=", "p="} {
		v, ok := strings.CutPrefix(params[i], name)
		if !ok {
			return nil, fmt.Errorf("%w: argon2id parameters %q", ErrUnsupportedHash, parts[3])
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%w: argon2id parameter %q", ErrUnsupportedHash, params[i])
		}
		vals[i] = n
	}
	if vals[2] > 255 {
		return nil, fmt.Errorf("%w: argon2id p=%d out of range 1..255", ErrUnsupportedHash, vals[2])
	}
	h := &argon2Hash{memory: uint32(vals[0]), time: uint32(vals[1]), threads: uint8(vals[2])}
	var err error
	if h.salt, err = b64.DecodeString(parts[4]); err != nil {
		return nil, fmt.Errorf("%w: argon2id salt is not unpadded base64", ErrUnsupportedHash)
	}
	if h.key, err = b64.DecodeString(parts[5]); err != nil {
		return nil, fmt.Errorf("%w: argon2id key is not unpadded base64", ErrUnsupportedHash)
	}
	if err := checkArgon2Params(h.memory, h.time, h.threads, uint32(len(h.salt)), uint32(len(h.key))); err != nil {
		return nil, err
	}
	return h, nil
}

// checkBcrypt validates a bcrypt hash string: a known version prefix and a
// cost this server is willing to spend.
func checkBcrypt(s string) error {
	if !strings.HasPrefix(s, "$2a$") && !strings.HasPrefix(s, "$2b$") && !strings.HasPrefix(s, "$2y$") {
		return fmt.Errorf("%w: not a bcrypt hash", ErrUnsupportedHash)
	}
	cost, err := bcrypt.Cost([]byte(s))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnsupportedHash, err)
	}
	if cost > maxBcryptCost {
		return fmt.Errorf("%w: bcrypt cost %d above %d", ErrUnsupportedHash, cost, maxBcryptCost)
	}
	return nil
}

// hasher is a parsed stored hash.
type hasher interface {
	verify(password string) bool
}

type bcryptHash struct{ hash []byte }

func (h bcryptHash) verify(password string) bool {
	if len(password) > maxBcryptPassword {
		// bcrypt would ignore the bytes past 72; refuse instead of accepting
		// a password that merely starts right, but spend the same time.
		_ = bcrypt.CompareHashAndPassword(h.hash, []byte(password[:maxBcryptPassword]))
		return false
	}
	return bcrypt.CompareHashAndPassword(h.hash, []byte(password)) == nil
}

// parseHash parses a stored hash of either algorithm.
func parseHash(s string) (hasher, Algorithm, error) {
	switch {
	case strings.HasPrefix(s, "$argon2id$"):
		h, err := parseArgon2(s)
		if err != nil {
			return nil, "", err
		}
		return h, Argon2id, nil
	case strings.HasPrefix(s, "$2"):
		if err := checkBcrypt(s); err != nil {
			return nil, "", err
		}
		return bcryptHash{[]byte(s)}, Bcrypt, nil
	}
	return nil, "", fmt.Errorf("%w: want an argon2id PHC string or a bcrypt hash", ErrUnsupportedHash)
}
