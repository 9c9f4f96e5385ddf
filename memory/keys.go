package memory

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sessionbridge/sessionbridge"
)

// KeyStore is an in-process [sessionbridge.KeyStore]: keys in a map guarded by
// one mutex, with a per-user index and an expiry index. Keys go in and come
// out as deep copies.
//
// Every write publishes its event on the store's bus while it still holds
// the lock, so a write and its event are one step and the events of a key
// are published in the order of its writes.
//
// It never blocks on anything but its own lock, so it ignores the contexts it
// is given. The zero value is an empty, working store that publishes
// nothing.
type KeyStore struct {
	bus *Bus

	mu    sync.Mutex
	keys  map[string]*sessionbridge.APIKey
	users map[string]map[string]struct{}
	// expiring holds the IDs of keys with an expiry not yet claimed, with
	// that expiry.
	expiring map[string]time.Time
}

// NewKeyStore returns an empty key store that publishes the event of every
// write on bus; a nil bus means events are not published.
func NewKeyStore(bus *Bus) *KeyStore { return &KeyStore{bus: bus} }

var _ sessionbridge.KeyStore = (*KeyStore)(nil)

func (ks *KeyStore) lazyInit() {
	if ks.keys == nil {
		ks.keys = make(map[string]*sessionbridge.APIKey)
		ks.users = make(map[string]map[string]struct{})
		ks.expiring = make(map[string]time.Time)
	}
}

// publish must be called with ks.mu held, right after the write it reports.
// The in-process bus fails only for an event without a valid type; the write
// stands and the error is returned.
func (ks *KeyStore) publish(ctx context.Context, typ sessionbridge.EventType, k *sessionbridge.APIKey, ev sessionbridge.Event) error {
	if ks.bus == nil {
		return nil
	}
	ev.Type, ev.KeyID, ev.UserID, ev.Version, ev.SessionID = typ, k.ID, k.UserID, k.Version, ""
	if err := ks.bus.Publish(ctx, ev); err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	return nil
}

// index puts k in the expiry index at its expiry, or out of it for none.
func (ks *KeyStore) index(k *sessionbridge.APIKey) {
	if k.ExpiresAt.IsZero() {
		delete(ks.expiring, k.ID)
	} else {
		ks.expiring[k.ID] = k.ExpiresAt
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
	ks.index(k)
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

// GetKeys returns copies of the keys that exist among ids.
func (ks *KeyStore) GetKeys(_ context.Context, ids []string) (map[string]*sessionbridge.APIKey, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	out := make(map[string]*sessionbridge.APIKey, len(ids))
	for _, id := range ids {
		if k, ok := ks.keys[id]; ok {
			out[id] = k.Clone()
		}
	}
	return out, nil
}

// UpdateKey replaces the key if its version is still prevVersion and
// publishes ev.
func (ks *KeyStore) UpdateKey(ctx context.Context, k *sessionbridge.APIKey, prevVersion uint64, ev sessionbridge.Event) error {
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
	next := k.Clone()
	// Use is recorded by MarkUsed alone: an update made from an older read
	// must not roll it back.
	next.LastUsedAt, next.LastIP = old.LastUsedAt, old.LastIP
	ks.keys[k.ID] = next
	ks.index(next)
	return ks.publish(ctx, sessionbridge.EventKeyUpdated, next, ev)
}

// DeleteKey removes the key, publishes ev and returns the key.
func (ks *KeyStore) DeleteKey(ctx context.Context, id string, ev sessionbridge.Event) (*sessionbridge.APIKey, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	k, ok := ks.keys[id]
	if !ok {
		return nil, fmt.Errorf("memory: api key %s: %w", id, sessionbridge.ErrKeyNotFound)
	}
	delete(ks.keys, id)
	delete(ks.expiring, id)
	delete(ks.users[k.UserID], id)
	if len(ks.users[k.UserID]) == 0 {
		delete(ks.users, k.UserID)
	}
	return k, ks.publish(ctx, sessionbridge.EventKeyDeleted, k, ev)
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

// RollKey stores next and moves the old key's expiry, in one step, and
// publishes ev for the old key.
func (ks *KeyStore) RollKey(ctx context.Context, oldID string, oldExpiresAt time.Time, next *sessionbridge.APIKey, ev sessionbridge.Event) error {
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
	ks.index(old)
	ev.ExpiresAt = oldExpiresAt
	return ks.publish(ctx, sessionbridge.EventKeyUpdated, old, ev)
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

// ClaimExpiredKeys claims the keys whose expiry is at or before now, earliest
// first, and publishes an expired event for each.
func (ks *KeyStore) ClaimExpiredKeys(ctx context.Context, now time.Time, limit int, tmpl sessionbridge.Event) ([]*sessionbridge.APIKey, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	var due []*sessionbridge.APIKey
	for id, at := range ks.expiring {
		if !at.After(now) {
			due = append(due, ks.keys[id])
		}
	}
	slices.SortFunc(due, func(a, b *sessionbridge.APIKey) int {
		return cmp.Or(a.ExpiresAt.Compare(b.ExpiresAt), cmp.Compare(a.ID, b.ID))
	})
	if limit > 0 && len(due) > limit {
		due = due[:limit]
	}
	out := make([]*sessionbridge.APIKey, 0, len(due))
	var errs []error
	for _, k := range due {
		delete(ks.expiring, k.ID)
		ev := tmpl
		ev.Scopes, ev.ExpiresAt = nil, time.Time{}
		if err := ks.publish(ctx, sessionbridge.EventKeyExpired, k, ev); err != nil {
			errs = append(errs, err)
		}
		out = append(out, k.Clone())
	}
	return out, errors.Join(errs...)
}
