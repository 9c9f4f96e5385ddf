package sessionbridge_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	sb "github.com/sessionbridge/sessionbridge"
)

func TestAPIKeyRoundTrip(t *testing.T) {
	re := regexp.MustCompile(sb.APIKeyPattern)
	seen := map[string]bool{}
	for range 200 {
		key, id, hash, err := sb.NewAPIKey("alice")
		if err != nil {
			t.Fatal(err)
		}
		if len(key) != sb.APIKeyLen || !re.MatchString(key) || !sb.IsAPIKey(key) {
			t.Fatalf("key %q: length %d, pattern match %v", key, len(key), re.MatchString(key))
		}
		if !strings.HasPrefix(id, sb.Shard("alice")) || !sb.ValidAPIKeyID(id) {
			t.Fatalf("id %q does not carry the owner's shard %q", id, sb.Shard("alice"))
		}
		gotID, secret, err := sb.ParseAPIKey(key)
		if err != nil || gotID != id {
			t.Fatalf("ParseAPIKey(%q) = %q, %v; want id %q", key, gotID, err, id)
		}
		if !sb.VerifySecret(secret, hash) || strings.Contains(key, "=") {
			t.Fatal("the secret does not verify against the returned hash")
		}
		if seen[key] || seen[id] {
			t.Fatal("a key or id repeated")
		}
		seen[key], seen[id] = true, true
	}
}

func TestAPIKeyPatternFindsKeysInText(t *testing.T) {
	key, _, _, err := sb.NewAPIKey("bob")
	if err != nil {
		t.Fatal(err)
	}
	text := `config: {"token": "` + key + `"} and export SB_KEY=` + key + "\n"
	if n := len(regexp.MustCompile(sb.APIKeyPattern).FindAllString(text, -1)); n != 2 {
		t.Fatalf("found %d keys in text, want 2", n)
	}
	if regexp.MustCompile(sb.APIKeyPattern).MatchString(key + "x") {
		t.Fatal("the pattern matched a key with a trailing character")
	}
}

func TestParseAPIKeyRefusesMistypedKeys(t *testing.T) {
	key, _, _, err := sb.NewAPIKey("carol")
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) string {
		b := []byte(key)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	bad := []string{
		"", "sbk_", key[:len(key)-1], key + "0", strings.ToUpper(key[:4]) + key[4:],
		strings.Replace(key, "_", "-", 2), "xbk_" + key[4:],
	}
	// Every single-character change, anywhere after the prefix, is caught.
	for i := 4; i < len(key); i++ {
		bad = append(bad, flip(i))
	}
	for _, k := range bad {
		if _, _, err := sb.ParseAPIKey(k); !errors.Is(err, sb.ErrInvalidToken) {
			t.Errorf("ParseAPIKey(%q) = %v, want ErrInvalidToken", k, err)
		}
	}
	if sb.ValidAPIKeyID("zz" + strings.Repeat("a", 14)) {
		t.Error("an ID whose shard is not hex was accepted")
	}
}

func FuzzParseAPIKey(f *testing.F) {
	key, _, _, _ := sb.NewAPIKey("fuzz")
	f.Add(key)
	f.Add("sbk_00aaaaaaaaaaaaaa_" + strings.Repeat("a", 49))
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, err := sb.ParseAPIKey(s)
		if err != nil {
			return
		}
		if !sb.ValidAPIKeyID(id) || len(secret) != 43 || len(s) != sb.APIKeyLen {
			t.Fatalf("accepted %q as id %q secret %q", s, id, secret)
		}
	})
}

func BenchmarkParseAPIKey(b *testing.B) {
	key, _, _, _ := sb.NewAPIKey("bench")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := sb.ParseAPIKey(key); err != nil {
			b.Fatal(err)
		}
	}
}
