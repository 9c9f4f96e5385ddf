package memory

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sessionbridge/sessionbridge"
)

// KeyStore is an in-process [sessionbridge.KeyStore]: keys in a map guarded by
// one mutex, with a per-user index. Keys go in and come out as deep copies.
// It never blocks on anything but its own lock, so it ignores the contexts it
// is given. The zero value is an empty, working store.
type KeyStore struct {
	mu    sync.Mutex
	keys  map[string]*sessionbridge.APIKey
	users map[string]map[string]struct{}
}

// NewKeyStore returns an empty key store.
func NewKeyStore() *KeyStore { return &KeyStore{} }

var _ sessionbridge.KeyStore = (*KeyStore)(nil)

func (ks *KeyStore) lazyInit() {
	if ks.keys == nil {
		ks.keys = make(map[string]*sessionbridge.APIKey)
		ks.users = make(map[string]map[string]struct{})
	}
}

// CreateKey stores a copy of k.
func (ks *KeyStore) CreateKey(_ context.Context, k *sessionbridge.APIKey) error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.create(k)
}

func (ks *KeyStore) create(k *sessionbridge.APIKey) error {
	ks.lazyInit()
	if _, ok := ks.keys[k.ID]; ok {
		return fmt.Errorf("memory: api key %s: %w", k.ID, sessionbridge.ErrExists)
	}
	ks.keys[k.ID] = k.Clone()
	if ks.users[k.UserID] == nil {
		ks.users[k.UserID] = make(map[string]struct{})
	}
	ks.users[k.UserID][k.ID] = struct{}{}
	return nil
}

// GetKey returns a copy of the key with id.
func (ks *KeyStore) GetKey(_ context.Context, id string) (*sessionbridge.APIKey, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	k, ok := ks.keys[id]
	if !ok {
		return nil, fmt.Errorf("memory: api key %s: %w", id, sessionbridge.ErrKeyNotFound)
	}
	return k.Clone(), nil
}

// UpdateKey replaces the key if its version is still prevVersion.
func (ks *KeyStore) UpdateKey(_ context.Context, k *sessionbridge.APIKey, prevVersion uint64) error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	old, ok := ks.keys[k.ID]
	switch {
	case !ok:
		return fmt.Errorf("memory: api key %s: %w", k.ID, sessionbridge.ErrKeyNotFound)
	case old.Version != prevVersion:
		return fmt.Errorf("memory: api key %s at version %d, not %d: %w", k.ID, old.Version, prevVersion, sessionbridge.ErrVersionConflict)
	case old.UserID != k.UserID || old.SecretHash != k.SecretHash:
		return fmt.Errorf("memory: api key %s: an update may not change its owner or secret", k.ID)
	}
	ks.keys[k.ID] = k.Clone()
	return nil
}

// DeleteKey removes the key and returns it.
func (ks *KeyStore) DeleteKey(_ context.Context, id string) (*sessionbridge.APIKey, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	k, ok := ks.keys[id]
	if !ok {
		return nil, fmt.Errorf("memory: api key %s: %w", id, sessionbridge.ErrKeyNotFound)
	}
	delete(ks.keys, id)
	delete(ks.users[k.UserID], id)
	if len(ks.users[k.UserID]) == 0 {
		delete(ks.users, k.UserID)
	}
	return k, nil
}

// ListUserKeys returns copies of the user's keys, oldest first.
func (ks *KeyStore) ListUserKeys(_ context.Context, userID string) ([]*sessionbridge.APIKey, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	out := make([]*sessionbridge.APIKey, 0, len(ks.users[userID]))
	for id := range ks.users[userID] {
		out = append(out, ks.keys[id].Clone())
	}
	slices.SortFunc(out, func(a, b *sessionbridge.APIKey) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// RollKey stores next and moves the old key's expiry, in one step.
func (ks *KeyStore) RollKey(_ context.Context, oldID string, oldExpiresAt time.Time, next *sessionbridge.APIKey) error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	old, ok := ks.keys[oldID]
	if !ok {
		return fmt.Errorf("memory: api key %s: %w", oldID, sessionbridge.ErrKeyNotFound)
	}
	if err := ks.create(next); err != nil {
		return err
	}
	old.ExpiresAt = oldExpiresAt
	old.Version++
	return nil
}

// MarkUsed records a use at most once per KeyUseInterval.
func (ks *KeyStore) MarkUsed(_ context.Context, id string, at time.Time, ip string) (bool, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	k, ok := ks.keys[id]
	if !ok {
		return false, fmt.Errorf("memory: api key %s: %w", id, sessionbridge.ErrKeyNotFound)
	}
	if !k.LastUsedAt.IsZero() && at.Sub(k.LastUsedAt) < sessionbridge.KeyUseInterval {
		return false, nil
	}
	k.LastUsedAt, k.LastIP = at, ip
	return true, nil
}
