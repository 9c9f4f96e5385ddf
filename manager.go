package sessionbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/sessionbridge/sessionbridge/internal/strictjson"
)

// Defaults used by a Manager whose fields are zero.
const (
	DefaultIdleTimeout     = 30 * time.Minute
	DefaultAbsoluteTimeout = 24 * time.Hour
	DefaultTouchInterval   = time.Minute
	// DefaultMaxDataBytes caps a session's data at 64 KiB of JSON: the data
	// rides in every welcome, session and session.updated frame and in
	// every update event, so its size is paid on each of them.
	DefaultMaxDataBytes = 64 << 10
	// DefaultMaxDataDepth caps the nesting of a session's data at 32 levels
	// of arrays and objects ({} is one level).
	DefaultMaxDataDepth = 32
	// DefaultExpiryInterval is how often Run claims expired sessions.
	DefaultExpiryInterval = time.Second
	// DefaultKeyExpiryInterval is how often Run claims expired API keys:
	// longer than the session one because the key claim enforces nothing
	// (every node closes a key's sockets on its own timer and refuses an
	// expired key at once), so it only publishes apikey:expired, at most
	// this late, and each look for due keys costs reads of the store.
	DefaultKeyExpiryInterval = 10 * time.Second
	maxUpdateRetries         = 16
)

// Manager is a node's session side: it owns the node's Backend and applies
// the session rules on top of its Store: token issue and verification, idle
// and absolute timeouts, throttled touches, merge-patch updates with version
// checks, deletion and ID rotation. Every change it makes emits an event
// through the store. Run does its background work (expiry claims).
//
// Create it with NewManager; every exported field has a working zero value
// and may be set before the Manager is first used. It is safe for concurrent
// use once configured.
type Manager struct {
	backend Backend
	// IdleTimeout is how long a session lives without activity.
	IdleTimeout time.Duration
	// AbsoluteTimeout is the longest a session can live, whatever its activity.
	AbsoluteTimeout time.Duration
	// TouchInterval is the least time between two recorded touches of one
	// session: activity within it costs no store write.
	TouchInterval time.Duration
	// MaxDataBytes caps the size of a session's data, in bytes of JSON, when
	// it is created and after each update (the merge patch applied); zero or
	// negative means DefaultMaxDataBytes. Beyond it, Create and Update fail
	// with ErrDataTooLarge.
	MaxDataBytes int
	// MaxDataDepth caps the nesting of arrays and objects in a session's
	// data, checked like MaxDataBytes; zero or negative means
	// DefaultMaxDataDepth. Beyond it, Create and Update fail with
	// ErrDataTooDeep. Data that comes in over HTTP or WebSocket frames is
	// refused beyond 128 levels whatever this says.
	MaxDataDepth int
	// ExpiryInterval is how often Run claims expired sessions; zero or
	// negative means DefaultExpiryInterval.
	ExpiryInterval time.Duration
	// KeyExpiryInterval is how often Run claims expired API keys; zero or
	// negative means DefaultKeyExpiryInterval.
	KeyExpiryInterval time.Duration
	// Logger receives the failures of Run's background work; nil discards
	// them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now. Tests inject a clock.
	Now func() time.Time
}

// NewManager returns the Manager of a node running on b. It refuses a
// Backend without a Store or a Bus, and fills in b's NodeID (NewNodeID) when
// it is empty, once, so that every part of the node names it alike.
func NewManager(b Backend) (*Manager, error) {
	if b.Store == nil || b.Bus == nil {
		return nil, errors.New("sessionbridge: a Backend needs a Store and a Bus")
	}
	if b.NodeID == "" {
		b.NodeID = NewNodeID()
	}
	return &Manager{backend: b}, nil
}

// Backend returns the backend the Manager runs on, with its node ID filled
// in. The gateway and the HTTP API take their bus, tickets, key store and
// presence from it.
func (m *Manager) Backend() Backend { return m.backend }

// NodeID returns the ID of this node, which names it in events, presence
// records and connection lists.
func (m *Manager) NodeID() string { return m.backend.NodeID }

// Stored returns the session with id as the store holds it: unlike Get, it
// does not check id's form and may return a session past its deadline that
// no node has claimed as expired yet, so that the caller can tell an expiry
// from a revocation. ErrNotFound if it is gone.
func (m *Manager) Stored(ctx context.Context, id string) (*Session, error) {
	return m.backend.Store.Get(ctx, id)
}

// StoredMany returns the sessions that exist among ids as Stored would, in
// one round trip, keyed by ID; missing IDs are absent from the map.
func (m *Manager) StoredMany(ctx context.Context, ids []string) (map[string]*Session, error) {
	return m.backend.Store.GetMany(ctx, ids)
}

// ChangedSessions returns the IDs among held whose stored session is gone or
// is at another version than the held one, in one round trip: what a node
// holding sessions reads whole again after it may have missed their events.
// It asks the store's [VersionChecker] if it has one, else reads the
// sessions whole and compares.
func (m *Manager) ChangedSessions(ctx context.Context, held []SessionVersion) ([]string, error) {
	if vc, ok := m.backend.Store.(VersionChecker); ok {
		return vc.ChangedVersions(ctx, held)
	}
	ids := make([]string, len(held))
	for i, h := range held {
		ids[i] = h.ID
	}
	found, err := m.backend.Store.GetMany(ctx, ids)
	if err != nil {
		return nil, err
	}
	var changed []string
	for _, h := range held {
		if s, ok := found[h.ID]; !ok || s.Version != h.Version {
			changed = append(changed, h.ID)
		}
	}
	return changed, nil
}

// Ping reports whether the node's store can be reached: the readiness check.
func (m *Manager) Ping(ctx context.Context) error { return m.backend.Store.Ping(ctx) }

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Manager) idle() time.Duration {
	if m.IdleTimeout > 0 {
		return m.IdleTimeout
	}
	return DefaultIdleTimeout
}

// Absolute returns the configured absolute timeout.
func (m *Manager) Absolute() time.Duration {
	if m.AbsoluteTimeout > 0 {
		return m.AbsoluteTimeout
	}
	return DefaultAbsoluteTimeout
}

// TouchEvery returns the configured touch interval: activity within it of the
// last recorded touch costs no store write.
func (m *Manager) TouchEvery() time.Duration {
	if m.TouchInterval > 0 {
		return m.TouchInterval
	}
	return DefaultTouchInterval
}

// DataLimits returns the configured caps on session data: its size in bytes
// of JSON and its nesting depth.
func (m *Manager) DataLimits() (maxBytes, maxDepth int) {
	maxBytes, maxDepth = m.MaxDataBytes, m.MaxDataDepth
	if maxBytes <= 0 {
		maxBytes = DefaultMaxDataBytes
	}
	if maxDepth <= 0 {
		maxDepth = DefaultMaxDataDepth
	}
	return maxBytes, maxDepth
}

// checkData refuses session data over the caps of DataLimits.
func (m *Manager) checkData(data json.RawMessage) error {
	maxBytes, maxDepth := m.DataLimits()
	if len(data) > maxBytes {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrDataTooLarge, len(data), maxBytes)
	}
	if d := strictjson.Depth(data); d > maxDepth {
		return fmt.Errorf("%w: %d levels, more than %d", ErrDataTooDeep, d, maxDepth)
	}
	return nil
}

// Change says who made a change, for the event it emits.
type Change struct {
	Source       Source
	ConnectionID string
}

func (m *Manager) event(t EventType, s *Session, c Change, now time.Time) Event {
	ev := Event{Type: t, Source: c.Source, ConnectionID: c.ConnectionID, NodeID: m.backend.NodeID, Timestamp: now}
	if s != nil {
		ev.SessionID, ev.UserID, ev.Version = s.ID, s.UserID, s.Version
		if t == EventCreated || t == EventUpdated {
			ev.ExpiresAt = s.Deadline()
		}
	}
	if ev.Source == "" {
		ev.Source = SourceSystem
	}
	return ev
}

// NewSession describes a session to create.
type NewSession struct {
	UserID string
	// Data is the initial session data, a JSON object; nil means {}.
	Data   json.RawMessage
	Device Device
	// TTL is the session's absolute lifetime, capped by the absolute timeout;
	// zero means the absolute timeout.
	TTL time.Duration
	// Scopes are the session's own scope patterns; nil means the configured
	// default (see Session.Scopes). Patterns CompileScopes refuses are an
	// error wrapping scope.ErrInvalid.
	Scopes []string
}

// Create creates a session and returns it with its token. The token is shown
// once: only the hash of its secret is stored. A user ID that CheckUserID
// refuses is an error wrapping ErrInvalidUserID; data over the caps of
// DataLimits, ErrDataTooLarge or ErrDataTooDeep.
func (m *Manager) Create(ctx context.Context, ns NewSession, c Change) (*Session, string, error) {
	if err := CheckUserID(ns.UserID); err != nil {
		return nil, "", fmt.Errorf("sessionbridge: create: %w", err)
	}
	data := ns.Data
	if len(data) == 0 {
		data = json.RawMessage("{}")
	} else if !ValidObject(data) {
		return nil, "", fmt.Errorf("%w: session data must be a JSON object", ErrInvalidPatch)
	}
	if err := m.checkData(data); err != nil {
		return nil, "", fmt.Errorf("sessionbridge: create: %w", err)
	}
	if ns.Scopes != nil {
		if _, err := CompileScopes(ns.Scopes); err != nil {
			return nil, "", fmt.Errorf("sessionbridge: create: %w", err)
		}
	}
	id, err := NewSessionID(ns.UserID)
	if err != nil {
		return nil, "", err
	}
	secret, hash, err := NewSecret()
	if err != nil {
		return nil, "", err
	}
	now := m.now()
	abs := m.Absolute()
	if ns.TTL > 0 && ns.TTL < abs {
		abs = ns.TTL
	}
	s := &Session{
		ID: id, UserID: ns.UserID, SecretHash: hash, Data: data, Device: ns.Device,
		Scopes: slices.Clone(ns.Scopes), CreatedAt: now, LastSeenAt: now, AbsoluteExpiresAt: now.Add(abs), Version: 1,
	}
	s.ExpiresAt = minTime(now.Add(m.idle()), s.AbsoluteExpiresAt)
	if err := m.backend.Store.Create(ctx, s, m.event(EventCreated, s, c, now)); err != nil {
		return nil, "", fmt.Errorf("sessionbridge: create session: %w", err)
	}
	return s, FormatToken(id, secret), nil
}

// Authenticate returns the live session a token belongs to. It returns
// ErrInvalidToken for a malformed, unknown or mismatching token (never saying
// which), ErrExpired for a session past its deadline, and ErrUnavailable when
// the store cannot be reached.
func (m *Manager) Authenticate(ctx context.Context, token string) (*Session, error) {
	id, secret, err := ParseToken(token)
	if err != nil {
		return nil, err
	}
	s, err := m.backend.Store.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrInvalidToken
	}
	if err != nil {
		return nil, fmt.Errorf("sessionbridge: authenticate: %w", err)
	}
	if !VerifySecret(secret, s.SecretHash) {
		return nil, ErrInvalidToken
	}
	if s.Expired(m.now()) {
		return nil, ErrExpired
	}
	return s, nil
}

// Get returns a live session by ID: ErrNotFound if it is gone or expired.
func (m *Manager) Get(ctx context.Context, id string) (*Session, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	s, err := m.backend.Store.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("sessionbridge: get session: %w", err)
	}
	if s.Expired(m.now()) {
		return nil, fmt.Errorf("sessionbridge: get session: %w", ErrNotFound)
	}
	return s, nil
}

// Update applies a JSON merge patch to the session's data. If expectVersion is
// not zero the update applies only to that version (ErrVersionConflict
// otherwise); if it is zero, concurrent updates are retried so that none is
// lost. An update never brings back a deleted session. When the patched data
// would exceed the caps of DataLimits, nothing changes and the error wraps
// ErrDataTooLarge or ErrDataTooDeep. Update never changes the session's
// scopes: it is what a session's own user may do.
func (m *Manager) Update(ctx context.Context, id string, patch json.RawMessage, expectVersion uint64, c Change) (*Session, error) {
	if !ValidObject(patch) {
		return nil, fmt.Errorf("sessionbridge: update: %w", ErrInvalidPatch)
	}
	return m.update(ctx, id, patch, nil, expectVersion, c)
}

// SessionPatch is a change an administrator makes to a session: a merge
// patch of its data, new scopes, or both, applied as one update.
type SessionPatch struct {
	// Data is a JSON merge patch of the session's data; nil leaves the data
	// as it is.
	Data json.RawMessage
	// Scopes, when not nil, replace the session's scopes (an empty list
	// leaves it no scope at all).
	Scopes *[]string
}

// Patch applies p to the session as one update, with one version and one
// event, under the rules of Update. Scopes that CompileScopes refuses are an
// error wrapping scope.ErrInvalid, and nothing changes. The updated event
// carries the new scopes, so that every node gives the session's sockets
// their new rights without reading the store. Only administrators may call
// it: a session's own user must never choose its scopes.
func (m *Manager) Patch(ctx context.Context, id string, p SessionPatch, expectVersion uint64, c Change) (*Session, error) {
	patch := p.Data
	if len(patch) == 0 || string(patch) == "null" {
		// An empty merge patch: the data stays, and the event is still an
		// update rather than a touch.
		patch = json.RawMessage("{}")
	}
	if !ValidObject(patch) {
		return nil, fmt.Errorf("sessionbridge: update: %w", ErrInvalidPatch)
	}
	var scopes []string
	if p.Scopes != nil {
		if _, err := CompileScopes(*p.Scopes); err != nil {
			return nil, fmt.Errorf("sessionbridge: update: %w", err)
		}
		// Non-nil even when empty: the event must say the scopes changed.
		scopes = append([]string{}, *p.Scopes...)
	}
	return m.update(ctx, id, patch, scopes, expectVersion, c)
}

// update is Update and Patch: scopes nil leaves them as they are.
func (m *Manager) update(ctx context.Context, id string, patch json.RawMessage, scopes []string, expectVersion uint64, c Change) (*Session, error) {
	for range maxUpdateRetries {
		cur, err := m.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if expectVersion != 0 && cur.Version != expectVersion {
			return nil, fmt.Errorf("sessionbridge: update: %w", ErrVersionConflict)
		}
		data, err := MergePatch(cur.Data, patch)
		if err != nil {
			return nil, fmt.Errorf("sessionbridge: update: %w", err)
		}
		// The result is what is stored and sent to every socket: cap it,
		// not the patch, which may be small and still grow the data.
		if err := m.checkData(data); err != nil {
			return nil, fmt.Errorf("sessionbridge: update: %w", err)
		}
		prev := cur.Version
		next := cur.Clone()
		next.Data = data
		next.Version = prev + 1
		ev := m.event(EventUpdated, next, c, m.now())
		ev.Updates = patch
		if scopes != nil {
			next.Scopes = slices.Clone(scopes)
			ev.Scopes = slices.Clone(scopes)
		}
		err = m.backend.Store.Update(ctx, next, prev, ev)
		if err == nil {
			return next, nil
		}
		if !errors.Is(err, ErrVersionConflict) || expectVersion != 0 {
			return nil, fmt.Errorf("sessionbridge: update: %w", err)
		}
	}
	return nil, fmt.Errorf("sessionbridge: update: %w", ErrVersionConflict)
}

// Touch records activity on s: it moves the idle deadline, never past the
// absolute one, with at most one store write per session per touch interval.
// It returns s with the recorded deadline, or ErrNotFound if the session is
// gone. A touch that the interval throttles costs nothing, and a session
// already past its deadline is returned unchanged: activity never revives it.
func (m *Manager) Touch(ctx context.Context, s *Session, c Change) (*Session, error) {
	now := m.now()
	if now.Sub(s.LastSeenAt) < m.TouchEvery() {
		return s, nil
	}
	if s.Expired(now) {
		// Activity that arrives after the deadline must not bring the session
		// back before it is claimed as expired.
		return s, nil
	}
	next := s.Clone()
	next.LastSeenAt = now
	next.ExpiresAt = minTime(now.Add(m.idle()), s.AbsoluteExpiresAt)
	ev := m.event(EventUpdated, next, c, now)
	wrote, err := m.backend.Store.Touch(ctx, s.ID, now, next.ExpiresAt, now.Add(-m.TouchEvery()).Add(time.Nanosecond), ev)
	if err != nil {
		return nil, fmt.Errorf("sessionbridge: touch: %w", err)
	}
	if !wrote {
		// Another request or node recorded a touch within the interval.
		return s, nil
	}
	return next, nil
}

// Delete removes a session, closing its sockets everywhere. reason is
// ReasonLogout or ReasonRevoked.
func (m *Manager) Delete(ctx context.Context, id, reason string, c Change) (*Session, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("sessionbridge: delete: %w", ErrNotFound)
	}
	ev := m.event(EventDeleted, nil, c, m.now())
	ev.SessionID, ev.Reason = id, reason
	s, err := m.backend.Store.Delete(ctx, id, ev)
	if err != nil {
		return nil, fmt.Errorf("sessionbridge: delete: %w", err)
	}
	return s, nil
}

// DeleteUser removes every session of userID except the one with ID except
// (which may be empty), and returns the IDs it removed.
func (m *Manager) DeleteUser(ctx context.Context, userID, except, reason string, c Change) ([]string, error) {
	list, err := m.backend.Store.ListUser(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("sessionbridge: delete user sessions: %w", err)
	}
	var gone []string
	for _, s := range list {
		if s.ID == except {
			continue
		}
		ev := m.event(EventDeleted, nil, c, m.now())
		ev.SessionID, ev.UserID, ev.Reason = s.ID, userID, reason
		if _, err := m.backend.Store.Delete(ctx, s.ID, ev); err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return gone, fmt.Errorf("sessionbridge: delete user sessions: %w", err)
		}
		gone = append(gone, s.ID)
	}
	return gone, nil
}

// List returns the live sessions of userID.
func (m *Manager) List(ctx context.Context, userID string) ([]*Session, error) {
	list, err := m.backend.Store.ListUser(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("sessionbridge: list sessions: %w", err)
	}
	now := m.now()
	live := list[:0]
	for _, s := range list {
		if !s.Expired(now) {
			live = append(live, s)
		}
	}
	return live, nil
}

// Rotate gives a session a new ID and secret, keeping its data and deadlines,
// and returns it with its new token. Call it on privilege change (login,
// elevation) so that a fixated session ID becomes worthless.
//
// An update or touch that lands between Rotate's read and its write makes the
// store refuse the rotation; Rotate then reads again and retries, so that
// the change is carried over to the new session rather than lost.
func (m *Manager) Rotate(ctx context.Context, id string, c Change) (*Session, string, error) {
	for range maxUpdateRetries {
		cur, err := m.Get(ctx, id)
		if err != nil {
			return nil, "", err
		}
		newID, err := NewSessionID(cur.UserID)
		if err != nil {
			return nil, "", err
		}
		secret, hash, err := NewSecret()
		if err != nil {
			return nil, "", err
		}
		now := m.now()
		next := cur.Clone()
		next.ID, next.SecretHash, next.Version = newID, hash, cur.Version+1
		del := m.event(EventDeleted, cur, c, now)
		del.Reason = ReasonRotated
		created := m.event(EventCreated, next, c, now)
		err = m.backend.Store.Rotate(ctx, id, next, del, created)
		if err == nil {
			return next, FormatToken(newID, secret), nil
		}
		if !errors.Is(err, ErrVersionConflict) {
			return nil, "", fmt.Errorf("sessionbridge: rotate session: %w", err)
		}
	}
	return nil, "", fmt.Errorf("sessionbridge: rotate session: %w", ErrVersionConflict)
}

// ClaimExpired claims up to limit sessions past their deadline, deletes them
// and publishes one expired event for each, cluster-wide exactly once.
func (m *Manager) ClaimExpired(ctx context.Context, limit int) ([]*Session, error) {
	tmpl := m.event(EventExpired, nil, Change{Source: SourceSystem}, m.now())
	list, err := m.backend.Store.ClaimExpired(ctx, tmpl.Timestamp, limit, tmpl)
	if err != nil {
		return nil, fmt.Errorf("sessionbridge: claim expired: %w", err)
	}
	return list, nil
}

// ClaimExpiredKeys claims up to limit API keys past their expiry (all if
// limit is not positive) and publishes one apikey_expired event for each,
// cluster-wide exactly once, so that every node closes their sockets. The
// keys stay, shown as expired, until the store drops them. A backend without
// a key store has none to claim.
func (m *Manager) ClaimExpiredKeys(ctx context.Context, limit int) ([]*APIKey, error) {
	if m.backend.Keys == nil {
		return nil, nil
	}
	tmpl := m.event(EventKeyExpired, nil, Change{Source: SourceSystem}, m.now())
	list, err := m.backend.Keys.ClaimExpiredKeys(ctx, tmpl.Timestamp, limit, tmpl)
	if err != nil {
		return list, fmt.Errorf("sessionbridge: claim expired api keys: %w", err)
	}
	return list, nil
}

// ExpiryTurns is implemented by stores shared by several nodes that can
// hand a periodic expiry claim to one node per interval, so that the cost of
// looking for due records does not grow with the number of nodes.
// TakeExpiryTurn reports whether the caller claims this time; it keeps the
// turn for ttl. Exactly-once does not depend on it: the claim itself is.
type ExpiryTurns interface {
	TakeExpiryTurn(ctx context.Context, ttl time.Duration) (bool, error)
}

// ExpiryBatch is how many expiries one claim of Run asks for.
const ExpiryBatch = 1000

// Run does the Manager's background work until ctx is done, then returns
// ctx.Err(): it claims expired sessions every ExpiryInterval and, when the
// backend keeps API keys, expired keys every KeyExpiryInterval. Run it on
// every node, once: the claims make each expiry happen once in the cluster,
// and a store that hands out turns (ExpiryTurns) lets only one node a turn
// look for due records. Failures go to Logger and are tried again at the
// next interval.
func (m *Manager) Run(ctx context.Context) error {
	log := m.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		turns, _ := m.backend.Store.(ExpiryTurns)
		runClaims(ctx, positiveOr(m.ExpiryInterval, DefaultExpiryInterval), turns, func(ctx context.Context, limit int) (int, error) {
			list, err := m.ClaimExpired(ctx, limit)
			return len(list), err
		}, func(err error) { log.Warn("claiming expired sessions failed", "err", err) })
	})
	if m.backend.Keys != nil {
		wg.Go(func() {
			turns, _ := m.backend.Keys.(ExpiryTurns)
			runClaims(ctx, positiveOr(m.KeyExpiryInterval, DefaultKeyExpiryInterval), turns, func(ctx context.Context, limit int) (int, error) {
				list, err := m.ClaimExpiredKeys(ctx, limit)
				return len(list), err
			}, func(err error) { log.Warn("claiming expired API keys failed", "err", err) })
		})
	}
	wg.Wait()
	return ctx.Err()
}

// runClaims calls claim every interval until ctx is done, again at once
// while a claim comes back with a full batch of ExpiryBatch. With turns
// (nil: none), only the node holding the turn claims; the turn lasts nine
// tenths of the interval, so the holder keeps it while it lives, and another
// node takes over within about two intervals when it dies. Errors go to
// report, never while ctx is ending.
func runClaims(ctx context.Context, interval time.Duration, turns ExpiryTurns, claim func(ctx context.Context, limit int) (int, error), onErr func(error)) {
	report := func(err error) {
		if ctx.Err() == nil {
			onErr(err)
		}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if turns != nil {
			mine, err := turns.TakeExpiryTurn(ctx, interval*9/10)
			if err != nil {
				report(fmt.Errorf("expiry turn: %w", err))
				continue
			}
			if !mine {
				continue
			}
		}
		for {
			n, err := claim(ctx, ExpiryBatch)
			if err != nil {
				report(err)
				break
			}
			if n < ExpiryBatch {
				break
			}
		}
	}
}

func positiveOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
