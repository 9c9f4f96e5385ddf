package users

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/strictjson"
)

// Errors that callers branch on.
var (
	// ErrExists means a user with that username is already in the file.
	ErrExists = errors.New("users: user already exists")
	// ErrNotFound means no user has that username.
	ErrNotFound = errors.New("users: user not found")
	// ErrInvalidUsername means a username is not 1 to 64 ASCII letters,
	// digits and the characters . _ @ -.
	ErrInvalidUsername = errors.New("users: invalid username")
	// ErrInvalidPassword means a password is empty or too long.
	ErrInvalidPassword = errors.New("users: invalid password")
	// ErrInvalidFile means the users file is not valid JSON of the expected
	// shape, or holds an invalid or duplicate entry.
	ErrInvalidFile = errors.New("users: invalid users file")
)

// MaxUsernameLen is the longest username accepted.
const MaxUsernameLen = 64

// User is an account of the users file, without its password hash: a User
// can be printed, logged and returned from APIs.
type User struct {
	Username string
	// Scopes are the scope patterns the sessions of this user hold (set at
	// login; "*" and "**" are every scope); empty means the server's
	// default.
	Scopes    []string
	CreatedAt time.Time
}

// String returns the username and scopes.
func (u User) String() string {
	return fmt.Sprintf("%s [%s]", u.Username, strings.Join(u.Scopes, " "))
}

// record is a user as stored in the file.
type record struct {
	Username  string    `json:"username"`
	Hash      string    `json:"hash"`
	Scopes    []string  `json:"scopes"`
	CreatedAt time.Time `json:"created_at"`
}

// entry is a user in memory, with its parsed hash.
type entry struct {
	record
	algo Algorithm
	h    hasher
}

func (e *entry) user() User {
	return User{Username: e.Username, Scopes: slices.Clone(e.Scopes), CreatedAt: e.CreatedAt}
}

type fileJSON struct {
	Users []record `json:"users"`
}

// File is a users file in memory. The zero File is an empty set of users
// that can be filled and verified against, but not saved (it has no path).
// A File is safe for concurrent use.
type File struct {
	// Params are the argon2id parameters of hashes Add creates; zero means
	// DefaultArgon2Params. Lower them only in tests.
	Params Argon2Params
	// BcryptCost is the cost of bcrypt hashes Add creates; zero means
	// DefaultBcryptCost. Lower it only in tests.
	BcryptCost int
	// Now returns the current time for created_at; nil means time.Now.
	Now func() time.Time

	path string

	mu    sync.RWMutex
	users map[string]*entry

	dummyMu sync.Mutex
	dummies map[Algorithm]hasher
}

// Load reads the users file at path. A missing file is an empty set of users
// (Save creates it); an unreadable or malformed one is an error wrapping
// ErrInvalidFile or the read error.
func Load(path string) (*File, error) {
	f := &File{path: path}
	if err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path returns the file's path, "" for a File not made by Load.
func (f *File) Path() string { return f.path }

// Reload replaces the users in memory with the current contents of the file,
// to pick up changes saved by another process. Unsaved changes are lost. On
// error the users in memory are left as they were.
func (f *File) Reload() error {
	if f.path == "" {
		return errors.New("users: reload: file has no path")
	}
	data, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		data = nil
	} else if err != nil {
		return fmt.Errorf("users: reading users file: %w", err)
	}
	users, err := decode(data)
	if err != nil {
		return fmt.Errorf("%w %s: %w", ErrInvalidFile, f.path, err)
	}
	f.mu.Lock()
	f.users = users
	f.mu.Unlock()
	return nil
}

// decode parses the file contents; empty contents are an empty set.
func decode(data []byte) (map[string]*entry, error) {
	users := make(map[string]*entry)
	if len(bytes.TrimSpace(data)) == 0 {
		return users, nil
	}
	var doc fileJSON
	// Strict like every input: a username listed under two spellings of
	// "username", or twice in one record, must not pick one silently.
	if err := strictjson.Decode(data, &doc); err != nil {
		return nil, err
	}
	for i, r := range doc.Users {
		if err := ValidUsername(r.Username); err != nil {
			return nil, fmt.Errorf("user %d: %w", i, err)
		}
		if _, dup := users[r.Username]; dup {
			return nil, fmt.Errorf("user %q: listed twice", r.Username)
		}
		// A user's scopes become their sessions' at login: refuse the file
		// now rather than the sign-in then.
		if _, err := sessionbridge.CompileScopes(r.Scopes); err != nil {
			return nil, fmt.Errorf("user %q: %w", r.Username, err)
		}
		// The hash itself is never quoted in errors: it is secret-ish.
		h, algo, err := parseHash(r.Hash)
		if err != nil {
			return nil, fmt.Errorf("user %q: %w", r.Username, err)
		}
		users[r.Username] = &entry{record: r, algo: algo, h: h}
	}
	return users, nil
}

// ValidUsername returns nil if name is 1 to 64 ASCII letters, digits and the
// characters . _ @ -, else an error wrapping ErrInvalidUsername. A username
// becomes the user ID of its sessions, so it must also pass
// sessionbridge.CheckUserID; the narrower rules here imply it, and checking
// both keeps that true if either changes.
func ValidUsername(name string) error {
	if name == "" || len(name) > MaxUsernameLen {
		return fmt.Errorf("%w: must be 1 to %d characters", ErrInvalidUsername, MaxUsernameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '@' || c == '-') {
			return fmt.Errorf("%w: only letters, digits and . _ @ - are allowed", ErrInvalidUsername)
		}
	}
	if err := sessionbridge.CheckUserID(name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidUsername, err)
	}
	return nil
}

// Add adds a user with every scope ("*") and the hash of password under algo
// ("" means Argon2id). It changes the File in memory only; call Save to
// persist. It returns an error wrapping ErrExists, ErrInvalidUsername or
// ErrInvalidPassword when the input is refused.
func (f *File) Add(username, password string, algo Algorithm) error {
	return f.AddWithScopes(username, password, algo, []string{"*"})
}

// AddWithScopes is Add with the user's scopes given: the scope patterns
// their sessions hold (see sessionbridge.CompileScopes); an empty list means
// the server's default. Patterns that do not compile are an error wrapping
// scope.ErrInvalid.
func (f *File) AddWithScopes(username, password string, algo Algorithm, scopes []string) error {
	if err := ValidUsername(username); err != nil {
		return err
	}
	if _, err := sessionbridge.CompileScopes(scopes); err != nil {
		return fmt.Errorf("users: %w", err)
	}
	if password == "" || len(password) > MaxPasswordLen {
		return fmt.Errorf("%w: must be 1 to %d bytes", ErrInvalidPassword, MaxPasswordLen)
	}
	algo, err := ParseAlgorithm(string(algo))
	if err != nil {
		return err
	}
	if f.exists(username) {
		// Checked before hashing too, so a duplicate fails fast.
		return fmt.Errorf("%w: %s", ErrExists, username)
	}
	var hash string
	switch algo {
	case Bcrypt:
		if len(password) > maxBcryptPassword {
			return fmt.Errorf("%w: bcrypt uses at most %d bytes; use argon2id", ErrInvalidPassword, maxBcryptPassword)
		}
		b, err := bcrypt.GenerateFromPassword([]byte(password), f.bcryptCost())
		if err != nil {
			return fmt.Errorf("users: hashing password: %w", err)
		}
		hash = string(b)
	default:
		if hash, err = hashArgon2(password, f.argon2Params()); err != nil {
			return err
		}
	}
	h, _, err := parseHash(hash)
	if err != nil {
		return fmt.Errorf("users: hashing password: %w", err)
	}
	e := &entry{
		record: record{Username: username, Hash: hash, Scopes: slices.Clone(scopes), CreatedAt: f.now().UTC().Truncate(time.Second)},
		algo:   algo,
		h:      h,
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.users[username]; ok {
		return fmt.Errorf("%w: %s", ErrExists, username)
	}
	if f.users == nil {
		f.users = make(map[string]*entry)
	}
	f.users[username] = e
	return nil
}

// Exists reports whether a user named username is in the File.
func (f *File) Exists(username string) bool { return f.exists(username) }

func (f *File) exists(username string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, ok := f.users[username]
	return ok
}

// Remove removes a user from the File in memory; call Save to persist. It
// returns an error wrapping ErrNotFound if there is no such user.
func (f *File) Remove(username string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.users[username]; !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, username)
	}
	delete(f.users, username)
	return nil
}

// List returns the users sorted by username, without their hashes.
func (f *File) List() []User {
	f.mu.RLock()
	out := make([]User, 0, len(f.users))
	for _, e := range f.users {
		out = append(out, e.user())
	}
	f.mu.RUnlock()
	slices.SortFunc(out, func(a, b User) int { return strings.Compare(a.Username, b.Username) })
	return out
}

// Len returns the number of users.
func (f *File) Len() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.users)
}

// Save writes the File to its path atomically: to a temporary file in the same
// directory, with mode 0600, synced, then renamed over the old file, so that a
// reader sees either the old or the new contents and never a partial file.
func (f *File) Save() error {
	if f.path == "" {
		return errors.New("users: save: file has no path")
	}
	f.mu.RLock()
	doc := fileJSON{Users: make([]record, 0, len(f.users))}
	for _, e := range f.users {
		r := e.record
		if r.Scopes == nil {
			r.Scopes = []string{}
		}
		doc.Users = append(doc.Users, r)
	}
	f.mu.RUnlock()
	slices.SortFunc(doc.Users, func(a, b record) int { return strings.Compare(a.Username, b.Username) })
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("users: encoding users file: %w", err)
	}
	data = append(data, '\n')
	return writeAtomic(f.path, data)
}

func writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("users: saving users file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// CreateTemp already uses 0600; Chmod makes it independent of that.
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("users: saving users file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("users: saving users file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("users: saving users file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("users: saving users file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("users: saving users file: %w", err)
	}
	// Make the rename itself durable. Not every platform can sync a
	// directory, and the new contents are in place either way.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// Verify reports whether password is the password of username, and returns
// the user if so. The comparison runs in constant time, and an unknown
// username costs one hash computation like a known one, so that timing does
// not tell which usernames exist. Verify never returns an error: a stored hash
// it cannot use simply does not match.
func (f *File) Verify(username, password string) (User, bool) {
	if len(password) > MaxPasswordLen || password == "" {
		// Refused before the lookup, for every username alike, so that this
		// path tells nothing about which usernames exist.
		return User{}, false
	}
	f.mu.RLock()
	e := f.users[username]
	f.mu.RUnlock()
	if e == nil {
		if d := f.dummy(); d != nil {
			d.verify(password)
		}
		return User{}, false
	}
	if !e.h.verify(password) {
		return User{}, false
	}
	return e.user(), true
}

// dummy returns a hash of the algorithm most users have, to verify unknown
// usernames against at the same cost. It matches no password.
func (f *File) dummy() hasher {
	algo := f.commonAlgorithm()
	f.dummyMu.Lock()
	defer f.dummyMu.Unlock()
	if d, ok := f.dummies[algo]; ok {
		return d
	}
	var d hasher
	switch algo {
	case Bcrypt:
		var secret [32]byte
		_, _ = rand.Read(secret[:])
		b, err := bcrypt.GenerateFromPassword([]byte(fmt.Sprintf("%x", secret[:16])), f.bcryptCost())
		if err != nil {
			return nil
		}
		d = bcryptHash{b}
	default:
		// A random salt and key: verifying costs one derivation, and no
		// password derives to a random key.
		p := f.argon2Params()
		if checkArgon2Params(p.Memory, p.Time, p.Threads, p.SaltLen, p.KeyLen) != nil {
			p = DefaultArgon2Params()
		}
		h := &argon2Hash{memory: p.Memory, time: p.Time, threads: p.Threads, salt: make([]byte, p.SaltLen), key: make([]byte, p.KeyLen)}
		_, _ = rand.Read(h.salt)
		_, _ = rand.Read(h.key)
		d = h
	}
	if f.dummies == nil {
		f.dummies = make(map[Algorithm]hasher)
	}
	f.dummies[algo] = d
	return d
}

// commonAlgorithm returns the algorithm of most stored hashes, Argon2id on a
// tie or an empty file.
func (f *File) commonAlgorithm() Algorithm {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n := 0
	for _, e := range f.users {
		if e.algo == Bcrypt {
			n++
		}
	}
	if 2*n > len(f.users) {
		return Bcrypt
	}
	return Argon2id
}

func (f *File) argon2Params() Argon2Params {
	if f.Params == (Argon2Params{}) {
		return DefaultArgon2Params()
	}
	return f.Params
}

func (f *File) bcryptCost() int {
	if f.BcryptCost == 0 {
		return DefaultBcryptCost
	}
	return f.BcryptCost
}

func (f *File) now() time.Time {
	if f.Now == nil {
		return time.Now()
	}
	return f.Now()
}
