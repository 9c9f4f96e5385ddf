package httpapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/audit"
)

// lockedBuffer collects log output written from handler goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestNoSecretsInLogs drives every path that logs or audits with secrets in
// play and checks that none of them reaches the log.
func TestNoSecretsInLogs(t *testing.T) {
	var buf lockedBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixture(t, func(f *fixture) {
		f.sessions.Logger, f.api.Logger = logger, logger
		f.sessions.Audit = audit.New(logger)
		f.api.Audit = f.sessions.Audit
	})
	tok, ps := f.login("alice")
	f.do(req{method: "POST", path: "/auth/login", body: `{"username":"alice","password":"guess-one-secret"}`})
	f.do(req{method: "POST", path: "/auth/login", body: `{"username":"mallory\r\nforged=1","password":"x"}`})
	f.do(req{method: "GET", path: "/auth/session", cookie: ps.ID + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})
	f.do(req{method: "GET", path: "/auth/session", header: map[string]string{"X-Session-Token": tok + "x"}})
	f.do(req{method: "GET", path: "/api/v1/connections", header: map[string]string{"Authorization": "Bearer wrong-admin-guess"}})
	resp := f.do(req{method: "POST", path: "/api/v1/sessions", header: adminHeader(), body: `{"user_id":"carol"}`})
	var cr createResponse
	resp.json(t, &cr)
	f.do(req{method: "POST", path: "/auth/logout", cookie: tok, header: map[string]string{"Origin": "https://evil.example"}})
	f.store.down.Store(true)
	f.do(req{method: "GET", path: "/auth/session", cookie: cr.Token})
	f.store.down.Store(false)
	f.do(req{method: "POST", path: "/auth/logout", cookie: tok})

	out := buf.String()
	for _, secret := range []string{tok, tok[sessionbridge.IDLen+1:], cr.Token, cr.Token[sessionbridge.IDLen+1:], "guess-one-secret", "alice-password", adminToken, "wrong-admin-guess"} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains a secret %.12q…:\n%s", secret, out)
		}
	}
	for _, event := range []string{audit.AuthnLoginSuccess, audit.AuthnLoginFail, audit.AuthnFailed, audit.SessionCreated, audit.SessionLogout, audit.AuthzFail} {
		if !strings.Contains(out, `"`+event+`"`) {
			t.Errorf("no %s audit record", event)
		}
	}
	if strings.Contains(out, "\nforged=1") {
		t.Error("a CR/LF in the username reached the log unescaped")
	}
}

// TestUnknownUsernamesPseudonymised: a failed sign-in under a name that is no
// user's (perhaps a password typed into the username field) is audited as a
// keyed hash, stable within the process; an existing user's name stays.
func TestUnknownUsernamesPseudonymised(t *testing.T) {
	var buf lockedBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	f := newFixture(t, func(f *fixture) {
		f.sessions.Audit = audit.New(logger)
		f.api.Audit = f.sessions.Audit
		f.api.LoginLimiter = &FailureLimiter{Max: 2, Window: time.Hour}
	})
	const typo = "Tr0ub4dor&3-in-the-wrong-field"
	login := func(username string) string {
		t.Helper()
		before := len(buf.String())
		f.do(req{method: "POST", path: "/auth/login", body: `{"username":"` + username + `","password":"x"}`})
		userID, found := "", false
		for line := range strings.Lines(buf.String()[before:]) {
			var rec struct {
				Event  string `json:"event"`
				UserID string `json:"user_id"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Event == audit.AuthnLoginFail {
				userID, found = rec.UserID, true
			}
		}
		if !found {
			t.Fatalf("no %s record for a sign-in as %q", audit.AuthnLoginFail, username)
		}
		return userID
	}

	first := login(typo)
	if !regexp.MustCompile(`^unknown:[0-9a-f]{12}$`).MatchString(first) {
		t.Errorf("unknown username audited as %q, want unknown:<12 hex digits>", first)
	}
	if again := login(typo); again != first {
		t.Errorf("the same unknown name audited as %q, then %q", first, again)
	}
	// Rate limited now: still not in the clear.
	if limited := login(typo); limited != first {
		t.Errorf("a refused sign-in of the same name audited as %q, want %q", limited, first)
	}
	if other := login("mallory"); other == first || !strings.HasPrefix(other, "unknown:") {
		t.Errorf("another unknown name audited as %q (first was %q)", other, first)
	}
	if known := login("alice"); known != "alice" {
		t.Errorf("an existing user audited as %q, want alice", known)
	}
	if strings.Contains(buf.String(), typo) || strings.Contains(buf.String(), "Tr0ub4dor") {
		t.Errorf("the unknown name reached the log:\n%s", buf.String())
	}
}
