// Package keys manages API keys on top of a [sessionbridge.KeyStore]: it
// issues keys (shown once), checks what a key may hold (scopes, limits,
// meta, expiry), verifies presented keys, and rolls and revokes them.
//
// The HTTP routes, the CLI and the WebSocket gateway all go through a
// [Manager], so the rules of a key are decided in one place.
package keys

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/scope"
)

// Bounds on what a key may hold, so that a key record stays small.
const (
	MaxNameLen  = 128
	MaxMetaSize = 4 << 10
	// MaxRollGrace bounds how long a rolled key keeps working.
	MaxRollGrace = 7 * 24 * time.Hour
)

// ErrInvalid is wrapped by every error about a request that can never
// succeed as sent (bad scope, limit, meta, name, TTL or grace); HTTP maps it
// to 400.
var ErrInvalid = errors.New("keys: invalid request")

// ErrUnknownOwner is returned (wrapping ErrInvalid) when a key would be
// issued, by a create or a roll, to a user that Manager.Owners does not know.
var ErrUnknownOwner = fmt.Errorf("%w: user_id is not a known user", ErrInvalid)

// Owners tells whether the owner of a key is (still) a user. A deployment
// that knows its users (a users file) implements it, so that a key stops
// working when its owner is deleted; one whose users live in the
// application leaves Manager.Owners nil and revokes a deleted user's keys
// itself (Manager.DeleteUser).
type Owners interface {
	// Exists reports whether userID is a user now. It is called on every
	// verification, so it must be cheap, and safe for concurrent use.
	Exists(userID string) bool
}

// Manager applies the rules of API keys. Store is required; the zero value of
// every other field works.
type Manager struct {
	// Store keeps the keys.
	Store sb.KeyStore
	// Cache, if set, keeps verified key records on this node, so that a
	// verification of a key already seen costs no store round trip. It must
	// receive this node's bus events (see Cache).
	Cache *Cache
	// MaxTTL caps the lifetime of a key; zero means keys may never expire.
	MaxTTL time.Duration
	// NodeID names this node in the events of its writes.
	NodeID string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Owners, if set, decides whether a key's owner still exists: a key
	// whose owner does not is refused by Verify, left out by GetKeys (so the
	// gateway's re-validation closes its sockets), and none is issued to
	// such a user. Nil means every owner exists.
	Owners Owners
}

// ownerExists reports whether userID may hold a working key.
func (m *Manager) ownerExists(userID string) bool {
	return m.Owners == nil || m.Owners.Exists(userID)
}

type sourceKey struct{}

// WithSource returns a context that makes the key writes made with it say,
// in their events, that they came in through src (SourceHTTP for a user's
// own routes, SourceAPI for the admin API). Without it, writes say
// SourceAPI.
func WithSource(ctx context.Context, src sb.Source) context.Context {
	return context.WithValue(ctx, sourceKey{}, src)
}

// event returns the template of the event of a write made now.
func (m *Manager) event(ctx context.Context, now time.Time) sb.Event {
	src, _ := ctx.Value(sourceKey{}).(sb.Source)
	if src == "" {
		src = sb.SourceAPI
	}
	return sb.Event{Source: src, NodeID: m.NodeID, Timestamp: now}
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// NewKey is what a caller asks for when creating a key.
type NewKey struct {
	UserID string
	Name   string
	Scopes []string
	Limits sb.Limits
	// Meta is a JSON object of the application's, or empty.
	Meta json.RawMessage
	// TTL is the key's lifetime; zero means the longest allowed (MaxTTL, or
	// never).
	TTL time.Duration
}

// Create issues a key and returns it, once, with its stored record.
func (m *Manager) Create(ctx context.Context, nk NewKey) (key string, k *sb.APIKey, err error) {
	if err := sb.CheckUserID(nk.UserID); err != nil {
		return "", nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	k = &sb.APIKey{UserID: nk.UserID, Name: nk.Name, Scopes: nk.Scopes, Limits: nk.Limits, Meta: nk.Meta, Version: 1}
	if err := check(k); err != nil {
		return "", nil, err
	}
	if !m.ownerExists(nk.UserID) {
		return "", nil, ErrUnknownOwner
	}
	now := m.now().UTC().Truncate(time.Millisecond)
	k.CreatedAt = now
	if k.ExpiresAt, err = m.expiry(now, nk.TTL); err != nil {
		return "", nil, err
	}
	key, k.ID, k.SecretHash, err = sb.NewAPIKey(nk.UserID)
	if err != nil {
		return "", nil, err
	}
	if err := m.Store.CreateKey(ctx, k); err != nil {
		return "", nil, err
	}
	return key, k, nil
}

func (m *Manager) expiry(now time.Time, ttl time.Duration) (time.Time, error) {
	switch {
	case ttl < 0:
		return time.Time{}, fmt.Errorf("%w: ttl must be positive", ErrInvalid)
	case m.MaxTTL > 0 && (ttl == 0 || ttl > m.MaxTTL):
		ttl = m.MaxTTL
	case ttl == 0:
		return time.Time{}, nil
	}
	return now.Add(ttl), nil
}

// check validates what a caller may set on a key.
func check(k *sb.APIKey) error {
	if k.Name == "" || len(k.Name) > MaxNameLen || !utf8.ValidString(k.Name) || hasControl(k.Name) {
		return fmt.Errorf("%w: name must be 1 to %d bytes of UTF-8 text", ErrInvalid, MaxNameLen)
	}
	if _, err := scope.Compile(k.Scopes...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := k.Limits.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(k.Meta) > 0 {
		if len(k.Meta) > MaxMetaSize || !sb.ValidObject(k.Meta) {
			return fmt.Errorf("%w: meta must be a JSON object of at most %d bytes", ErrInvalid, MaxMetaSize)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, k.Meta); err != nil {
			return fmt.Errorf("%w: meta: %v", ErrInvalid, err)
		}
		k.Meta = buf.Bytes()
	}
	return nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return true
		}
	}
	return false
}

// Get returns the key with id; ErrKeyNotFound if there is none.
func (m *Manager) Get(ctx context.Context, id string) (*sb.APIKey, error) {
	return m.Store.GetKey(ctx, id)
}

// List returns the keys of a user, oldest first.
func (m *Manager) List(ctx context.Context, userID string) ([]*sb.APIKey, error) {
	return m.Store.ListUserKeys(ctx, userID)
}

// Change is an update of a key; nil fields stay as they are.
type Change struct {
	Name   *string
	Scopes *[]string
	Limits *sb.Limits
	// Meta is an RFC 7386 merge patch applied to the key's meta.
	Meta json.RawMessage
}

// Update applies c to the key id if its version is still expectVersion
// (zero: whatever it is) and returns the key as stored.
func (m *Manager) Update(ctx context.Context, id string, c Change, expectVersion uint64) (*sb.APIKey, error) {
	k, err := m.Store.GetKey(ctx, id)
	if err != nil {
		return nil, err
	}
	if expectVersion != 0 && k.Version != expectVersion {
		return nil, fmt.Errorf("keys: api key %s at version %d: %w", id, k.Version, sb.ErrVersionConflict)
	}
	prev, oldScopes := k.Version, slices.Clone(k.Scopes)
	if c.Name != nil {
		k.Name = *c.Name
	}
	if c.Scopes != nil {
		k.Scopes = slices.Clone(*c.Scopes)
	}
	if c.Limits != nil {
		k.Limits = *c.Limits
	}
	if len(c.Meta) > 0 {
		meta := k.Meta
		if len(meta) == 0 {
			meta = json.RawMessage(`{}`)
		}
		if k.Meta, err = sb.MergePatch(meta, c.Meta); err != nil {
			return nil, fmt.Errorf("%w: meta: %w", ErrInvalid, err)
		}
	}
	if err := check(k); err != nil {
		return nil, err
	}
	k.Version = prev + 1
	ev := m.event(ctx, m.now())
	if !slices.Equal(k.Scopes, oldScopes) {
		// Sockets of the key take the new scopes from the event itself; an
		// empty list is sent as [] (no scope left), never left out.
		ev.Scopes = slices.Clone(k.Scopes)
		if ev.Scopes == nil {
			ev.Scopes = []string{}
		}
	}
	err = m.Store.UpdateKey(ctx, k, prev, ev)
	m.Cache.Invalidate(id)
	if err != nil {
		return nil, err
	}
	return k, nil
}

// Delete revokes the key id and returns it as it was. Its sockets on every
// node are closed (4401 api_key_revoked) by the event the store publishes.
func (m *Manager) Delete(ctx context.Context, id string) (*sb.APIKey, error) {
	ev := m.event(ctx, m.now())
	ev.Reason = sb.ReasonRevoked
	k, err := m.Store.DeleteKey(ctx, id, ev)
	// Whatever the outcome (the delete may have been applied even if the
	// answer was lost), this node reads the key again next time.
	m.Cache.Invalidate(id)
	return k, err
}

// Roll issues a successor of the key id, with its name, scopes, limits, meta
// and expiry, and cuts the old key's life to min(its expiry, now + grace).
// It returns the new key, once, and its record.
func (m *Manager) Roll(ctx context.Context, id string, grace time.Duration) (key string, next *sb.APIKey, err error) {
	if grace < 0 || grace > MaxRollGrace {
		return "", nil, fmt.Errorf("%w: grace must be between 0 and %s", ErrInvalid, MaxRollGrace)
	}
	old, err := m.Store.GetKey(ctx, id)
	if err != nil {
		return "", nil, err
	}
	now := m.now().UTC().Truncate(time.Millisecond)
	if old.Expired(now) {
		return "", nil, fmt.Errorf("keys: api key %s: %w", id, sb.ErrKeyNotFound)
	}
	if !m.ownerExists(old.UserID) {
		return "", nil, ErrUnknownOwner
	}
	next = old.Clone()
	next.CreatedAt, next.LastUsedAt, next.LastIP, next.Version = now, time.Time{}, "", 1
	key, next.ID, next.SecretHash, err = sb.NewAPIKey(old.UserID)
	if err != nil {
		return "", nil, err
	}
	cut := now.Add(grace)
	if !old.ExpiresAt.IsZero() && old.ExpiresAt.Before(cut) {
		cut = old.ExpiresAt
	}
	err = m.Store.RollKey(ctx, id, cut, next, m.event(ctx, now))
	m.Cache.Invalidate(id)
	if err != nil {
		return "", nil, err
	}
	return key, next, nil
}

// Verify returns the key that key stands for, recording the use from ip at
// most once a minute. It returns an error wrapping ErrInvalidToken for a
// malformed, unknown, mismatched or expired key, or one whose owner Owners
// no longer knows, without saying which, and ErrUnavailable when the store
// cannot answer.
//
// With a Cache, a key whose record is cached is verified without a store
// round trip (but for the record of use, at most once a minute per key and
// node): its secret is hashed and compared with the cached SHA-256 in
// constant time, and its expiry checked on the local clock.
func (m *Manager) Verify(ctx context.Context, key, ip string) (*sb.APIKey, error) {
	id, secret, err := sb.ParseAPIKey(key)
	if err != nil {
		return nil, err
	}
	now := m.now()
	k, ok := m.Cache.get(id, now)
	if !ok {
		tok := m.Cache.fillToken(id)
		k, err = m.Store.GetKey(ctx, id)
		switch {
		case errors.Is(err, sb.ErrKeyNotFound):
			return nil, fmt.Errorf("keys: %w", sb.ErrInvalidToken)
		case err != nil:
			return nil, err
		}
		m.Cache.put(k, tok, now)
	}
	if !sb.VerifySecret(secret, k.SecretHash) || k.Expired(now) || !m.ownerExists(k.UserID) {
		return nil, fmt.Errorf("keys: %w", sb.ErrInvalidToken)
	}
	out := k.Clone()
	if now.Sub(k.LastUsedAt) >= sb.KeyUseInterval {
		// The record of use is best effort: failing to write it must not
		// refuse a valid key.
		if ok, err := m.Store.MarkUsed(ctx, id, now, ip); err == nil {
			m.Cache.used(id, now, ip)
			if ok {
				out.LastUsedAt, out.LastIP = now, ip
			}
		}
	}
	return out, nil
}

// GetKeys reads the keys with the given IDs, for the re-validation of live
// sockets (it implements gateway.KeyReader): a key that is gone, or whose
// owner Owners no longer knows, is absent from the map, so that its sockets
// are closed as if it had been revoked.
func (m *Manager) GetKeys(ctx context.Context, ids []string) (map[string]*sb.APIKey, error) {
	found, err := m.Store.GetKeys(ctx, ids)
	if err != nil {
		return nil, err
	}
	for id, k := range found {
		if k == nil || !m.ownerExists(k.UserID) {
			delete(found, id)
		}
	}
	return found, nil
}

// DeleteUser revokes every key of userID, one at a time and each with its
// own event, so that its sockets close on every node (4401
// api_key_revoked). It returns the keys it revoked; on a store error it
// returns those revoked so far with the error, and calling it again revokes
// the rest.
func (m *Manager) DeleteUser(ctx context.Context, userID string) ([]*sb.APIKey, error) {
	list, err := m.Store.ListUserKeys(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("keys: revoke the keys of a user: %w", err)
	}
	var gone []*sb.APIKey
	for _, k := range list {
		d, err := m.Delete(ctx, k.ID)
		switch {
		case errors.Is(err, sb.ErrKeyNotFound):
			// Revoked, or expired and claimed, meanwhile.
		case err != nil:
			return gone, fmt.Errorf("keys: revoke the keys of a user: %w", err)
		default:
			gone = append(gone, d)
		}
	}
	return gone, nil
}
