package keys_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/keys"
)

// userSet is a keys.Owners whose users the test removes and adds back.
type userSet struct {
	mu    sync.Mutex
	users map[string]bool
}

func newUserSet(names ...string) *userSet {
	u := &userSet{users: map[string]bool{}}
	for _, n := range names {
		u.users[n] = true
	}
	return u
}

func (u *userSet) Exists(id string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.users[id]
}

func (u *userSet) set(id string, ok bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.users[id] = ok
}

// TestKeyOfDeletedOwnerStops: a key whose owner Owners no longer knows is
// refused by Verify (cached or not), absent from GetKeys, and neither a new
// key nor a successor is issued to such a user; back as a user, the key
// works again.
func TestKeyOfDeletedOwnerStops(t *testing.T) {
	m, _, rc, _ := cachedManager(t)
	owners := newUserSet("alice", "bob")
	m.Owners = owners
	keyA, a, err := m.Create(bg, keys.NewKey{UserID: "alice", Name: "a", Scopes: []string{"ws:connect"}})
	if err != nil {
		t.Fatal(err)
	}
	keyB, b, err := m.Create(bg, keys.NewKey{UserID: "bob", Name: "b", Scopes: []string{"ws:connect"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Create(bg, keys.NewKey{UserID: "mallory", Name: "m"}); !errors.Is(err, keys.ErrUnknownOwner) || !errors.Is(err, keys.ErrInvalid) {
		t.Fatalf("Create for a stranger = %v, want ErrUnknownOwner (an ErrInvalid)", err)
	}
	if _, err := m.Verify(bg, keyA, ""); err != nil {
		t.Fatal(err)
	}
	reads := rc.count()

	owners.set("alice", false)
	if _, err := m.Verify(bg, keyA, ""); !errors.Is(err, sb.ErrInvalidToken) {
		t.Fatalf("Verify of a cached key of a deleted owner = %v, want ErrInvalidToken", err)
	}
	if rc.count() != reads {
		t.Error("the owner check read the store")
	}
	m.Cache.Flush()
	if _, err := m.Verify(bg, keyA, ""); !errors.Is(err, sb.ErrInvalidToken) {
		t.Fatalf("Verify of an uncached key of a deleted owner = %v, want ErrInvalidToken", err)
	}
	if _, err := m.Verify(bg, keyB, ""); err != nil {
		t.Fatalf("the key of an owner still there: %v", err)
	}
	found, err := m.GetKeys(bg, []string{a.ID, b.ID, "2bAAAAAAAAAAAAAA"})
	if err != nil || len(found) != 1 || found[b.ID] == nil {
		t.Fatalf("GetKeys = %v, %v; want bob's key alone", found, err)
	}
	if _, _, err := m.Roll(bg, a.ID, 0); !errors.Is(err, keys.ErrUnknownOwner) {
		t.Fatalf("Roll of a key of a deleted owner = %v, want ErrUnknownOwner", err)
	}
	if list, _ := m.List(bg, "alice"); len(list) != 1 {
		t.Fatalf("a refused roll left %d keys", len(list))
	}

	owners.set("alice", true)
	if _, err := m.Verify(bg, keyA, ""); err != nil {
		t.Fatalf("the key once its owner is back: %v", err)
	}
}

// TestDeleteUser: every key of the user is revoked with one delete event
// each, the keys of others are untouched, and a store failure part way
// returns what was revoked, the rest revoked by a second call.
func TestDeleteUser(t *testing.T) {
	m, _, _, bus := cachedManager(t)
	rec := &recorder{}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = bus.Subscribe(ctx, rec)
	}()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the recorder to subscribe", func() bool { return bus.Subscribers() == 1 })

	var mine []string
	for range 3 {
		_, k, err := m.Create(bg, keys.NewKey{UserID: "alice", Name: "k"})
		if err != nil {
			t.Fatal(err)
		}
		mine = append(mine, k.ID)
	}
	keyB, _, err := m.Create(bg, keys.NewKey{UserID: "bob", Name: "k"})
	if err != nil {
		t.Fatal(err)
	}

	gone, err := m.DeleteUser(bg, "alice")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range gone {
		ids = append(ids, k.ID)
	}
	slices.Sort(ids)
	slices.Sort(mine)
	if !slices.Equal(ids, mine) {
		t.Fatalf("revoked %v, want %v", ids, mine)
	}
	waitFor(t, "three delete events", func() bool { return len(rec.all()) == 3 })
	var evIDs []string
	for _, ev := range rec.all() {
		if ev.Type != sb.EventKeyDeleted || ev.Reason != sb.ReasonRevoked || ev.UserID != "alice" {
			t.Errorf("event %+v, want a revocation of a key of alice", ev)
		}
		evIDs = append(evIDs, ev.KeyID)
	}
	slices.Sort(evIDs)
	if !slices.Equal(evIDs, mine) {
		t.Errorf("events for %v, want one for each of %v", evIDs, mine)
	}
	if left, _ := m.List(bg, "alice"); len(left) != 0 {
		t.Errorf("alice has %d keys left", len(left))
	}
	if _, err := m.Verify(bg, keyB, ""); err != nil {
		t.Errorf("bob's key: %v", err)
	}
	if gone, err := m.DeleteUser(bg, "alice"); err != nil || len(gone) != 0 {
		t.Errorf("a second DeleteUser = %d keys, %v; want none, no error", len(gone), err)
	}

	// A store that fails after the first delete.
	for range 2 {
		if _, _, err := m.Create(bg, keys.NewKey{UserID: "carol", Name: "k"}); err != nil {
			t.Fatal(err)
		}
	}
	fs := &failingDeletes{KeyStore: m.Store, after: 1}
	m2 := &keys.Manager{Store: fs}
	gone, err = m2.DeleteUser(bg, "carol")
	if !errors.Is(err, sb.ErrUnavailable) || len(gone) != 1 {
		t.Fatalf("DeleteUser with a failing store = %d keys, %v; want 1 and ErrUnavailable", len(gone), err)
	}
	fs.after = -1
	if gone, err := m2.DeleteUser(bg, "carol"); err != nil || len(gone) != 1 {
		t.Fatalf("the retry = %d keys, %v; want the one left", len(gone), err)
	}
}

// failingDeletes lets after deletes through, then answers ErrUnavailable;
// a negative after lets every delete through.
type failingDeletes struct {
	sb.KeyStore
	after int
}

func (f *failingDeletes) DeleteKey(ctx context.Context, id string, ev sb.Event) (*sb.APIKey, error) {
	if f.after == 0 {
		return nil, sb.ErrUnavailable
	}
	f.after--
	return f.KeyStore.DeleteKey(ctx, id, ev)
}
