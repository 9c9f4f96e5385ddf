package sessionbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// ErrKeyNotFound means the API key does not exist (never did, or was
// deleted). Callers that authenticate must not tell it apart from a wrong
// secret.
var ErrKeyNotFound = errors.New("sessionbridge: api key not found")

// ErrInvalidLimits is wrapped by every error Limits.Validate returns.
var ErrInvalidLimits = errors.New("sessionbridge: invalid limits")

// APIKey is an API key as stored: everything but its secret, of which only
// the SHA-256 is kept.
type APIKey struct {
	ID     string
	UserID string
	Name   string
	Scopes []string
	// Limits override the configured defaults for this key; a zero field
	// means the default.
	Limits Limits
	// Meta is the application's own JSON object, opaque to the server.
	Meta       json.RawMessage
	SecretHash [32]byte
	CreatedAt  time.Time
	// ExpiresAt is when the key stops working; zero for never.
	ExpiresAt time.Time
	// LastUsedAt and LastIP record the last authentication with the key, at
	// most once a minute (see KeyStore.MarkUsed).
	LastUsedAt time.Time
	LastIP     string
	// Version counts the changes made to the key; it starts at 1.
	Version uint64
}

// Expired reports whether the key has an expiry at or before now.
func (k *APIKey) Expired(now time.Time) bool {
	return !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt)
}

// Clone returns a deep copy of k.
func (k *APIKey) Clone() *APIKey {
	c := *k
	c.Scopes = slices.Clone(k.Scopes)
	c.Limits.DryRun = slices.Clone(k.Limits.DryRun)
	c.Meta = slices.Clone(k.Meta)
	return &c
}

// Rule names, as used in configuration, in a key's limits and in refusals.
const (
	RuleConnectsPerMinute   = "connects_per_minute"
	RuleMaxConnections      = "max_connections"
	RuleFramesPerSecond     = "frames_per_second"
	RuleBytesPerSecond      = "bytes_per_second"
	RuleKeyFramesPerSecond  = "key_frames_per_second"
	RuleUserFramesPerSecond = "user_frames_per_second"
)

// Limits are the rate-limit rules of a principal. A zero field means "the
// configured default"; Over fills those in.
type Limits struct {
	ConnectsPerMinute   int `json:"connects_per_minute,omitempty"`
	MaxConnections      int `json:"max_connections,omitempty"`
	FramesPerSecond     int `json:"frames_per_second,omitempty"`
	BytesPerSecond      int `json:"bytes_per_second,omitempty"`
	KeyFramesPerSecond  int `json:"key_frames_per_second,omitempty"`
	UserFramesPerSecond int `json:"user_frames_per_second,omitempty"`
	// DryRun names the rules that are counted and logged but not enforced.
	DryRun []string `json:"dry_run,omitempty"`
}

func (l *Limits) rules() []struct {
	name string
	v    int
} {
	return []struct {
		name string
		v    int
	}{
		{RuleConnectsPerMinute, l.ConnectsPerMinute},
		{RuleMaxConnections, l.MaxConnections},
		{RuleFramesPerSecond, l.FramesPerSecond},
		{RuleBytesPerSecond, l.BytesPerSecond},
		{RuleKeyFramesPerSecond, l.KeyFramesPerSecond},
		{RuleUserFramesPerSecond, l.UserFramesPerSecond},
	}
}

// Validate refuses, wrapping ErrInvalidLimits, a negative rule, a dry-run
// entry that names no rule, and a rule named twice in DryRun.
func (l Limits) Validate() error {
	names := make([]string, 0, 6)
	for _, r := range l.rules() {
		if r.v < 0 {
			return fmt.Errorf("%w: %s must be positive, got %d", ErrInvalidLimits, r.name, r.v)
		}
		names = append(names, r.name)
	}
	for i, n := range l.DryRun {
		if !slices.Contains(names, n) {
			return fmt.Errorf("%w: dry_run names an unknown rule %q", ErrInvalidLimits, n)
		}
		if slices.Contains(l.DryRun[:i], n) {
			return fmt.Errorf("%w: dry_run names %q twice", ErrInvalidLimits, n)
		}
	}
	return nil
}

// Over returns l with its zero rules taken from defaults, and DryRun from
// defaults when l names none.
func (l Limits) Over(defaults Limits) Limits {
	pick := func(v, d int) int {
		if v != 0 {
			return v
		}
		return d
	}
	out := Limits{
		ConnectsPerMinute:   pick(l.ConnectsPerMinute, defaults.ConnectsPerMinute),
		MaxConnections:      pick(l.MaxConnections, defaults.MaxConnections),
		FramesPerSecond:     pick(l.FramesPerSecond, defaults.FramesPerSecond),
		BytesPerSecond:      pick(l.BytesPerSecond, defaults.BytesPerSecond),
		KeyFramesPerSecond:  pick(l.KeyFramesPerSecond, defaults.KeyFramesPerSecond),
		UserFramesPerSecond: pick(l.UserFramesPerSecond, defaults.UserFramesPerSecond),
		DryRun:              slices.Clone(l.DryRun),
	}
	if len(out.DryRun) == 0 {
		out.DryRun = slices.Clone(defaults.DryRun)
	}
	return out
}

// KeyUseInterval is how often, at most, a key's LastUsedAt and LastIP are
// written, across the whole cluster.
const KeyUseInterval = time.Minute

// KeyStore keeps API keys. Implementations are safe for concurrent use,
// take and return copies, keep a per-user index and an expiry index, and
// wrap ErrKeyNotFound, ErrExists, ErrVersionConflict and ErrUnavailable.
//
// Every write that can end or change what a key's sockets may do publishes
// its event in the same atomic step as the write (as session writes do):
// UpdateKey and RollKey publish EventKeyUpdated, DeleteKey EventKeyDeleted,
// ClaimExpiredKeys EventKeyExpired. The store sets the event's Type, KeyID,
// UserID and Version; the caller gives the rest (source, node, time, and
// Scopes and ExpiresAt where the change made them differ). Creating a key
// and recording its use publish nothing.
type KeyStore interface {
	// CreateKey stores a new key; ErrExists if its ID is taken.
	CreateKey(ctx context.Context, k *APIKey) error
	// GetKey returns the key with id, or ErrKeyNotFound. It may return an
	// expired key; callers check.
	GetKey(ctx context.Context, id string) (*APIKey, error)
	// GetKeys returns the keys that exist among ids, in one round trip,
	// keyed by ID; missing IDs are absent from the map. Nodes re-validate
	// the keys of their sockets with it, so it reads the store itself,
	// never a cache.
	GetKeys(ctx context.Context, ids []string) (map[string]*APIKey, error)
	// UpdateKey replaces the key if its stored Version is still prevVersion
	// (k.Version is then prevVersion+1) and publishes ev as EventKeyUpdated.
	// ErrKeyNotFound if it is gone, ErrVersionConflict if the version moved.
	// A key never changes owner or secret.
	UpdateKey(ctx context.Context, k *APIKey, prevVersion uint64, ev Event) error
	// DeleteKey removes the key, publishes ev as EventKeyDeleted and returns
	// the key as it was; ErrKeyNotFound if it was gone.
	DeleteKey(ctx context.Context, id string, ev Event) (*APIKey, error)
	// ListUserKeys returns the keys of a user, oldest first.
	ListUserKeys(ctx context.Context, userID string) ([]*APIKey, error)
	// RollKey atomically stores next and sets the ExpiresAt of the key oldID
	// to oldExpiresAt (bumping its version), so that no crash leaves the old
	// key cut short without its successor, and publishes ev as
	// EventKeyUpdated of the old key with its new ExpiresAt. ErrKeyNotFound
	// if oldID is gone, ErrExists if next.ID is taken; nothing changes on
	// error.
	RollKey(ctx context.Context, oldID string, oldExpiresAt time.Time, next *APIKey, ev Event) error
	// MarkUsed records that the key was used at at from ip, unless its stored
	// LastUsedAt is within KeyUseInterval before at; it reports whether it
	// wrote. It does not change the version.
	MarkUsed(ctx context.Context, id string, at time.Time, ip string) (bool, error)
	// ClaimExpiredKeys takes the keys whose ExpiresAt is at or before now out
	// of the expiry index and publishes an EventKeyExpired for each, made
	// from tmpl with the key's IDs and version filled in; it returns them.
	// The keys themselves stay (shown as expired) until the store drops
	// them. Each expiry is claimed exactly once across all callers and
	// nodes; at most limit per call (all if limit is not positive).
	ClaimExpiredKeys(ctx context.Context, now time.Time, limit int, tmpl Event) ([]*APIKey, error)
}
