package memory

import (
	"cmp"
	"container/heap"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionbridge/sessionbridge"
)

// Store is an in-process [sessionbridge.Store]. Sessions live in maps guarded
// by one mutex, with a per-user index and an expiry index (a min-heap on each
// session's deadline, so that claiming k expired sessions costs O(k log n)).
//
// Every write publishes its event on the store's bus while it still holds the
// lock, so a write and its event are one step and the events of a session are
// published in the order of its writes. Sessions go in and come out as deep
// copies.
//
// The store never blocks on anything but its own lock, so it ignores the
// contexts it is given. The zero value is a working store that publishes
// nothing.
type Store struct {
	bus    *Bus
	writes atomic.Uint64

	mu       sync.Mutex
	sessions map[string]*entry
	users    map[string]map[string]struct{}
	expiry   expiryHeap
}

type entry struct {
	s     *sessionbridge.Session
	index int // position in the expiry heap
}

// NewStore returns an empty store that publishes the event of every write on
// bus; a nil bus means events are not published.
func NewStore(bus *Bus) *Store { return &Store{bus: bus} }

// Writes returns the number of writes the store has made: creates, updates,
// recorded touches, deletes, rotations and claimed expiries. Tests use it to
// see that throttled touches cost no write.
func (st *Store) Writes() uint64 { return st.writes.Load() }

// Len returns the number of stored sessions, expired ones not yet claimed
// included.
func (st *Store) Len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.sessions)
}

// publish must be called with st.mu held, right after the write it reports.
// The in-process bus fails only for an event without a valid type; the write
// stands and the error is returned.
func (st *Store) publish(ctx context.Context, ev sessionbridge.Event) error {
	if st.bus == nil {
		return nil
	}
	if err := st.bus.Publish(ctx, ev); err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	return nil
}

func (st *Store) lazyInit() {
	if st.sessions == nil {
		st.sessions = make(map[string]*entry)
		st.users = make(map[string]map[string]struct{})
	}
}

// Get returns a copy of the session with id, or an error wrapping
// sessionbridge.ErrNotFound. A session past its deadline is returned until it
// is claimed; callers check the deadline.
func (st *Store) Get(ctx context.Context, id string) (*sessionbridge.Session, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	e, ok := st.sessions[id]
	if !ok {
		return nil, fmt.Errorf("memory: get session %q: %w", id, sessionbridge.ErrNotFound)
	}
	return e.s.Clone(), nil
}

// GetMany returns copies of the sessions that exist among ids, keyed by ID.
func (st *Store) GetMany(ctx context.Context, ids []string) (map[string]*sessionbridge.Session, error) {
	out := make(map[string]*sessionbridge.Session, len(ids))
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, id := range ids {
		if e, ok := st.sessions[id]; ok {
			out[id] = e.s.Clone()
		}
	}
	return out, nil
}

// ChangedVersions returns the IDs among held whose session is gone or at
// another version; see sessionbridge.VersionChecker.
func (st *Store) ChangedVersions(ctx context.Context, held []sessionbridge.SessionVersion) ([]string, error) {
	var changed []string
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, h := range held {
		if e, ok := st.sessions[h.ID]; !ok || e.s.Version != h.Version {
			changed = append(changed, h.ID)
		}
	}
	return changed, nil
}

// Create stores a copy of s and publishes ev. It returns an error wrapping
// sessionbridge.ErrExists if the ID is taken.
func (st *Store) Create(ctx context.Context, s *sessionbridge.Session, ev sessionbridge.Event) error {
	if s == nil || s.ID == "" {
		return fmt.Errorf("memory: create session: empty session id")
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.lazyInit()
	if _, ok := st.sessions[s.ID]; ok {
		return fmt.Errorf("memory: create session %q: %w", s.ID, sessionbridge.ErrExists)
	}
	st.insert(s.Clone())
	st.writes.Add(1)
	return st.publish(ctx, fill(ev, sessionbridge.EventCreated, s))
}

// Update replaces the stored session by a copy of s if the stored Version is
// still prevVersion, and publishes ev. It returns an error wrapping
// sessionbridge.ErrNotFound if the session is gone,
// sessionbridge.ErrVersionConflict if its version moved, and an error if s
// names another user than the stored session (a session never changes hands).
//
// A touch recorded after the caller read the session is kept: if the stored
// LastSeenAt is later than s.LastSeenAt, the stored LastSeenAt and ExpiresAt
// stay, and ev carries the deadline that stands.
func (st *Store) Update(ctx context.Context, s *sessionbridge.Session, prevVersion uint64, ev sessionbridge.Event) error {
	if s == nil {
		return fmt.Errorf("memory: update session: nil session")
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	e, ok := st.sessions[s.ID]
	if !ok {
		return fmt.Errorf("memory: update session %q: %w", s.ID, sessionbridge.ErrNotFound)
	}
	if e.s.Version != prevVersion {
		return fmt.Errorf("memory: update session %q: version %d, expected %d: %w",
			s.ID, e.s.Version, prevVersion, sessionbridge.ErrVersionConflict)
	}
	if s.UserID != e.s.UserID {
		return fmt.Errorf("memory: update session %q: the user of a session cannot change", s.ID)
	}
	next := s.Clone()
	if e.s.LastSeenAt.After(next.LastSeenAt) {
		next.LastSeenAt, next.ExpiresAt = e.s.LastSeenAt, e.s.ExpiresAt
		if !ev.ExpiresAt.IsZero() {
			ev.ExpiresAt = next.Deadline()
		}
	}
	e.s = next
	heap.Fix(&st.expiry, e.index)
	st.writes.Add(1)
	return st.publish(ctx, fill(ev, sessionbridge.EventUpdated, next))
}

// Touch sets the session's LastSeenAt to seen and ExpiresAt to expiresAt if the
// stored LastSeenAt is before ifSeenBefore, moving its place in the expiry
// index, and then publishes ev. It reports whether it wrote. A session already
// past its deadline at seen is not brought back: Touch reports false and leaves
// it to expire.
func (st *Store) Touch(ctx context.Context, id string, seen, expiresAt, ifSeenBefore time.Time, ev sessionbridge.Event) (bool, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	e, ok := st.sessions[id]
	if !ok {
		return false, fmt.Errorf("memory: touch session %q: %w", id, sessionbridge.ErrNotFound)
	}
	if !e.s.LastSeenAt.Before(ifSeenBefore) || !seen.Before(e.s.Deadline()) {
		return false, nil
	}
	e.s.LastSeenAt, e.s.ExpiresAt = seen, expiresAt
	heap.Fix(&st.expiry, e.index)
	ev.Version = e.s.Version
	st.writes.Add(1)
	return true, st.publish(ctx, fill(ev, sessionbridge.EventUpdated, e.s))
}

// Delete removes the session and publishes ev (with the session's user, and
// the version it had, filled in where ev has none). It returns the removed
// session, or an error wrapping sessionbridge.ErrNotFound.
func (st *Store) Delete(ctx context.Context, id string, ev sessionbridge.Event) (*sessionbridge.Session, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	e, ok := st.sessions[id]
	if !ok {
		return nil, fmt.Errorf("memory: delete session %q: %w", id, sessionbridge.ErrNotFound)
	}
	st.remove(e)
	st.writes.Add(1)
	if ev.Version == 0 {
		ev.Version = e.s.Version
	}
	return e.s, st.publish(ctx, fill(ev, sessionbridge.EventDeleted, e.s))
}

// Rotate atomically replaces the session oldID by a copy of s and publishes
// deleted, then created. It returns an error wrapping sessionbridge.ErrNotFound
// if oldID is gone, sessionbridge.ErrVersionConflict if the stored session
// changed since s was read from it (its Version is not s.Version-1, or a
// later touch was recorded), sessionbridge.ErrExists if s.ID is taken, and
// an error if s names another user; then nothing changes.
func (st *Store) Rotate(ctx context.Context, oldID string, s *sessionbridge.Session, deleted, created sessionbridge.Event) error {
	if s == nil || s.ID == "" {
		return fmt.Errorf("memory: rotate session: empty session id")
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	e, ok := st.sessions[oldID]
	if !ok {
		return fmt.Errorf("memory: rotate session %q: %w", oldID, sessionbridge.ErrNotFound)
	}
	if s.UserID != e.s.UserID {
		return fmt.Errorf("memory: rotate session %q: the user of a session cannot change", oldID)
	}
	if e.s.Version+1 != s.Version || e.s.LastSeenAt.After(s.LastSeenAt) {
		return fmt.Errorf("memory: rotate session %q: version %d, rotating version %d: %w",
			oldID, e.s.Version, s.Version, sessionbridge.ErrVersionConflict)
	}
	if _, ok := st.sessions[s.ID]; ok {
		return fmt.Errorf("memory: rotate session %q to %q: %w", oldID, s.ID, sessionbridge.ErrExists)
	}
	st.remove(e)
	next := s.Clone()
	st.insert(next)
	st.writes.Add(1)
	err1 := st.publish(ctx, fill(deleted, sessionbridge.EventDeleted, e.s))
	err2 := st.publish(ctx, fill(created, sessionbridge.EventCreated, next))
	if err1 != nil {
		return err1
	}
	return err2
}

// ListUser returns copies of the sessions of userID, oldest first.
func (st *Store) ListUser(ctx context.Context, userID string) ([]*sessionbridge.Session, error) {
	st.mu.Lock()
	ids := st.users[userID]
	out := make([]*sessionbridge.Session, 0, len(ids))
	for id := range ids {
		out = append(out, st.sessions[id].s.Clone())
	}
	st.mu.Unlock()
	slices.SortFunc(out, func(a, b *sessionbridge.Session) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// ClaimExpired removes up to limit sessions whose deadline is at or before now
// (all of them if limit is not positive), earliest deadline first, and
// publishes for each an expired event made from tmpl with the session's ID,
// user and version filled in. Each session is claimed by exactly one caller.
func (st *Store) ClaimExpired(ctx context.Context, now time.Time, limit int, tmpl sessionbridge.Event) ([]*sessionbridge.Session, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []*sessionbridge.Session
	var firstErr error
	for len(st.expiry) > 0 && (limit <= 0 || len(out) < limit) {
		e := st.expiry[0]
		if e.s.Deadline().After(now) {
			break
		}
		st.remove(e)
		st.writes.Add(1)
		out = append(out, e.s)
		ev := tmpl
		ev.SessionID, ev.UserID, ev.Version = e.s.ID, e.s.UserID, e.s.Version
		if err := st.publish(ctx, fill(ev, sessionbridge.EventExpired, e.s)); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return out, firstErr
}

// Ping reports whether the store is reachable; an in-process store always is.
func (st *Store) Ping(ctx context.Context) error { return nil }

// insert adds s to all indexes; st.mu must be held.
func (st *Store) insert(s *sessionbridge.Session) {
	st.lazyInit()
	e := &entry{s: s}
	st.sessions[s.ID] = e
	st.indexUser(s)
	heap.Push(&st.expiry, e)
}

// remove drops e from all indexes; st.mu must be held.
func (st *Store) remove(e *entry) {
	delete(st.sessions, e.s.ID)
	st.unindexUser(e.s)
	heap.Remove(&st.expiry, e.index)
}

func (st *Store) indexUser(s *sessionbridge.Session) {
	ids := st.users[s.UserID]
	if ids == nil {
		ids = make(map[string]struct{})
		st.users[s.UserID] = ids
	}
	ids[s.ID] = struct{}{}
}

func (st *Store) unindexUser(s *sessionbridge.Session) {
	ids := st.users[s.UserID]
	delete(ids, s.ID)
	if len(ids) == 0 {
		delete(st.users, s.UserID)
	}
}

// fill gives ev the type of the write that publishes it and the session's IDs
// where the caller left them empty, so that subscribers can always route it.
func fill(ev sessionbridge.Event, t sessionbridge.EventType, s *sessionbridge.Session) sessionbridge.Event {
	if ev.Type == "" {
		ev.Type = t
	}
	if ev.SessionID == "" {
		ev.SessionID = s.ID
	}
	if ev.UserID == "" {
		ev.UserID = s.UserID
	}
	return ev
}

// expiryHeap orders entries by deadline, earliest first.
type expiryHeap []*entry

func (h expiryHeap) Len() int { return len(h) }
func (h expiryHeap) Less(i, j int) bool {
	return h[i].s.Deadline().Before(h[j].s.Deadline())
}
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *expiryHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *expiryHeap) Pop() any {
	old := *h
	n := len(old)
	e := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	e.index = -1
	return e
}

var (
	_ sessionbridge.Store          = (*Store)(nil)
	_ sessionbridge.VersionChecker = (*Store)(nil)
)
