package sessionbridge_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/sessionbridge/sessionbridge"
)

func issue(t testing.TB, userID string) (id, secret string) {
	t.Helper()
	id, err := sessionbridge.NewSessionID(userID)
	if err != nil {
		t.Fatal(err)
	}
	secret, hash, err := sessionbridge.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if hash != sessionbridge.HashSecret(secret) {
		t.Fatal("NewSecret's hash is not HashSecret(secret)")
	}
	return id, secret
}

func TestParseTokenAcceptsIssuedTokens(t *testing.T) {
	for i := range 200 {
		user := strings.Repeat("u", i%7) + "user"
		id, secret := issue(t, user)
		token := sessionbridge.FormatToken(id, secret)
		if len(token) != sessionbridge.TokenLen || len(id) != sessionbridge.IDLen {
			t.Fatalf("token %d / id %d characters, want %d / %d", len(token), len(id), sessionbridge.TokenLen, sessionbridge.IDLen)
		}
		gotID, gotSecret, err := sessionbridge.ParseToken(token)
		if err != nil || gotID != id || gotSecret != secret {
			t.Fatalf("ParseToken(issued) = %q, %q, %v", gotID, gotSecret, err)
		}
		if !sessionbridge.ValidID(id) {
			t.Fatalf("ValidID(%q) = false for an issued ID", id)
		}
		if got := sessionbridge.ShardOfID(id); got != sessionbridge.Shard(user) {
			t.Fatalf("ShardOfID = %q, want the user's shard %q", got, sessionbridge.Shard(user))
		}
	}
}

func TestShard(t *testing.T) {
	// sha256("alice") starts with 0x2b.
	if got := sessionbridge.Shard("alice"); got != "2b" {
		t.Fatalf("Shard(alice) = %q, want 2b", got)
	}
	if sessionbridge.Shard("alice") != sessionbridge.Shard("alice") {
		t.Fatal("Shard is not deterministic")
	}
	if got := sessionbridge.ShardOfID("a"); got != "" {
		t.Fatalf("ShardOfID of a short string = %q, want empty", got)
	}
}

func TestParseTokenRejects(t *testing.T) {
	id, secret := issue(t, "alice")
	good := sessionbridge.FormatToken(id, secret)
	// The last character of a 32-byte secret carries 2 padding bits; only a
	// character with them zero is canonical. Make a non-canonical twin that
	// decodes to the same bytes.
	last := secret[len(secret)-1]
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	pos := strings.IndexByte(alphabet, last)
	nonCanonical := secret[:len(secret)-1] + string(alphabet[pos|1])
	if pos%4 != 0 {
		t.Fatalf("issued secret ends in %q, not a canonical final character", last)
	}

	cases := map[string]string{
		"empty":                 "",
		"missing dot":           id + "x" + secret,
		"no dot at all":         id + secret + "x",
		"dot elsewhere":         id[:5] + "." + id[6:] + "x" + secret,
		"too short":             good[:len(good)-1],
		"too long":              good + "A",
		"padding":               id + "." + secret[:len(secret)-1] + "=",
		"standard base64 plus":  id + "." + "+" + secret[1:],
		"standard base64 slash": id + "." + "/" + secret[1:],
		"space":                 id + "." + " " + secret[1:],
		"uppercase shard":       strings.ToUpper(id[:2]) + id[2:] + "." + secret,
		"non-hex shard":         "zz" + id[2:] + "." + secret,
		"bad id char":           id[:5] + "!" + id[6:] + "." + secret,
		"non-canonical secret":  id + "." + nonCanonical,
		"non-ascii":             id + "." + "é" + secret[2:],
		"NUL":                   id + "." + "\x00" + secret[1:],
	}
	if strings.ToUpper(id[:2]) == id[:2] {
		delete(cases, "uppercase shard") // both shard digits are 0-9
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			if len(tok) == sessionbridge.TokenLen && tok == good {
				t.Fatal("case equals the good token")
			}
			gotID, gotSecret, err := sessionbridge.ParseToken(tok)
			if !errors.Is(err, sessionbridge.ErrInvalidToken) || gotID != "" || gotSecret != "" {
				t.Fatalf("ParseToken(%q) = %q, %q, %v; want ErrInvalidToken and nothing else", tok, gotID, gotSecret, err)
			}
		})
	}
}

func TestValidID(t *testing.T) {
	id, _ := issue(t, "bob")
	for _, bad := range []string{"", id[:len(id)-1], id + "A", "G" + id[1:], id[:4] + "." + id[5:], id[:4] + "=" + id[5:]} {
		if sessionbridge.ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}

func TestVerifySecret(t *testing.T) {
	_, secret := issue(t, "alice")
	other, _ := issue(t, "alice")
	hash := sessionbridge.HashSecret(secret)
	if !sessionbridge.VerifySecret(secret, hash) {
		t.Fatal("VerifySecret rejects the right secret")
	}
	for _, wrong := range []string{"", other, secret[:len(secret)-1], secret + "A", strings.ToUpper(secret)} {
		if wrong == secret {
			continue
		}
		if sessionbridge.VerifySecret(wrong, hash) {
			t.Errorf("VerifySecret(%q) = true for another secret", wrong)
		}
	}
	var zero [32]byte
	if sessionbridge.VerifySecret(secret, zero) || sessionbridge.VerifySecret("", zero) {
		t.Fatal("VerifySecret accepts the zero hash")
	}
}

func TestNewSecretsAreDistinct(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id, secret := issue(t, "u")
		if seen[id] || seen[secret] {
			t.Fatal("NewSessionID or NewSecret repeated a value")
		}
		seen[id], seen[secret] = true, true
	}
}

func FuzzParseToken(f *testing.F) {
	id, secret := issue(f, "alice")
	good := sessionbridge.FormatToken(id, secret)
	f.Add(good)
	f.Add("")
	f.Add(id)
	f.Add(id + ".")
	f.Add(good + "=")
	f.Add(good[:len(good)-1] + "B")
	f.Add(strings.Repeat(".", sessionbridge.TokenLen))
	f.Add(strings.Repeat("a", sessionbridge.TokenLen))
	f.Add("00AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("00AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB")
	f.Add("ffAAAAAAAAAAAAAAAA.__________________________________________w")
	f.Fuzz(func(t *testing.T, token string) {
		id, secret, err := sessionbridge.ParseToken(token)
		if err != nil {
			if !errors.Is(err, sessionbridge.ErrInvalidToken) || id != "" || secret != "" {
				t.Fatalf("ParseToken(%q) = %q, %q, %v", token, id, secret, err)
			}
			return
		}
		if sessionbridge.FormatToken(id, secret) != token {
			t.Fatalf("FormatToken(ParseToken(%q)) = %q", token, sessionbridge.FormatToken(id, secret))
		}
		if !sessionbridge.ValidID(id) || len(token) != sessionbridge.TokenLen {
			t.Fatalf("ParseToken accepted %q with an invalid ID or length", token)
		}
		if !sessionbridge.VerifySecret(secret, sessionbridge.HashSecret(secret)) {
			t.Fatal("VerifySecret rejects a secret with its own hash")
		}
	})
}
