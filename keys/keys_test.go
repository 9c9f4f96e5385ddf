package keys_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/testclock"
	"github.com/sessionbridge/sessionbridge/keys"
	"github.com/sessionbridge/sessionbridge/memory"
)

var bg = context.Background()

func newManager() (*keys.Manager, *testclock.Clock, *memory.KeyStore) {
	c := testclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	st := memory.NewKeyStore(nil)
	return &keys.Manager{Store: st, Now: c.Now}, c, st
}

func TestCreateVerify(t *testing.T) {
	m, c, _ := newManager()
	key, k, err := m.Create(bg, keys.NewKey{
		UserID: "alice", Name: "ci", Scopes: []string{"ws:connect", "chat.**"},
		Limits: sb.Limits{FramesPerSecond: 5}, Meta: json.RawMessage(`{ "team" : "blue" }`), TTL: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(key, k.ID) || !k.ExpiresAt.Equal(c.Now().Add(time.Hour)) || string(k.Meta) != `{"team":"blue"}` {
		t.Fatalf("created %+v for key %q", k, key)
	}
	got, err := m.Verify(bg, key, "192.0.2.1")
	if err != nil || got.ID != k.ID || got.UserID != "alice" || !slices.Equal(got.Scopes, k.Scopes) {
		t.Fatalf("Verify = %+v, %v", got, err)
	}
	if !got.LastUsedAt.Equal(c.Now()) || got.LastIP != "192.0.2.1" {
		t.Fatalf("first use not recorded: %v from %q", got.LastUsedAt, got.LastIP)
	}
	c.Advance(time.Hour)
	if _, err := m.Verify(bg, key, "192.0.2.1"); !errors.Is(err, sb.ErrInvalidToken) {
		t.Fatalf("Verify at expiry = %v, want ErrInvalidToken", err)
	}
}

func TestVerifyRefusesWithoutSayingWhy(t *testing.T) {
	m, _, _ := newManager()
	key, _, err := m.Create(bg, keys.NewKey{UserID: "alice", Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	other, _, _, _ := sb.NewAPIKey("alice") // well formed, never stored
	id, _, _ := sb.ParseAPIKey(key)
	_, otherSecret, _ := sb.ParseAPIKey(other)
	forged := forge(id, otherSecret) // the stored ID with another secret
	if _, _, err := sb.ParseAPIKey(forged); err != nil {
		t.Fatalf("the forged key is not well formed: %v", err)
	}
	for _, k := range []string{"", "sbk_", key[:len(key)-1] + string(key[len(key)-1]^1), other, forged} {
		if _, err := m.Verify(bg, k, "192.0.2.9"); !errors.Is(err, sb.ErrInvalidToken) {
			t.Errorf("Verify(%q) = %v, want ErrInvalidToken", k, err)
		}
	}
}

// forge returns a well-formed key with the given id and secret: the check
// is public, so anyone can make one; only the secret proves the key.
func forge(id, secret string) string {
	const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	body := "sbk_" + id + "_" + secret
	n := uint64(crc32.ChecksumIEEE([]byte(body)))
	b := make([]byte, 6)
	for i := 5; i >= 0; i-- {
		b[i] = base62[n%62]
		n /= 62
	}
	return body + string(b)
}

func TestCreateRefusesBadInput(t *testing.T) {
	m, _, st := newManager()
	bad := []keys.NewKey{
		{UserID: "", Name: "k"},
		{UserID: "a\x00b", Name: "k"},
		{UserID: "\xffroot", Name: "k"},
		{UserID: strings.Repeat("u", 257), Name: "k"},
		{UserID: "alice", Name: ""},
		{UserID: "alice", Name: strings.Repeat("n", keys.MaxNameLen+1)},
		{UserID: "alice", Name: "line\nbreak"},
		{UserID: "alice", Name: "k", Scopes: []string{"chat.*x"}},
		{UserID: "alice", Name: "k", Scopes: []string{"**.chat"}},
		{UserID: "alice", Name: "k", Limits: sb.Limits{MaxConnections: -1}},
		{UserID: "alice", Name: "k", Limits: sb.Limits{DryRun: []string{"nope"}}},
		{UserID: "alice", Name: "k", Meta: json.RawMessage(`[1]`)},
		{UserID: "alice", Name: "k", Meta: json.RawMessage(`{"a":1}x`)},
		{UserID: "alice", Name: "k", Meta: json.RawMessage(`{"a":"` + strings.Repeat("x", keys.MaxMetaSize) + `"}`)},
		{UserID: "alice", Name: "k", TTL: -time.Second},
	}
	for _, nk := range bad {
		if _, _, err := m.Create(bg, nk); !errors.Is(err, keys.ErrInvalid) {
			t.Errorf("Create(%+v) = %v, want ErrInvalid", nk, err)
		}
	}
	if ks, _ := st.ListUserKeys(bg, "alice"); len(ks) != 0 {
		t.Fatalf("refused creations stored %d keys", len(ks))
	}
}

func TestMaxTTL(t *testing.T) {
	m, c, _ := newManager()
	m.MaxTTL = 24 * time.Hour
	for _, ttl := range []time.Duration{0, 48 * time.Hour} {
		_, k, err := m.Create(bg, keys.NewKey{UserID: "alice", Name: "k", TTL: ttl})
		if err != nil || !k.ExpiresAt.Equal(c.Now().Add(24*time.Hour)) {
			t.Fatalf("TTL %s: expires %v, %v; want capped at 24h", ttl, k.ExpiresAt, err)
		}
	}
	m.MaxTTL = 0
	if _, k, err := m.Create(bg, keys.NewKey{UserID: "alice", Name: "k"}); err != nil || !k.ExpiresAt.IsZero() {
		t.Fatalf("no TTL and no cap: expires %v, %v; want never", k.ExpiresAt, err)
	}
}

func TestUpdate(t *testing.T) {
	m, _, _ := newManager()
	_, k, err := m.Create(bg, keys.NewKey{UserID: "alice", Name: "k", Scopes: []string{"a.*"}, Meta: json.RawMessage(`{"x":1,"y":2}`)})
	if err != nil {
		t.Fatal(err)
	}
	name, scopes := "renamed", []string{"b.**", "!b.admin"}
	got, err := m.Update(bg, k.ID, keys.Change{Name: &name, Scopes: &scopes, Meta: json.RawMessage(`{"y":null,"z":3}`)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != name || !slices.Equal(got.Scopes, scopes) || got.Version != 2 || string(got.Meta) != `{"x":1,"z":3}` {
		t.Fatalf("Update = %+v meta %s", got, got.Meta)
	}
	if _, err := m.Update(bg, k.ID, keys.Change{Name: &name}, 1); !errors.Is(err, sb.ErrVersionConflict) {
		t.Fatalf("Update at a stale version = %v, want ErrVersionConflict", err)
	}
	bad := []string{"a*"}
	if _, err := m.Update(bg, k.ID, keys.Change{Scopes: &bad}, 0); !errors.Is(err, keys.ErrInvalid) {
		t.Fatalf("Update with a bad scope = %v, want ErrInvalid", err)
	}
	if _, err := m.Update(bg, k.ID, keys.Change{Meta: json.RawMessage(`"x"`)}, 0); !errors.Is(err, keys.ErrInvalid) {
		t.Fatalf("Update with a non-object meta patch = %v, want ErrInvalid", err)
	}
	if now, _ := m.Get(bg, k.ID); now.Version != 2 || now.Name != name {
		t.Fatalf("refused updates changed the key: %+v", now)
	}
}

func TestRoll(t *testing.T) {
	m, c, _ := newManager()
	oldKey, old, err := m.Create(bg, keys.NewKey{UserID: "alice", Name: "k", Scopes: []string{"ws:connect"},
		Limits: sb.Limits{FramesPerSecond: 3}, Meta: json.RawMessage(`{"a":1}`), TTL: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	newKey, next, err := m.Roll(bg, old.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if next.ID == old.ID || newKey == oldKey || next.Name != old.Name || !slices.Equal(next.Scopes, old.Scopes) ||
		next.Limits.FramesPerSecond != 3 || string(next.Meta) != `{"a":1}` || !next.ExpiresAt.Equal(old.ExpiresAt) {
		t.Fatalf("the rolled key did not inherit: %+v from %+v", next, old)
	}
	if k, _ := m.Get(bg, old.ID); !k.ExpiresAt.Equal(c.Now().Add(time.Minute)) {
		t.Fatalf("old key expires %v, want now + grace", k.ExpiresAt)
	}
	for _, k := range []string{oldKey, newKey} {
		if _, err := m.Verify(bg, k, "192.0.2.1"); err != nil {
			t.Fatalf("within the grace, Verify = %v", err)
		}
	}
	c.Advance(time.Minute)
	if _, err := m.Verify(bg, oldKey, "192.0.2.1"); !errors.Is(err, sb.ErrInvalidToken) {
		t.Fatalf("after the grace, the old key verifies: %v", err)
	}
	if _, err := m.Verify(bg, newKey, "192.0.2.1"); err != nil {
		t.Fatalf("after the grace, the new key: %v", err)
	}
	// A grace past the key's own expiry does not lengthen its life.
	_, again, err := m.Roll(bg, next.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := m.Get(bg, next.ID); !k.ExpiresAt.Equal(old.ExpiresAt) || !again.ExpiresAt.Equal(old.ExpiresAt) {
		t.Fatalf("a long grace lengthened the key: %v, successor %v, want %v", k.ExpiresAt, again.ExpiresAt, old.ExpiresAt)
	}
	for _, g := range []time.Duration{-time.Second, keys.MaxRollGrace + time.Second} {
		if _, _, err := m.Roll(bg, next.ID, g); !errors.Is(err, keys.ErrInvalid) {
			t.Fatalf("Roll with grace %s = %v, want ErrInvalid", g, err)
		}
	}
}

func TestVerifyRecordsUseOnceAMinute(t *testing.T) {
	m, c, st := newManager()
	key, k, err := m.Create(bg, keys.NewKey{UserID: "alice", Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	counting := &countingStore{KeyStore: st}
	m.Store = counting
	for i := range 30 {
		if _, err := m.Verify(bg, key, fmt.Sprintf("192.0.2.%d", i)); err != nil {
			t.Fatal(err)
		}
		c.Advance(time.Second)
	}
	if n := counting.marks(); n != 1 {
		t.Fatalf("30 uses within a minute tried %d writes, want 1", n)
	}
	c.Advance(time.Minute)
	if _, err := m.Verify(bg, key, "198.51.100.7"); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Get(bg, k.ID); got.LastIP != "198.51.100.7" || counting.marks() != 2 {
		t.Fatalf("a use a minute later: last ip %q after %d writes", got.LastIP, counting.marks())
	}
}

func TestVerifyFailsClosedWhenTheStoreIsAway(t *testing.T) {
	m, _, st := newManager()
	key, _, err := m.Create(bg, keys.NewKey{UserID: "alice", Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	m.Store = &countingStore{KeyStore: st, down: true}
	if _, err := m.Verify(bg, key, "192.0.2.1"); !errors.Is(err, sb.ErrUnavailable) || errors.Is(err, sb.ErrInvalidToken) {
		t.Fatalf("Verify with the store away = %v, want ErrUnavailable", err)
	}
}

type countingStore struct {
	sb.KeyStore
	down bool
	mu   sync.Mutex
	n    int
}

func (s *countingStore) GetKey(ctx context.Context, id string) (*sb.APIKey, error) {
	if s.down {
		return nil, fmt.Errorf("test: %w", sb.ErrUnavailable)
	}
	return s.KeyStore.GetKey(ctx, id)
}

func (s *countingStore) MarkUsed(ctx context.Context, id string, at time.Time, ip string) (bool, error) {
	s.mu.Lock()
	s.n++
	s.mu.Unlock()
	return s.KeyStore.MarkUsed(ctx, id, at, ip)
}

func (s *countingStore) marks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}
