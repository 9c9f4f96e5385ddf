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
// one it returned, with its cleanup registered on t, and the bus it
// publishes its events on.
type NewKeyStoreFunc func(t *testing.T) (sessionbridge.KeyStore, sessionbridge.Bus)

// RunKeys runs the conformance suite for [sessionbridge.KeyStore]
// implementations, one fresh store per subtest.
func RunKeys(t *testing.T, newStore NewKeyStoreFunc) {
	tests := []struct {
		name string
		run  func(t *testing.T, ks sessionbridge.KeyStore)
		bus  func(t *testing.T, ks sessionbridge.KeyStore, bus sessionbridge.Bus)
	}{
		{name: "CreateGetRoundTrip", run: testKeyRoundTrip},
		{name: "CreateExisting", run: testKeyExists},
		{name: "NotFound", run: testKeyNotFound},
		{name: "UpdateVersion", run: testKeyUpdateVersion},
		{name: "UpdateKeepsOwnerAndSecret", run: testKeyUpdateOwner},
		{name: "ConcurrentUpdatesOneWins", run: testKeyConcurrentUpdates},
		{name: "DeleteAndUserIndex", run: testKeyDeleteIndex},
		{name: "Roll", run: testKeyRoll},
		{name: "RollRefusals", run: testKeyRollRefusals},
		{name: "MarkUsedThrottled", run: testKeyMarkUsed},
		{name: "CopiesInAndOut", run: testKeyCopies},
		{name: "GetKeys", run: testGetKeys},
		{name: "UpdatePublishes", bus: testKeyUpdateEvent},
		{name: "DeletePublishes", bus: testKeyDeleteEvent},
		{name: "RollPublishesAndMovesExpiry", bus: testKeyRollEvent},
		{name: "ClaimExpiredKeysExactlyOnce", bus: testKeyClaimOnce},
		{name: "ClaimFollowsExpiryChanges", bus: testKeyClaimFollows},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ks, bus := newStore(t)
			if ks == nil {
				t.Fatal("storetest: newStore returned a nil KeyStore")
			}
			if tc.bus != nil {
				tc.bus(t, ks, bus)
				return
			}
			tc.run(t, ks)
		})
	}
}

// keyEv is the event template a writer passes with a key write.
func keyEv() sessionbridge.Event {
	return sessionbridge.Event{Source: sessionbridge.SourceAPI, NodeID: "node-a", Timestamp: time.Now().UTC()}
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
	if err := ks.UpdateKey(ctx, k, 1, keyEv()); !errors.Is(err, sessionbridge.ErrKeyNotFound) {
		t.Errorf("UpdateKey = %v, want ErrKeyNotFound", err)
	}
	if _, err := ks.DeleteKey(ctx, k.ID, keyEv()); !errors.Is(err, sessionbridge.ErrKeyNotFound) {
		t.Errorf("DeleteKey = %v, want ErrKeyNotFound", err)
	}
	if _, err := ks.MarkUsed(ctx, k.ID, time.Now(), "127.0.0.1"); !errors.Is(err, sessionbridge.ErrKeyNotFound) {
		t.Errorf("MarkUsed = %v, want ErrKeyNotFound", err)
	}
	if err := ks.RollKey(ctx, k.ID, time.Now(), newKey(t, "nobody"), keyEv()); !errors.Is(err, sessionbridge.ErrKeyNotFound) {
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
	if err := ks.UpdateKey(ctx, k, 1, keyEv()); err != nil {
		t.Fatal(err)
	}
	sameKey(t, mustGetKey(t, ks, k.ID), k)
	stale := k.Clone()
	stale.Name, stale.Version = "stale", 2
	if err := ks.UpdateKey(ctx, stale, 1, keyEv()); !errors.Is(err, sessionbridge.ErrVersionConflict) {
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
	if err := ks.UpdateKey(ctx, moved, 1, keyEv()); err == nil {
		t.Fatal("an update gave the key to another user")
	}
	other := newKey(t, "alice")
	resecret := k.Clone()
	resecret.SecretHash, resecret.Version = other.SecretHash, 2
	if err := ks.UpdateKey(ctx, resecret, 1, keyEv()); err == nil {
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
			if err := ks.UpdateKey(ctx, c, 1, keyEv()); err == nil {
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
	gone, err := ks.DeleteKey(ctx, a1.ID, keyEv())
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
	if err := ks.RollKey(ctx, old.ID, graceEnd, next, keyEv()); err != nil {
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
	if err := ks.RollKey(ctx, old.ID, time.Now(), next, keyEv()); !errors.Is(err, sessionbridge.ErrExists) {
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

func testGetKeys(t *testing.T, ks sessionbridge.KeyStore) {
	a, b := newKey(t, "alice"), newKey(t, "bob")
	mustCreateKey(t, ks, a)
	mustCreateKey(t, ks, b)
	missing := newKey(t, "carol")
	got, err := ks.GetKeys(context.Background(), []string{a.ID, missing.ID, b.ID, "not-a-key-id"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[a.ID] == nil || got[b.ID] == nil {
		t.Fatalf("GetKeys = %v; want exactly a and b", got)
	}
	sameKey(t, got[a.ID], a)
	sameKey(t, got[b.ID], b)
	if got, err := ks.GetKeys(context.Background(), nil); err != nil || len(got) != 0 {
		t.Fatalf("GetKeys(nil) = %v, %v", got, err)
	}
}

// keyEvents returns the key events of id seen so far.
func keyEvents(evs []sessionbridge.Event, id string) []sessionbridge.Event {
	var out []sessionbridge.Event
	for _, ev := range evs {
		if ev.KeyID == id {
			out = append(out, ev)
		}
	}
	return out
}

// checkKeyEvent fails unless ev is a well-formed event of typ about k at
// version, from the template keyEv.
func checkKeyEvent(t *testing.T, ev sessionbridge.Event, typ sessionbridge.EventType, k *sessionbridge.APIKey, version uint64) {
	t.Helper()
	if ev.Type != typ || ev.KeyID != k.ID || ev.UserID != k.UserID || ev.Version != version ||
		ev.SessionID != "" || ev.Source != sessionbridge.SourceAPI || ev.NodeID != "node-a" || ev.Timestamp.IsZero() {
		t.Fatalf("event %+v; want %s of key %s of %s at version %d from node-a", ev, typ, k.ID, k.UserID, version)
	}
	if !typ.IsKey() || !typ.Known() {
		t.Fatalf("%s is not a key event type", typ)
	}
}

func testKeyUpdateEvent(t *testing.T, ks sessionbridge.KeyStore, bus sessionbridge.Bus) {
	ctx := context.Background()
	rec := watch(t, bus)
	k := newKey(t, "alice")
	mustCreateKey(t, ks, k)
	k.Scopes, k.Version = []string{}, 2
	ev := keyEv()
	ev.Scopes = []string{}
	if err := ks.UpdateKey(ctx, k, 1, ev); err != nil {
		t.Fatal(err)
	}
	evs := keyEvents(rec.waitUntil(t, "apikey updated event", func(ev sessionbridge.Event) bool {
		return ev.Type == sessionbridge.EventKeyUpdated && ev.KeyID == k.ID
	}), k.ID)
	if len(evs) != 1 {
		t.Fatalf("%d events about the key after create and update, want 1 (creating publishes nothing): %+v", len(evs), evs)
	}
	checkKeyEvent(t, evs[0], sessionbridge.EventKeyUpdated, k, 2)
	if evs[0].Scopes == nil || len(evs[0].Scopes) != 0 {
		t.Fatalf("scopes changed to none came as %#v, want an empty list", evs[0].Scopes)
	}
	// An update that changes no scope carries none.
	k.Name, k.Version = "renamed", 3
	if err := ks.UpdateKey(ctx, k, 2, keyEv()); err != nil {
		t.Fatal(err)
	}
	evs = keyEvents(rec.waitUntil(t, "second updated event", func(ev sessionbridge.Event) bool {
		return ev.KeyID == k.ID && ev.Version == 3
	}), k.ID)
	if evs[1].Scopes != nil || !evs[1].ExpiresAt.IsZero() {
		t.Fatalf("a rename carried scopes %v, expiry %v", evs[1].Scopes, evs[1].ExpiresAt)
	}
	// A refused update publishes nothing.
	if err := ks.UpdateKey(ctx, k, 2, keyEv()); !errors.Is(err, sessionbridge.ErrVersionConflict) {
		t.Fatalf("stale update = %v", err)
	}
	if _, err := ks.DeleteKey(ctx, k.ID, keyEv()); err != nil {
		t.Fatal(err)
	}
	evs = keyEvents(rec.waitUntil(t, "deleted event", func(ev sessionbridge.Event) bool {
		return ev.KeyID == k.ID && ev.Type == sessionbridge.EventKeyDeleted
	}), k.ID)
	if len(evs) != 3 {
		t.Fatalf("events %+v; the refused update published", evs)
	}
}

func testKeyDeleteEvent(t *testing.T, ks sessionbridge.KeyStore, bus sessionbridge.Bus) {
	ctx := context.Background()
	rec := watch(t, bus)
	k := newKey(t, "alice")
	mustCreateKey(t, ks, k)
	ev := keyEv()
	ev.Reason = sessionbridge.ReasonRevoked
	if _, err := ks.DeleteKey(ctx, k.ID, ev); err != nil {
		t.Fatal(err)
	}
	evs := keyEvents(rec.waitUntil(t, "apikey deleted event", func(ev sessionbridge.Event) bool {
		return ev.Type == sessionbridge.EventKeyDeleted && ev.KeyID == k.ID
	}), k.ID)
	if len(evs) != 1 {
		t.Fatalf("events about the key: %+v; want only the deletion", evs)
	}
	// The store fills in the owner and version, which the caller may not know.
	checkKeyEvent(t, evs[0], sessionbridge.EventKeyDeleted, k, k.Version)
	if evs[0].Reason != sessionbridge.ReasonRevoked {
		t.Fatalf("reason %q", evs[0].Reason)
	}
	// A second delete finds nothing and publishes nothing; the suite sees
	// that through the next event being the marker's.
	if _, err := ks.DeleteKey(ctx, k.ID, keyEv()); !errors.Is(err, sessionbridge.ErrKeyNotFound) {
		t.Fatalf("second delete = %v", err)
	}
	marker := newKey(t, "alice")
	mustCreateKey(t, ks, marker)
	if _, err := ks.DeleteKey(ctx, marker.ID, keyEv()); err != nil {
		t.Fatal(err)
	}
	all := rec.waitUntil(t, "marker deleted", func(ev sessionbridge.Event) bool { return ev.KeyID == marker.ID })
	if n := len(keyEvents(all, k.ID)); n != 1 {
		t.Fatalf("%d events about the key after a delete of nothing, want 1", n)
	}
}

func testKeyRollEvent(t *testing.T, ks sessionbridge.KeyStore, bus sessionbridge.Bus) {
	ctx := context.Background()
	rec := watch(t, bus)
	old := newKey(t, "alice")
	mustCreateKey(t, ks, old)
	next := newKey(t, "alice")
	graceEnd := old.CreatedAt.Add(5 * time.Minute)
	if err := ks.RollKey(ctx, old.ID, graceEnd, next, keyEv()); err != nil {
		t.Fatal(err)
	}
	evs := keyEvents(rec.waitUntil(t, "apikey updated event of the old key", func(ev sessionbridge.Event) bool {
		return ev.Type == sessionbridge.EventKeyUpdated && ev.KeyID == old.ID
	}), old.ID)
	checkKeyEvent(t, evs[0], sessionbridge.EventKeyUpdated, old, old.Version+1)
	if !evs[0].ExpiresAt.Equal(graceEnd) || evs[0].Scopes != nil {
		t.Fatalf("roll event expires %v scopes %v; want %v and no scopes", evs[0].ExpiresAt, evs[0].Scopes, graceEnd)
	}
	// The expiry index follows the cut: the old key is claimed at the end of
	// the grace, not at its former expiry; the new one keeps its own.
	got, err := ks.ClaimExpiredKeys(ctx, graceEnd.Add(-time.Millisecond), 0, keyEv())
	if err != nil || len(got) != 0 {
		t.Fatalf("claim before the grace end = %v, %v", got, err)
	}
	got, err = ks.ClaimExpiredKeys(ctx, graceEnd, 0, keyEv())
	if err != nil || len(got) != 1 || got[0].ID != old.ID {
		t.Fatalf("claim at the grace end = %v, %v; want the old key", got, err)
	}
	exp := keyEvents(rec.waitUntil(t, "expired event of the old key", func(ev sessionbridge.Event) bool {
		return ev.Type == sessionbridge.EventKeyExpired && ev.KeyID == old.ID
	}), old.ID)
	checkKeyEvent(t, exp[len(exp)-1], sessionbridge.EventKeyExpired, old, old.Version+1)
	if got, err := ks.ClaimExpiredKeys(ctx, next.ExpiresAt, 0, keyEv()); err != nil || len(got) != 1 || got[0].ID != next.ID {
		t.Fatalf("claim at the new key's expiry = %v, %v", got, err)
	}
}

func testKeyClaimOnce(t *testing.T, ks sessionbridge.KeyStore, bus sessionbridge.Bus) {
	ctx := context.Background()
	rec := watch(t, bus)
	const n = 6
	var ids []string
	var latest time.Time
	for i := range n {
		k := newKey(t, "user-"+string(rune('a'+i)))
		k.ExpiresAt = k.ExpiresAt.Add(time.Duration(i) * time.Second)
		latest = k.ExpiresAt
		mustCreateKey(t, ks, k)
		ids = append(ids, k.ID)
	}
	never := newKey(t, "alice")
	never.ExpiresAt = time.Time{}
	mustCreateKey(t, ks, never)
	gone := newKey(t, "alice")
	mustCreateKey(t, ks, gone)
	if _, err := ks.DeleteKey(ctx, gone.ID, keyEv()); err != nil {
		t.Fatal(err)
	}
	if got, err := ks.ClaimExpiredKeys(ctx, time.Now(), 0, keyEv()); err != nil || len(got) != 0 {
		t.Fatalf("claim before any expiry = %v, %v", got, err)
	}
	// Eight claimers race for every expiry.
	var wg sync.WaitGroup
	claimed := make(chan string, 8*n)
	for range 8 {
		wg.Go(func() {
			got, err := ks.ClaimExpiredKeys(ctx, latest.Add(time.Hour*24*365), 0, keyEv())
			if err != nil {
				t.Errorf("ClaimExpiredKeys: %v", err)
			}
			for _, k := range got {
				claimed <- k.ID
			}
		})
	}
	wg.Wait()
	close(claimed)
	seen := map[string]int{}
	for id := range claimed {
		seen[id]++
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Fatalf("key %s claimed %d times, want once (claims %v)", id, seen[id], seen)
		}
	}
	if len(seen) != n {
		t.Fatalf("claimed %v; a key without expiry or a deleted key was claimed", seen)
	}
	evs := rec.wait(t, "one expired event per key", func(evs []sessionbridge.Event, _ int) bool {
		c := 0
		for _, ev := range evs {
			if ev.Type == sessionbridge.EventKeyExpired {
				c++
			}
		}
		return c >= n
	})
	count := map[string]int{}
	for _, ev := range evs {
		if ev.Type == sessionbridge.EventKeyExpired {
			count[ev.KeyID]++
			if ev.UserID == "" || ev.Version != 1 || ev.Source != sessionbridge.SourceAPI {
				t.Fatalf("expired event %+v lacks the key's owner or version", ev)
			}
		}
	}
	for _, id := range ids {
		if count[id] != 1 {
			t.Fatalf("%d expired events for %s, want 1", count[id], id)
		}
	}
	// Expired keys stay readable, shown as expired.
	if k := mustGetKey(t, ks, ids[0]); !k.Expired(latest) {
		t.Fatalf("claimed key %+v is not expired", k)
	}
	// A limit bounds one call.
	more := newKey(t, "alice")
	more2 := newKey(t, "alice")
	mustCreateKey(t, ks, more)
	mustCreateKey(t, ks, more2)
	if got, err := ks.ClaimExpiredKeys(ctx, more.ExpiresAt.Add(time.Hour), 1, keyEv()); err != nil || len(got) != 1 {
		t.Fatalf("claim with limit 1 = %v, %v", got, err)
	}
	if got, err := ks.ClaimExpiredKeys(ctx, more.ExpiresAt.Add(time.Hour), 0, keyEv()); err != nil || len(got) != 1 {
		t.Fatalf("claim of the rest = %v, %v", got, err)
	}
}

func testKeyClaimFollows(t *testing.T, ks sessionbridge.KeyStore, _ sessionbridge.Bus) {
	ctx := context.Background()
	k := newKey(t, "alice")
	mustCreateKey(t, ks, k)
	first := k.ExpiresAt
	// An update that lifts the expiry takes the key out of the index; one
	// that sets it again puts it back at the new time.
	k.ExpiresAt, k.Version = time.Time{}, 2
	if err := ks.UpdateKey(ctx, k, 1, keyEv()); err != nil {
		t.Fatal(err)
	}
	if got, err := ks.ClaimExpiredKeys(ctx, first.Add(time.Hour), 0, keyEv()); err != nil || len(got) != 0 {
		t.Fatalf("a key without expiry was claimed: %v, %v", got, err)
	}
	k.ExpiresAt, k.Version = first.Add(2*time.Hour), 3
	if err := ks.UpdateKey(ctx, k, 2, keyEv()); err != nil {
		t.Fatal(err)
	}
	if got, err := ks.ClaimExpiredKeys(ctx, first.Add(time.Hour), 0, keyEv()); err != nil || len(got) != 0 {
		t.Fatalf("claimed before its new expiry: %v, %v", got, err)
	}
	if got, err := ks.ClaimExpiredKeys(ctx, k.ExpiresAt, 0, keyEv()); err != nil || len(got) != 1 || got[0].ID != k.ID {
		t.Fatalf("claim at the new expiry = %v, %v", got, err)
	}
}
