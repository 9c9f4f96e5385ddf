package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/server"
)

const keyTestToken = "admin-token-for-cli-tests"

// keyServer runs a server with the admin API on a loopback port until the
// test ends and returns its URL and the server.
func keyServer(t *testing.T) (string, *server.Server) {
	t.Helper()
	srv, err := server.New(context.Background(), server.Config{
		AdminToken: keyTestToken, UsersFile: filepath.Join(t.TempDir(), "users.json"),
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
		srv.Close()
	})
	return "http://" + ln.Addr().String(), srv
}

var fullKey = regexp.MustCompile(`^` + sessionbridge.APIKeyPattern + `$`)

func TestKeyCommands(t *testing.T) {
	url, srv := keyServer(t)
	conn := []string{"--url", url, "--admin-token", keyTestToken}
	args := func(a ...string) []string { return append(a, conn...) }

	code, out, errOut := cli(t, "", args("key", "create", "--user", "alice", "--name", "deploy bot", "--scope", "ws:connect", "--scope", "chat.*,chat.room.**", "--ttl", "48h", "--limits", `{"max_connections":3}`, "--meta", `{"team":"ops"}`)...)
	if code != 0 {
		t.Fatalf("create: exit %d %s", code, errOut)
	}
	created := strings.TrimSpace(out)
	if !fullKey.MatchString(created) {
		t.Fatalf("create printed %q on stdout, want the key alone", out)
	}
	if !strings.Contains(errOut, "shown this once") || strings.Contains(errOut, created) {
		t.Errorf("create's description %q", errOut)
	}
	k, err := srv.Keys().Verify(context.Background(), created, "")
	if err != nil || k.UserID != "alice" || k.Name != "deploy bot" || strings.Join(k.Scopes, " ") != "ws:connect chat.* chat.room.**" ||
		k.Limits.MaxConnections != 3 || string(k.Meta) != `{"team":"ops"}` || k.ExpiresAt.IsZero() {
		t.Fatalf("the created key is %+v (%v)", k, err)
	}

	code, out, errOut = cli(t, "", args("key", "list", "--user", "alice")...)
	if code != 0 || !strings.Contains(out, k.ID) || !strings.Contains(out, "deploy bot") || !strings.Contains(out, "chat.room.**") ||
		!strings.HasPrefix(out, "ID") || strings.Contains(out, created) {
		t.Fatalf("list: exit %d %q %s", code, out, errOut)
	}

	code, out, errOut = cli(t, "", args("key", "roll", k.ID, "--grace", "10m", "--json")...)
	if code != 0 {
		t.Fatalf("roll: exit %d %s", code, errOut)
	}
	var rolled keyView
	if err := json.Unmarshal([]byte(out), &rolled); err != nil || !fullKey.MatchString(rolled.Key) || rolled.ID == k.ID || rolled.Name != "deploy bot" {
		t.Fatalf("roll --json: %q (%v)", out, err)
	}
	old, err := srv.Keys().Get(context.Background(), k.ID)
	if err != nil || old.ExpiresAt.After(time.Now().Add(10*time.Minute)) {
		t.Fatalf("the old key after a 10m roll: %+v (%v)", old, err)
	}

	code, out, _ = cli(t, "", args("key", "revoke", rolled.ID)...)
	if code != 0 || !strings.Contains(out, "revoked API key "+rolled.ID) {
		t.Fatalf("revoke: exit %d %q", code, out)
	}
	if _, err := srv.Keys().Verify(context.Background(), rolled.Key, ""); err == nil {
		t.Fatal("a revoked key still verifies")
	}
	code, _, errOut = cli(t, "", args("key", "revoke", rolled.ID)...)
	if code != 1 || !strings.Contains(errOut, "not_found") {
		t.Errorf("revoking twice: exit %d %q", code, errOut)
	}

	code, out, _ = cli(t, "", args("key", "list", "--user", "alice", "--json")...)
	var list struct {
		Keys []keyView `json:"keys"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Keys) != 1 || list.Keys[0].ID != k.ID {
		t.Errorf("list --json after the revoke: exit %d %q", code, out)
	}
}

// key revoke --user revokes every key of the user, and no other.
func TestKeyRevokeUser(t *testing.T) {
	url, srv := keyServer(t)
	conn := []string{"--url", url, "--admin-token", keyTestToken}
	var ids []string
	for _, user := range []string{"dave", "dave", "erin"} {
		code, out, errOut := cli(t, "", append([]string{"key", "create", "--user", user, "--name", "n"}, conn...)...)
		if code != 0 {
			t.Fatalf("create: exit %d %s", code, errOut)
		}
		k, err := srv.Keys().Verify(context.Background(), strings.TrimSpace(out), "")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.ID)
	}
	code, out, errOut := cli(t, "", append([]string{"key", "revoke", "--user", "dave"}, conn...)...)
	if code != 0 || !strings.Contains(out, "revoked API key "+ids[0]) || !strings.Contains(out, "revoked API key "+ids[1]) ||
		strings.Contains(out, ids[2]) || !strings.Contains(errOut, "revoked 2 API keys of dave") {
		t.Fatalf("revoke --user: exit %d %q %q", code, out, errOut)
	}
	if left, _ := srv.Keys().List(context.Background(), "dave"); len(left) != 0 {
		t.Errorf("dave has %d keys left", len(left))
	}
	if left, _ := srv.Keys().List(context.Background(), "erin"); len(left) != 1 {
		t.Errorf("erin has %d keys, want her one", len(left))
	}
	if code, _, errOut := cli(t, "", append([]string{"key", "revoke", "--user", "dave", ids[2]}, conn...)...); code != 2 || !strings.Contains(errOut, "Usage") {
		t.Errorf("revoke with both --user and a key ID: exit %d %q", code, errOut)
	}
}

// The URL and the admin token come from the environment too; the flags win.
func TestKeyCommandsEnvironment(t *testing.T) {
	url, _ := keyServer(t)
	t.Setenv("SESSIONBRIDGE_URL", url)
	t.Setenv("SESSIONBRIDGE_ADMIN_TOKEN", keyTestToken)
	code, out, errOut := cli(t, "", "key", "create", "--user", "bob", "--name", "n")
	if code != 0 || !fullKey.MatchString(strings.TrimSpace(out)) {
		t.Fatalf("create from the environment: exit %d %q %s", code, out, errOut)
	}
	code, _, errOut = cli(t, "", "key", "list", "--user", "bob", "--admin-token", "wrong-token")
	if code != 1 || !strings.Contains(errOut, "401") {
		t.Errorf("a wrong --admin-token over a right variable: exit %d %q", code, errOut)
	}
}

func TestKeyCommandErrors(t *testing.T) {
	url, _ := keyServer(t)
	conn := []string{"--url", url, "--admin-token", keyTestToken}
	t.Setenv("SESSIONBRIDGE_ADMIN_TOKEN", "")
	for _, c := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"key"}, 2, "Usage"},
		{[]string{"key", "rename"}, 2, "unknown command"},
		{[]string{"key", "create", "--name", "n", "--user", "a"}, 2, "SESSIONBRIDGE_ADMIN_TOKEN"},
		{append([]string{"key", "create", "--name", "n"}, conn...), 2, "--user and --name"},
		{append([]string{"key", "create", "--user", "a", "--name", "n", "--meta", "{nope"}, conn...), 2, "--meta"},
		{append([]string{"key", "create", "--user", "a", "--name", "n", "--ttl", "-1h"}, conn...), 2, "--ttl"},
		{append([]string{"key", "create", "--user", "a", "--name", "n", "--scope", "a*"}, conn...), 1, "bad_request"},
		{append([]string{"key", "create", "--user", "a", "--name", "n", "--limits", `{"max_connections":-1}`}, conn...), 1, "bad_request"},
		{append([]string{"key", "list"}, conn...), 2, "--user"},
		{append([]string{"key", "roll"}, conn...), 2, "Usage"},
		{append([]string{"key", "roll", "x", "--grace", "-1s"}, conn...), 2, "--grace"},
		{append([]string{"key", "roll", "0123456789abcdef", "--grace", "1000h"}, conn...), 1, "grace_seconds"},
		{append([]string{"key", "revoke", "nonexistent"}, conn...), 1, "not_found"},
		{[]string{"key", "list", "--user", "a", "--admin-token", "t", "--url", "ftp://x"}, 2, "--url"},
		{[]string{"key", "list", "--user", "a", "--admin-token", "t", "--url", "http://127.0.0.1:1"}, 1, "cannot reach"},
	} {
		code, out, errOut := cli(t, "", c.args...)
		if code != c.code || !strings.Contains(errOut, c.err) || out != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d mentioning %q", c.args, code, out, errOut, c.code, c.err)
		}
	}
	if code, out, _ := cli(t, "", "key", "help"); code != 0 || !strings.Contains(out, "key create") {
		t.Errorf("key help: %d %q", code, out)
	}
	// The admin token never shows in what the command prints.
	_, out, errOut := cli(t, "", "key", "list", "--user", "a", "--admin-token", "secret-token-xyz", "--url", url)
	if strings.Contains(out+errOut, "secret-token-xyz") {
		t.Errorf("the admin token was printed: %q %q", out, errOut)
	}
}
