package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/sessionbridge/sessionbridge/users"
)

// DemoUser is the name of the in-memory user that Config.DemoPassword adds.
const DemoUser = "demo"

// reloadCheck is the least time between two looks at the users file.
const reloadCheck = time.Second

// userSource checks passwords against the users file, re-reading it when it
// changed (so that `sessionbridge user add` takes effect on a running
// server), and against the optional in-memory demo user.
type userSource struct {
	path   string
	file   *users.File
	logger *slog.Logger
	// checkEvery is the least time between two looks at the file.
	checkEvery time.Duration
	// demoHash is the SHA-256 of the demo password; the password is random
	// and long, so a fast hash is enough to compare it in constant time.
	demoHash *[32]byte

	mu        sync.Mutex
	checkedAt time.Time
	modTime   time.Time
	size      int64
	present   bool // the file existed at the last look
}

func newUserSource(path, demoPassword string, logger *slog.Logger) (*userSource, error) {
	f, err := users.Load(path)
	if err != nil {
		return nil, err
	}
	u := &userSource{path: path, file: f, logger: logger, checkEvery: reloadCheck, checkedAt: time.Now()}
	if fi, err := os.Stat(path); err == nil {
		u.modTime, u.size, u.present = fi.ModTime(), fi.Size(), true
	}
	if demoPassword != "" {
		h := sha256.Sum256([]byte(demoPassword))
		u.demoHash = &h
	}
	return u, nil
}

// Len returns the number of users in the file, plus the demo user.
func (u *userSource) Len() int {
	n := u.file.Len()
	if u.demoHash != nil {
		n++
	}
	return n
}

// Verify implements httpapi.UserVerifier.
func (u *userSource) Verify(username, password string) (users.User, bool) {
	if u.demoHash != nil && username == DemoUser {
		h := sha256.Sum256([]byte(password))
		if subtle.ConstantTimeCompare(h[:], u.demoHash[:]) == 1 {
			return users.User{Username: DemoUser}, true
		}
	}
	u.maybeReload()
	return u.file.Verify(username, password)
}

// Exists implements httpapi.UserLister. It picks up a changed users file
// (looking at most once per checkEvery), so that a removed user stops
// existing without a restart.
func (u *userSource) Exists(username string) bool {
	if u.demoHash != nil && username == DemoUser {
		return true
	}
	u.maybeReload()
	return u.file.Exists(username)
}

// filePresent reports whether the users file existed at the last look.
func (u *userSource) filePresent() bool {
	u.maybeReload()
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.present
}

// maybeReload re-reads the users file when its size or modification time
// changed, looking at most once per reloadCheck.
func (u *userSource) maybeReload() {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := time.Now()
	if now.Sub(u.checkedAt) < u.checkEvery {
		return
	}
	u.checkedAt = now
	var mod time.Time
	var size int64
	fi, err := os.Stat(u.path)
	if err == nil {
		mod, size = fi.ModTime(), fi.Size()
	}
	u.present = err == nil
	if mod.Equal(u.modTime) && size == u.size {
		return
	}
	if err := u.file.Reload(); err != nil {
		u.logger.Warn("reloading the users file failed; keeping the users already loaded", "path", u.path, "err", err)
		return
	}
	u.modTime, u.size = mod, size
	u.logger.Info("users file reloaded", "path", u.path, "users", u.file.Len())
}

// Key owner policies (Config.KeyOwners): who must exist for an API key to
// work.
const (
	// KeyOwnersAuto checks owners against the users file while it exists,
	// and not at all while there is none (users live in the application).
	KeyOwnersAuto = "auto"
	// KeyOwnersUsers always checks owners against the users file (and the
	// demo user): a missing file means no key works but the demo user's.
	KeyOwnersUsers = "users"
	// KeyOwnersAny never checks: the application revokes the keys of a user
	// it deletes (DELETE /api/v1/users/{user_id}/keys).
	KeyOwnersAny = "any"
)

// keyOwners is the keys.Owners of the server: what "the owner of a key was
// deleted" means under each policy.
type keyOwners struct {
	users  *userSource
	always bool // KeyOwnersUsers; otherwise KeyOwnersAuto
}

// Exists implements keys.Owners.
func (o keyOwners) Exists(userID string) bool {
	if !o.always && !o.users.filePresent() {
		return true
	}
	return o.users.Exists(userID)
}
