package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
)

// NewKeyStoreFunc returns a new, empty key store, isolated from every other
// one it returned, with its cleanup registered on t.
type NewKeyStoreFunc func(t *testing.T) sessionbridge.KeyStore

// RunKeys runs the conformance suite for [sessionbridge.KeyStore]
// implementations, one fresh store per subtest.
func RunKeys(t *testing.T, newStore NewKeyStoreFunc) {
	tests := []struct {
		name string
		run  func(t *testing.T, ks sessionbridge.KeyStore)
	}{
		{"CreateGetRoundTrip", testKeyRoundTrip},
		{"CreateExisting", testKeyExists},
		{"NotFound", testKeyNotFound},
		{"UpdateVersion", testKeyUpdateVersion},
		{"UpdateKeepsOwnerAndSecret", testKeyUpdateOwner},
		{"ConcurrentUpdatesOneWins", testKeyConcurrentUpdates},
		{"DeleteAndUserIndex", testKeyDeleteIndex},
		{"Roll", testKeyRoll},
		{"RollRefusals", testKeyRollRefusals},
		{"MarkUsedThrottled", testKeyMarkUsed},
		{"CopiesInAndOut", testKeyCopies},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ks := newStore(t)
			if ks == nil {
				t.Fatal("storetest: newStore returned a nil KeyStore")
			}
			tc.run(t, ks)
		})
	}
}

// newKey returns a key of userID as the server would create it.
func newKey(t *testing.T, userID string) *sessionbridge.APIKey {
	t.Helper()
	_, id, hash, err := sessionbridge.NewAPIKey(userID)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Millisecond).UTC()
	return &sessionbridge.APIKey{
		ID: id, UserID: userID, Name: "ci", Scopes: []string{"ws:connect", "chat.**", "!chat.admin.*"},
		Limits:     sessionbridge.Limits{FramesPerSecond: 20, DryRun: []string{sessionbridge.RuleFramesPerSecond}},
		Meta:       json.RawMessage(`{"team":"blue","n":[1,2]}`),
		SecretHash: hash, CreatedAt: now, ExpiresAt: now.Add(time.Hour), Version: 1,
	}
}

func mustCreateKey(t *testing.T, ks sessionbridge.KeyStore, k *sessionbridge.APIKey) {
	t.Helper()
	if err := ks.CreateKey(context.Background(), k); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
}

func mustGetKey(t *testing.T, ks sessionbridge.KeyStore, id string) *sessionbridge.APIKey {
	t.Helper()
	k, err := ks.GetKey(context.Background(), id)
	if err != nil {
		t.Fatalf("GetKey(%s): %v", id, err)
	}
	return k
}

func sameKey(t *testing.T, got, want *sessionbridge.APIKey) {
	t.Helper()
	switch {
	case got.ID != want.ID, got.UserID != want.UserID, got.Name != want.Name,
		!slices.Equal(got.Scopes, want.Scopes), got.Limits.FramesPerSecond != want.Limits.FramesPerSecond,
		!slices.Equal(got.Limits.DryRun, want.Limits.DryRun), !sameJSON(got.Meta, want.Meta),
		got.SecretHash != want.SecretHash, !got.CreatedAt.Equal(want.CreatedAt),
		!got.ExpiresAt.Equal(want.ExpiresAt), !got.LastUsedAt.Equal(want.LastUsedAt),
		got.LastIP != want.LastIP, got.Version != want.Version:
		t.Fatalf("key differs:\n got %+v\nwant %+v", got, want)
	}
}

func testKeyRoundTrip(t *testing.T, ks sessionbridge.KeyStore) {
	k := newKey(t, "alice")
	mustCreateKey(t, ks, k)
	sameKey(t, mustGetKey(t, ks, k.ID), k)

	never := newKey(t, "alice")
	never.ExpiresAt, never.Meta, never.Scopes, never.Limits = time.Time{}, nil, nil, sessionbridge.Limits{}
	mustCreateKey(t, ks, never)
	got := mustGetKey(t, ks, never.ID)
	if !got.ExpiresAt.IsZero() || len(got.Scopes) != 0 || len(got.Meta) != 0 || got.Expired(time.Now().Add(1e6*time.Hour)) {
		t.Fatalf("a key without expiry, scopes or meta came back as %+v", got)
	}
}

func testKeyExists(t *testing.T, ks sessionbridge.KeyStore) {
	k := newKey(t, "alice")
	mustCreateKey(t, ks, k)
	twin := newKey(t, "alice")
	twin.ID = k.ID
	if err := ks.CreateKey(context.Background(), twin); !errors.Is(err, sessionbridge.ErrExists) {
		t.Fatalf("CreateKey of a taken ID = %v, want ErrExists", err)
	}
	sameKey(t, mustGetKey(t, ks, k.ID), k)
}

func testKeyNotFound(t *testing.T, ks sessionbridge.KeyStore) {
	ctx := context.Background()
	k := newKey(t, "nobody")
	if _, err := ks.GetKey(ctx, k.ID); !errors.Is(err, sessionbridge.ErrKeyNotFound) {
		t.Errorf("GetKey = %v, want ErrKeyNotFound", err)
	}
	if err := ks.UpdateKey(ctx, k, 1); !errors.Is(err, sessionbridge.ErrKeyNotFound) {
		t.Errorf("UpdateKey = %v, want ErrKeyNotFound", err)
	}
	if _, err := ks.DeleteKey(ctx, k.ID); !errors.Is(err, sessionbridge.ErrKeyNotFound) {
		t.Errorf("DeleteKey = %v, want ErrKeyNotFound", err)
	}
	if _, err := ks.MarkUsed(ctx, k.ID, time.Now(), "127.0.0.1"); !errors.Is(err, sessionbridge.ErrKeyNotFound) {
		t.Errorf("MarkUsed = %v, want ErrKeyNotFound", err)
	}
	if err := ks.RollKey(ctx, k.ID, time.Now(), newKey(t, "nobody")); !errors.Is(err, sessionbridge.ErrKeyNotFound) {
		t.Errorf("RollKey = %v, want ErrKeyNotFound", err)
	}
	if keys, err := ks.ListUserKeys(ctx, "nobody"); err != nil || len(keys) != 0 {
		t.Errorf("ListUserKeys = %v, %v; want none (RollKey of a missing key must not create its successor)", keys, err)
	}
}

func testKeyUpdateVersion(t *testing.T, ks sessionbridge.KeyStore) {
	ctx := context.Background()
	k := newKey(t, "alice")
	mustCreateKey(t, ks, k)
	k.Name, k.Scopes, k.Version = "renamed", []string{"ws:connect"}, 2
	if err := ks.UpdateKey(ctx, k, 1); err != nil {
		t.Fatal(err)
	}
	sameKey(t, mustGetKey(t, ks, k.ID), k)
	stale := k.Clone()
	stale.Name, stale.Version = "stale", 2
	if err := ks.UpdateKey(ctx, stale, 1); !errors.Is(err, sessionbridge.ErrVersionConflict) {
		t.Fatalf("UpdateKey at a stale version = %v, want ErrVersionConflict", err)
	}
	sameKey(t, mustGetKey(t, ks, k.ID), k)
}

func testKeyUpdateOwner(t *testing.T, ks sessionbridge.KeyStore) {
	ctx := context.Background()
	k := newKey(t, "alice")
	mustCreateKey(t, ks, k)
	moved := k.Clone()
	moved.UserID, moved.Version = "mallory", 2
	if err := ks.UpdateKey(ctx, moved, 1); err == nil {
		t.Fatal("an update gave the key to another user")
	}
	other := newKey(t, "alice")
	resecret := k.Clone()
	resecret.SecretHash, resecret.Version = other.SecretHash, 2
	if err := ks.UpdateKey(ctx, resecret, 1); err == nil {
		t.Fatal("an update changed the key's secret")
	}
	sameKey(t, mustGetKey(t, ks, k.ID), k)
	if keys, _ := ks.ListUserKeys(ctx, "mallory"); len(keys) != 0 {
		t.Fatal("the refused update left the key in the other user's index")
	}
}

func testKeyConcurrentUpdates(t *testing.T, ks sessionbridge.KeyStore) {
	ctx := context.Background()
	k := newKey(t, "alice")
	mustCreateKey(t, ks, k)
	const n = 8
	var wg sync.WaitGroup
	wins := make(chan string, n)
	for i := range n {
		wg.Go(func() {
			c := k.Clone()
			c.Name, c.Version = string(rune('a'+i)), 2
			if err := ks.UpdateKey(ctx, c, 1); err == nil {
				wins <- c.Name
			} else if !errors.Is(err, sessionbridge.ErrVersionConflict) {
				t.Errorf("UpdateKey: %v", err)
			}
		})
	}
	wg.Wait()
	close(wins)
	var won []string
	for w := range wins {
		won = append(won, w)
	}
	if len(won) != 1 || mustGetKey(t, ks, k.ID).Name != won[0] {
		t.Fatalf("%d updates at version 1 succeeded (%q), want exactly one", len(won), won)
	}
}

func testKeyDeleteIndex(t *testing.T, ks sessionbridge.KeyStore) {
	ctx := context.Background()
	a1, a2, b := newKey(t, "alice"), newKey(t, "alice"), newKey(t, "bob")
	a2.CreatedAt = a1.CreatedAt.Add(time.Second)
	for _, k := range []*sessionbridge.APIKey{a2, b, a1} {
		mustCreateKey(t, ks, k)
	}
	keys, err := ks.ListUserKeys(ctx, "alice")
	if err != nil || len(keys) != 2 || keys[0].ID != a1.ID || keys[1].ID != a2.ID {
		t.Fatalf("ListUserKeys(alice) = %v, %v; want a1 then a2", keys, err)
	}
	gone, err := ks.DeleteKey(ctx, a1.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameKey(t, gone, a1)
	if _, err := ks.GetKey(ctx, a1.ID); !errors.Is(err, sessionbridge.ErrKeyNotFound) {
		t.Fatalf("GetKey after delete = %v", err)
	}
	if keys, _ := ks.ListUserKeys(ctx, "alice"); len(keys) != 1 || keys[0].ID != a2.ID {
		t.Fatalf("ListUserKeys after delete = %v", keys)
	}
	if keys, _ := ks.ListUserKeys(ctx, "bob"); len(keys) != 1 || keys[0].ID != b.ID {
		t.Fatalf("ListUserKeys(bob) = %v", keys)
	}
}

func testKeyRoll(t *testing.T, ks sessionbridge.KeyStore) {
	ctx := context.Background()
	old := newKey(t, "alice")
	mustCreateKey(t, ks, old)
	next := newKey(t, "alice")
	next.Scopes, next.Limits, next.Meta, next.ExpiresAt = old.Scopes, old.Limits, old.Meta, old.ExpiresAt
	graceEnd := old.CreatedAt.Add(5 * time.Minute)
	if err := ks.RollKey(ctx, old.ID, graceEnd, next); err != nil {
		t.Fatal(err)
	}
	sameKey(t, mustGetKey(t, ks, next.ID), next)
	got := mustGetKey(t, ks, old.ID)
	if !got.ExpiresAt.Equal(graceEnd) || got.Version != old.Version+1 || got.SecretHash != old.SecretHash {
		t.Fatalf("old key after roll: expires %v version %d, want %v and %d", got.ExpiresAt, got.Version, graceEnd, old.Version+1)
	}
	if keys, _ := ks.ListUserKeys(ctx, "alice"); len(keys) != 2 {
		t.Fatalf("the user has %d keys after a roll, want 2", len(keys))
	}
}

func testKeyRollRefusals(t *testing.T, ks sessionbridge.KeyStore) {
	ctx := context.Background()
	old, taken := newKey(t, "alice"), newKey(t, "alice")
	mustCreateKey(t, ks, old)
	mustCreateKey(t, ks, taken)
	next := newKey(t, "alice")
	next.ID = taken.ID
	if err := ks.RollKey(ctx, old.ID, time.Now(), next); !errors.Is(err, sessionbridge.ErrExists) {
		t.Fatalf("RollKey onto a taken ID = %v, want ErrExists", err)
	}
	sameKey(t, mustGetKey(t, ks, old.ID), old)
	sameKey(t, mustGetKey(t, ks, taken.ID), taken)
}

func testKeyMarkUsed(t *testing.T, ks sessionbridge.KeyStore) {
	ctx := context.Background()
	k := newKey(t, "alice")
	mustCreateKey(t, ks, k)
	t0 := k.CreatedAt.Add(time.Second)
	steps := []struct {
		at    time.Time
		ip    string
		wrote bool
	}{
		{t0, "127.0.0.1", true},
		{t0.Add(time.Second), "127.0.0.2", false},
		{t0.Add(sessionbridge.KeyUseInterval - time.Millisecond), "127.0.0.3", false},
		{t0.Add(sessionbridge.KeyUseInterval), "::1", true},
	}
	lastAt, lastIP := time.Time{}, ""
	for i, s := range steps {
		wrote, err := ks.MarkUsed(ctx, k.ID, s.at, s.ip)
		if err != nil || wrote != s.wrote {
			t.Fatalf("step %d: MarkUsed = %v, %v; want %v", i, wrote, err, s.wrote)
		}
		if wrote {
			lastAt, lastIP = s.at, s.ip
		}
		got := mustGetKey(t, ks, k.ID)
		if !got.LastUsedAt.Equal(lastAt) || got.LastIP != lastIP || got.Version != k.Version {
			t.Fatalf("step %d: last used %v from %q version %d, want %v from %q version %d",
				i, got.LastUsedAt, got.LastIP, got.Version, lastAt, lastIP, k.Version)
		}
	}
}

func testKeyCopies(t *testing.T, ks sessionbridge.KeyStore) {
	k := newKey(t, "alice")
	mustCreateKey(t, ks, k)
	want := k.Clone()
	k.Scopes[0], k.Meta[2] = "changed", 'X'
	got := mustGetKey(t, ks, want.ID)
	sameKey(t, got, want)
	got.Scopes[0], got.Limits.DryRun[0] = "changed", "changed"
	sameKey(t, mustGetKey(t, ks, want.ID), want)
}
