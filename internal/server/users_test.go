package server

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/sessionbridge/sessionbridge/users"
)

// TestUserSourceExists: the login audit may name the users of the file and
// the demo user, and nobody else.
func TestUserSourceExists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.json")
	f, err := users.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Params = users.Argon2Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 16}
	if err := f.Add("alice", "alice-password", users.Argon2id); err != nil {
		t.Fatal(err)
	}
	if err := f.Save(); err != nil {
		t.Fatal(err)
	}
	u, err := newUserSource(path, demoPassword, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"alice": true, DemoUser: true, "bob": false, "alice-password": false} {
		if got := u.Exists(name); got != want {
			t.Errorf("Exists(%q) = %v, want %v", name, got, want)
		}
	}
	noDemo, err := newUserSource(path, "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if noDemo.Exists(DemoUser) {
		t.Error("the demo user exists without a demo password")
	}
}
