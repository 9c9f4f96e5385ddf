package redis

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/sessionbridge/sessionbridge"
)

// maxUpdateAttempts bounds how often Update re-applies a touch that landed
// between the caller's read and its write.
const maxUpdateAttempts = 8

// Placeholders that scripts replace with what only Redis knows; see scripts.go.
const (
	phSessionID = "@@sb:session_id@@"
	phUserID    = "@@sb:user_id@@"
	phVersion   = math.MaxUint64
)

// Store is a [sessionbridge.Store] in Redis. Each write and the PUBLISH of its
// event run as one Lua script. Get is served from the client-side cache when
// enabled. Errors wrap sessionbridge.ErrNotFound, ErrExists,
// ErrVersionConflict and ErrUnavailable (Redis unreachable or timing out).
//
// A session this node saw revoked is never read back, even if a Redis
// restart brought it back: the store keeps a journal of revocations (see
// docs/redis.md, "Revocations and Redis restarts").
type Store struct {
	b       *Backend
	sc      scripts
	recent  recent
	journal *journal
	claimMu sync.Mutex
}

var (
	_ sessionbridge.Store          = (*Store)(nil)
	_ sessionbridge.VersionChecker = (*Store)(nil)
)

// Get returns the session with id, or an error wrapping ErrNotFound. With the
// client cache on, a warm read costs no round trip and is at most as old as
// the invalidation delay of the connection (see docs/redis.md); under a
// context made with sessionbridge.WithoutCache it reads Redis and keeps no
// copy.
func (st *Store) Get(ctx context.Context, id string) (*sessionbridge.Session, error) {
	if !sessionbridge.ValidID(id) {
		return nil, fmt.Errorf("redis: get session: %w", sessionbridge.ErrNotFound)
	}
	b := st.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	var res rueidis.RedisResult
	if st.recent.has(id) || !sessionbridge.CacheAllowed(ctx) {
		res = b.client.Do(ctx, b.client.B().Hgetall().Key(b.sessionKey(id)).Build())
	} else {
		res = b.client.DoCache(ctx, b.client.B().Hgetall().Key(b.sessionKey(id)).Cache(), b.cacheTTL)
	}
	m, err := res.AsStrMap()
	if err != nil {
		return nil, b.fail("get", err)
	}
	s, err := decodeSession(m)
	if err != nil {
		return nil, fmt.Errorf("redis: get session: %w", err)
	}
	if s == nil {
		return nil, fmt.Errorf("redis: get session %s: %w", id, sessionbridge.ErrNotFound)
	}
	if st.journal.has(id) {
		// Revoked, yet in Redis: a restart lost the delete. Refuse it and
		// have the revocations written again.
		st.b.wantReapply()
		return nil, fmt.Errorf("redis: get session %s: %w", id, sessionbridge.ErrNotFound)
	}
	if err := b.gate(ctx, s); err != nil {
		return nil, err
	}
	return s, nil
}

// GetMany returns the sessions that exist among ids in one pipelined round
// trip, bypassing the client cache: it is what nodes re-validate with after a
// gap, so it reads the truth. A session whose hash cannot be decoded is
// logged and left out, as if it did not exist.
func (st *Store) GetMany(ctx context.Context, ids []string) (map[string]*sessionbridge.Session, error) {
	out, err := readHashes(ctx, st.b, "get_many", "session", ids, sessionbridge.ValidID, st.b.sessionKey, decodeSession)
	if err != nil {
		return nil, err
	}
	for id, s := range out {
		if st.journal.has(s.ID) {
			st.b.wantReapply()
			delete(out, id)
		}
	}
	return out, nil
}

// ChangedVersions returns the IDs among held whose session is gone or at
// another version (see sessionbridge.VersionChecker): one pipelined HGET of
// the version field per session, bypassing the client cache, instead of the
// whole hash. A session revoked here but back in Redis (a restart lost the
// delete) counts as changed, so that reading it whole finds it gone.
func (st *Store) ChangedVersions(ctx context.Context, held []sessionbridge.SessionVersion) ([]string, error) {
	b := st.b
	var changed []string
	cmds := make(rueidis.Commands, 0, len(held))
	read := make([]sessionbridge.SessionVersion, 0, len(held))
	for _, h := range held {
		if !sessionbridge.ValidID(h.ID) || st.journal.has(h.ID) {
			changed = append(changed, h.ID)
			continue
		}
		read = append(read, h)
		cmds = append(cmds, b.client.B().Hget().Key(b.sessionKey(h.ID)).Field("version").Build())
	}
	if len(cmds) == 0 {
		return changed, nil
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	for i, r := range b.client.DoMulti(ctx, cmds...) {
		v, err := r.ToString()
		switch {
		case rueidis.IsRedisNil(err):
			changed = append(changed, read[i].ID)
		case err != nil:
			return nil, b.fail("changed_versions", err)
		case v != strconv.FormatUint(read[i].Version, 10):
			changed = append(changed, read[i].ID)
		}
	}
	return changed, nil
}

// readHashes reads the hashes of the valid ones among ids in one pipelined
// round trip and decodes them, keyed by ID; missing ones are absent. One
// damaged hash must not stop the reading of all the others (a re-validation
// reads hundreds): it is logged and left out, as if it did not exist, so
// whatever rests on it fails closed.
func readHashes[T any](ctx context.Context, b *Backend, op, what string, ids []string, valid func(string) bool, key func(string) string, decode func(map[string]string) (*T, error)) (map[string]*T, error) {
	out := make(map[string]*T, len(ids))
	cmds := make(rueidis.Commands, 0, len(ids))
	read := make([]string, 0, len(ids))
	for _, id := range ids {
		if valid(id) {
			read = append(read, id)
			cmds = append(cmds, b.client.B().Hgetall().Key(key(id)).Build())
		}
	}
	if len(cmds) == 0 {
		return out, nil
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	for i, r := range b.client.DoMulti(ctx, cmds...) {
		m, err := r.AsStrMap()
		if err != nil {
			return nil, b.fail(op, err)
		}
		v, err := decode(m)
		if err != nil {
			b.log.Error("redis: skipping an undecodable "+what, "id", read[i], "err", err)
			continue
		}
		if v != nil {
			out[read[i]] = v
		}
	}
	return out, nil
}

// fillEvent gives ev the IDs of s where the caller left them empty, so that
// subscribers can always route it.
func fillEvent(ev sessionbridge.Event, s *sessionbridge.Session) sessionbridge.Event {
	if ev.SessionID == "" {
		ev.SessionID = s.ID
	}
	if ev.UserID == "" {
		ev.UserID = s.UserID
	}
	return ev
}

// placeholders marks the fields of ev that a script fills in and returns the
// flags telling it which.
func placeholders(ev sessionbridge.Event, sid, version bool) (sessionbridge.Event, string) {
	flags := ""
	if sid && ev.SessionID == "" {
		ev.SessionID, flags = phSessionID, flags+"s"
	}
	if ev.UserID == "" {
		ev.UserID, flags = phUserID, flags+"u"
	}
	if version {
		ev.Version, flags = phVersion, flags+"v"
	}
	return ev, flags
}

// typedEvent is an event's payload: its JSON with its type, since a shard
// channel carries events of every type about its session or user.
type typedEvent struct {
	Type sessionbridge.EventType `json:"type"`
	sessionbridge.Event
}

func marshalEvent(ev sessionbridge.Event) (string, error) {
	p, err := json.Marshal(typedEvent{Type: ev.Type, Event: ev})
	if err != nil {
		return "", fmt.Errorf("encode event: %w", err)
	}
	return string(p), nil
}

func (st *Store) keyExpiry(s *sessionbridge.Session) string {
	return strconv.FormatInt(s.Deadline().Add(st.b.grace).UnixMilli(), 10)
}

// Create stores s and publishes ev in one script. ErrExists if the ID is taken.
func (st *Store) Create(ctx context.Context, s *sessionbridge.Session, ev sessionbridge.Event) error {
	if s == nil || !sessionbridge.ValidID(s.ID) {
		return errors.New("redis: create session: invalid session id")
	}
	if sessionbridge.ShardOfID(s.ID) != sessionbridge.Shard(s.UserID) {
		return fmt.Errorf("redis: create session %s: id is not of the user's shard", s.ID)
	}
	b := st.b
	ev.Type = sessionbridge.EventCreated
	payload, err := marshalEvent(fillEvent(ev, s))
	if err != nil {
		return fmt.Errorf("redis: create session: %w", err)
	}
	fields, err := sessionFields(s)
	if err != nil {
		return fmt.Errorf("redis: create session: %w", err)
	}
	shard := sessionbridge.ShardOfID(s.ID)
	args := append([]string{b.userChannel(s.UserID), payload, s.ID, millis(s.Deadline()), st.keyExpiry(s)}, fields...)
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	st.recent.mark(s.ID)
	n, err := st.sc.create.Exec(ctx, b.client, []string{b.sessionKey(s.ID), b.userKey(s.UserID), b.expiryKey(shard)}, args).AsInt64()
	if err != nil {
		return b.fail("create", err)
	}
	b.wrote(b.expiryKey(shard), s.Deadline())
	if n == 0 {
		return fmt.Errorf("redis: create session %s: %w", s.ID, sessionbridge.ErrExists)
	}
	b.metrics.EventPublished(string(sessionbridge.EventCreated))
	return nil
}

// Update replaces the session by s if its stored version is prevVersion, and
// publishes ev, in one script. It returns an error wrapping ErrNotFound if the
// session is gone (a delete always wins) and ErrVersionConflict if the
// version moved. A touch recorded after the caller read the session is kept:
// its LastSeenAt and ExpiresAt stand, and ev carries the deadline that stands.
func (st *Store) Update(ctx context.Context, s *sessionbridge.Session, prevVersion uint64, ev sessionbridge.Event) error {
	if s == nil || !sessionbridge.ValidID(s.ID) {
		return fmt.Errorf("redis: update session: %w", sessionbridge.ErrNotFound)
	}
	b := st.b
	ev.Type = sessionbridge.EventUpdated
	ev = fillEvent(ev, s)
	next := s.Clone()
	shard := sessionbridge.ShardOfID(s.ID)
	keys := []string{b.sessionKey(s.ID), b.userKey(s.UserID), b.expiryKey(shard)}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	for range maxUpdateAttempts {
		payload, err := marshalEvent(ev)
		if err != nil {
			return fmt.Errorf("redis: update session: %w", err)
		}
		fields, err := sessionFields(next)
		if err != nil {
			return fmt.Errorf("redis: update session: %w", err)
		}
		args := append([]string{
			b.sessionChannel(s.ID), payload, strconv.FormatUint(prevVersion, 10),
			nanos(next.LastSeenAt), millis(next.Deadline()), st.keyExpiry(next), next.ID, next.UserID,
		}, fields...)
		st.recent.mark(s.ID)
		res, err := st.sc.update.Exec(ctx, b.client, keys, args).ToArray()
		if err != nil {
			return b.fail("update", err)
		}
		code, err := res[0].AsInt64()
		if err != nil {
			return fmt.Errorf("redis: update session: %w", err)
		}
		switch code {
		case 1:
			b.metrics.EventPublished(string(sessionbridge.EventUpdated))
			return nil
		case 0:
			return fmt.Errorf("redis: update session %s: %w", s.ID, sessionbridge.ErrNotFound)
		case -1:
			return fmt.Errorf("redis: update session %s: %w", s.ID, sessionbridge.ErrVersionConflict)
		case -3:
			return fmt.Errorf("redis: update session %s: the user of a session cannot change", s.ID)
		case -2:
			// A touch landed after the caller's read; keep it and try again.
			seen, err1 := res[1].ToString()
			exp, err2 := res[2].ToString()
			if err := errors.Join(err1, err2); err != nil {
				return fmt.Errorf("redis: update session: %w", err)
			}
			if next.LastSeenAt, err = parseNanos(seen); err != nil {
				return fmt.Errorf("redis: update session: %w", err)
			}
			if next.ExpiresAt, err = parseNanos(exp); err != nil {
				return fmt.Errorf("redis: update session: %w", err)
			}
			if !ev.ExpiresAt.IsZero() {
				ev.ExpiresAt = next.Deadline()
			}
		default:
			return fmt.Errorf("redis: update session: unexpected script result %d", code)
		}
	}
	return fmt.Errorf("redis: update session %s: %w", s.ID, sessionbridge.ErrVersionConflict)
}

// Touch sets LastSeenAt to seen and ExpiresAt to expiresAt if the stored
// LastSeenAt is before ifSeenBefore and the session is not already past its
// deadline at seen, moves its place in the expiry index and publishes ev with
// the stored version, all in one script. It reports whether it wrote.
func (st *Store) Touch(ctx context.Context, id string, seen, expiresAt, ifSeenBefore time.Time, ev sessionbridge.Event) (bool, error) {
	if !sessionbridge.ValidID(id) {
		return false, fmt.Errorf("redis: touch session: %w", sessionbridge.ErrNotFound)
	}
	b := st.b
	ev.Type = sessionbridge.EventUpdated
	ev, flags := placeholders(ev, true, true)
	payload, err := marshalEvent(ev)
	if err != nil {
		return false, fmt.Errorf("redis: touch session: %w", err)
	}
	shard := sessionbridge.ShardOfID(id)
	args := []string{
		b.sessionChannel(id), payload, flags,
		nanos(seen), nanos(expiresAt), nanos(ifSeenBefore),
		strconv.FormatInt(b.grace.Milliseconds(), 10), id, b.userKeyPrefix(shard),
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	st.recent.mark(id)
	n, err := st.sc.touch.Exec(ctx, b.client, []string{b.sessionKey(id), b.expiryKey(shard)}, args).AsInt64()
	if err != nil {
		return false, b.fail("touch", err)
	}
	switch n {
	case 1:
		b.metrics.EventPublished(string(sessionbridge.EventUpdated))
		return true, nil
	case -1:
		return false, fmt.Errorf("redis: touch session %s: %w", id, sessionbridge.ErrNotFound)
	}
	return false, nil
}

// Delete removes the session and publishes ev (with the session's user, and
// the version it had, filled in where ev has none) in one script, and returns
// the removed session; ErrNotFound if it was gone.
func (st *Store) Delete(ctx context.Context, id string, ev sessionbridge.Event) (*sessionbridge.Session, error) {
	if !sessionbridge.ValidID(id) {
		return nil, fmt.Errorf("redis: delete session: %w", sessionbridge.ErrNotFound)
	}
	b := st.b
	ev.Type = sessionbridge.EventDeleted
	ev, flags := placeholders(ev, true, ev.Version == 0)
	payload, err := marshalEvent(ev)
	if err != nil {
		return nil, fmt.Errorf("redis: delete session: %w", err)
	}
	shard := sessionbridge.ShardOfID(id)
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	st.recent.mark(id)
	kv, err := st.sc.del.Exec(ctx, b.client,
		[]string{b.sessionKey(id), b.expiryKey(shard)},
		[]string{b.sessionChannel(id), payload, flags, id, b.userKeyPrefix(shard)},
	).AsStrSlice()
	if err != nil {
		err = b.fail("delete", err)
		if errors.Is(err, sessionbridge.ErrUnavailable) {
			// The delete may have been applied. A revocation asked for is
			// kept either way: this node refuses the session from now on,
			// and writes the delete again if it finds the session in Redis.
			st.remember(id, time.Time{}, false)
		}
		return nil, err
	}
	if len(kv) == 0 {
		return nil, fmt.Errorf("redis: delete session %s: %w", id, sessionbridge.ErrNotFound)
	}
	b.metrics.EventPublished(string(sessionbridge.EventDeleted))
	s, err := decodeFlat(kv)
	if err != nil {
		st.remember(id, time.Time{}, false)
		return nil, fmt.Errorf("redis: delete session: %w", err)
	}
	st.remember(id, s.Deadline(), false)
	return s, nil
}

// remember journals id as revoked until deadline, the session's deadline at
// the revocation: a copy that a restart brings back is older, so its
// deadline is no later. A zero deadline (not known) means the longest a
// session lives. onlyIfAbsent keeps an entry already there as it is.
func (st *Store) remember(id string, deadline time.Time, onlyIfAbsent bool) {
	now := time.Now()
	if deadline.IsZero() {
		deadline = now.Add(st.b.opts.MaxSessionLifetime)
	}
	before := st.journal.droppedCount()
	if after := st.journal.add(id, deadline, now, onlyIfAbsent); after > before && (before == 0 || after/1000 > before/1000) {
		// The first drop, then one line per thousand.
		st.b.log.Warn("redis: revocation journal full; forgetting the revocations closest to their expiry, which a Redis restart that loses writes could undo",
			"journal_size", st.b.opts.RevocationJournal, "forgotten", after)
	}
}

// reapply writes every journaled revocation to Redis again, with the delete
// script, so that a session a restart brought back is deleted and its
// deleted event published (every node closes its sockets). It returns how
// many sessions it found and deleted.
func (st *Store) reapply(ctx context.Context) (int, error) {
	b := st.b
	ids := st.journal.ids(time.Now())
	ev := sessionbridge.Event{
		Type: sessionbridge.EventDeleted, Source: sessionbridge.SourceSystem, NodeID: b.nodeID,
		Timestamp: time.Now(), Reason: sessionbridge.ReasonRevoked,
	}
	revived := 0
	for len(ids) > 0 {
		batch := ids[:min(len(ids), reapplyBatch)]
		ids = ids[len(batch):]
		stmts := make([]rueidis.LuaExec, len(batch))
		for i, id := range batch {
			e := ev
			e.SessionID = id
			e, flags := placeholders(e, false, true)
			payload, err := marshalEvent(e)
			if err != nil {
				return revived, fmt.Errorf("redis: reapply revocations: %w", err)
			}
			shard := sessionbridge.ShardOfID(id)
			stmts[i] = rueidis.LuaExec{
				Keys: []string{b.sessionKey(id), b.expiryKey(shard)},
				Args: []string{b.sessionChannel(id), payload, flags, id, b.userKeyPrefix(shard)},
			}
		}
		cctx, cancel := b.opCtx(ctx)
		st.recent.mark(batch...)
		res := st.sc.del.ExecMulti(cctx, b.client, stmts...)
		cancel()
		for _, r := range res {
			kv, err := r.AsStrSlice()
			if err != nil {
				return revived, b.fail("reapply", err)
			}
			if len(kv) > 0 {
				revived++
				b.metrics.EventPublished(string(sessionbridge.EventDeleted))
			}
		}
	}
	return revived, nil
}

// Rotate replaces the session oldID by s in one script and publishes deleted,
// then created. ErrNotFound if oldID is gone, ErrVersionConflict if the
// stored session changed since s was read from it (its version is not
// s.Version-1, or a later touch was recorded), ErrExists if s.ID is taken;
// then nothing changes. s must belong to the same user.
func (st *Store) Rotate(ctx context.Context, oldID string, s *sessionbridge.Session, deleted, created sessionbridge.Event) error {
	if s == nil || !sessionbridge.ValidID(s.ID) {
		return errors.New("redis: rotate session: invalid new session id")
	}
	if !sessionbridge.ValidID(oldID) {
		return fmt.Errorf("redis: rotate session: %w", sessionbridge.ErrNotFound)
	}
	if s.Version == 0 {
		return fmt.Errorf("redis: rotate session %s: %w", oldID, sessionbridge.ErrVersionConflict)
	}
	shard := sessionbridge.ShardOfID(s.ID)
	if sessionbridge.ShardOfID(oldID) != shard || sessionbridge.Shard(s.UserID) != shard {
		return fmt.Errorf("redis: rotate session %s: new id is not of the user's shard", oldID)
	}
	b := st.b
	deleted.Type, created.Type = sessionbridge.EventDeleted, sessionbridge.EventCreated
	if deleted.SessionID == "" {
		deleted.SessionID = oldID
	}
	if deleted.UserID == "" {
		deleted.UserID = s.UserID
	}
	if deleted.Reason == "" {
		deleted.Reason = sessionbridge.ReasonRotated
	}
	pDel, err1 := marshalEvent(deleted)
	pCreated, err2 := marshalEvent(fillEvent(created, s))
	fields, err3 := sessionFields(s)
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("redis: rotate session: %w", err)
	}
	args := append([]string{
		b.sessionChannel(oldID), pDel, b.userChannel(s.UserID), pCreated,
		oldID, s.ID, millis(s.Deadline()), st.keyExpiry(s), s.UserID,
		strconv.FormatUint(s.Version-1, 10), nanos(s.LastSeenAt),
	}, fields...)
	keys := []string{b.sessionKey(oldID), b.sessionKey(s.ID), b.userKey(s.UserID), b.expiryKey(shard)}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	st.recent.mark(oldID, s.ID)
	n, err := st.sc.rotate.Exec(ctx, b.client, keys, args).AsInt64()
	if err != nil {
		return b.fail("rotate", err)
	}
	switch n {
	case 1:
		// The old ID is as revoked as a deleted session: a restart must
		// not bring it back beside the new one.
		st.remember(oldID, s.Deadline(), false)
		b.metrics.EventPublished(string(sessionbridge.EventDeleted))
		b.metrics.EventPublished(string(sessionbridge.EventCreated))
		return nil
	case 0:
		return fmt.Errorf("redis: rotate session %s: %w", oldID, sessionbridge.ErrNotFound)
	case -1:
		return fmt.Errorf("redis: rotate session %s to %s: %w", oldID, s.ID, sessionbridge.ErrExists)
	case -2:
		return fmt.Errorf("redis: rotate session %s: %w", oldID, sessionbridge.ErrVersionConflict)
	case -3:
		return fmt.Errorf("redis: rotate session %s: the user of a session cannot change", oldID)
	}
	return fmt.Errorf("redis: rotate session: unexpected script result %d", n)
}

// ListUser returns the sessions of userID, oldest first: one SMEMBERS of the
// user's index, then one pipelined HGETALL per member. Members whose session
// is gone are dropped from the index on the way.
func (st *Store) ListUser(ctx context.Context, userID string) ([]*sessionbridge.Session, error) {
	b := st.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	ukey := b.userKey(userID)
	ids, err := b.client.Do(ctx, b.client.B().Smembers().Key(ukey).Build()).AsStrSlice()
	if err != nil {
		return nil, b.fail("list_user", err)
	}
	got, err := st.GetMany(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]*sessionbridge.Session, 0, len(got))
	var stale []string
	for _, id := range ids {
		if s, ok := got[id]; ok {
			out = append(out, s)
		} else {
			stale = append(stale, id)
		}
	}
	if len(stale) > 0 {
		// Left behind by a key that expired through its backstop TTL; an
		// ID is never reused, so dropping it cannot hide a live session.
		if err := b.client.Do(ctx, b.client.B().Srem().Key(ukey).Member(stale...).Build()).Error(); err != nil {
			b.log.Warn("redis: pruning user index", "err", err)
		}
	}
	slices.SortFunc(out, func(a, c *sessionbridge.Session) int {
		return cmp.Or(a.CreatedAt.Compare(c.CreatedAt), cmp.Compare(a.ID, c.ID))
	})
	return out, nil
}

// claimBatch bounds how many candidates one ClaimExpired round reads per
// shard when the caller sets no limit.
const claimBatch = 1000

// ClaimExpired claims up to limit sessions (all if limit is not positive)
// whose deadline is at or before now, earliest deadline first: it reads the
// candidates of the 256 shard expiry indexes in one pipelined round trip,
// then runs one claim script per shard, which removes each session from every
// index, deletes it and publishes its expired event. A session is claimed by
// exactly one caller on any node: its ZREM is the claim.
func (st *Store) ClaimExpired(ctx context.Context, now time.Time, limit int, tmpl sessionbridge.Event) ([]*sessionbridge.Session, error) {
	// One claim at a time per node: the expiry watch's bookkeeping of a
	// read assumes no other read of the same index is in flight.
	st.claimMu.Lock()
	defer st.claimMu.Unlock()
	var out []*sessionbridge.Session
	for {
		n := limit - len(out)
		if limit <= 0 {
			n = claimBatch
		}
		got, more, err := st.claimRound(ctx, now, n, tmpl)
		out = append(out, got...)
		if err != nil {
			return out, err
		}
		// A round that claimed nothing saw only candidates whose deadline is
		// later than now within the same millisecond: they wait for the next
		// call.
		if !more || len(got) == 0 || limit > 0 && len(out) >= limit {
			return out, nil
		}
	}
}

type candidate struct {
	id, shard string
	score     float64
}

// dueInIndexes reads the per-shard expiry indexes named by index of the
// shards in one pipelined round trip and returns at most n of the members
// due at now, earliest first, grouped by shard (order lists the shards in the
// order of their first member); more reports whether candidates were left
// over.
func (b *Backend) dueInIndexes(ctx context.Context, index func(shard string) string, shards []string, now time.Time, n int, op string) (byShard map[string][]string, order []string, more bool, err error) {
	nowMs := millis(now)
	cmds := make(rueidis.Commands, len(shards))
	for i, sh := range shards {
		cmds[i] = b.client.B().Zrange().Key(index(sh)).Min("-inf").Max(nowMs).Byscore().Limit(0, int64(n)).Withscores().Build()
	}
	var cands []candidate
	for i, r := range b.client.DoMulti(ctx, cmds...) {
		zs, err := r.AsZScores()
		if err != nil {
			return nil, nil, false, b.fail(op, err)
		}
		more = more || len(zs) >= n
		for _, z := range zs {
			cands = append(cands, candidate{id: z.Member, shard: shards[i], score: z.Score})
		}
	}
	slices.SortFunc(cands, func(a, c candidate) int { return cmp.Compare(a.score, c.score) })
	if len(cands) > n {
		cands, more = cands[:n], true
	}
	byShard = map[string][]string{}
	for _, c := range cands {
		if _, ok := byShard[c.shard]; !ok {
			order = append(order, c.shard)
		}
		byShard[c.shard] = append(byShard[c.shard], c.id)
	}
	return byShard, order, more, nil
}

// claimRound claims at most n sessions; more reports whether candidates were
// left over for another round.
func (st *Store) claimRound(ctx context.Context, now time.Time, n int, tmpl sessionbridge.Event) ([]*sessionbridge.Session, bool, error) {
	b := st.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	due, err := b.dueShards(ctx, &b.expiry, b.expiryKey, now, "claim_expired")
	if err != nil || len(due) == 0 {
		return nil, false, err
	}
	byShard, order, more, err := b.dueInIndexes(ctx, b.expiryKey, due, now, n, "claim_expired")
	if err != nil || len(order) == 0 {
		return nil, false, err
	}
	b.expiry.markDue(order, now)
	// Every claimed session has its own IDs and version, whatever the
	// template carried.
	ev := tmpl
	ev.Type = sessionbridge.EventExpired
	ev.SessionID, ev.UserID, ev.Version = phSessionID, phUserID, phVersion
	const flags = "suv"
	payload, err := marshalEvent(ev)
	if err != nil {
		return nil, false, fmt.Errorf("redis: claim expired: %w", err)
	}
	stmts := make([]rueidis.LuaExec, 0, len(order))
	for _, sh := range order {
		args := append([]string{
			b.sessionChannelPrefix(sh), payload, flags, nanos(now), millis(now),
			b.sessionKeyPrefix(sh), b.userKeyPrefix(sh),
		}, byShard[sh]...)
		stmts = append(stmts, rueidis.LuaExec{Keys: []string{b.expiryKey(sh)}, Args: args})
	}
	for _, sh := range order {
		st.recent.mark(byShard[sh]...)
	}
	var out []*sessionbridge.Session
	var firstErr error
	for _, r := range st.sc.claim.ExecMulti(ctx, b.client, stmts...) {
		list, err := r.ToArray()
		if err != nil {
			if firstErr == nil {
				firstErr = b.fail("claim_expired", err)
			}
			continue
		}
		for _, item := range list {
			kv, err := item.AsStrSlice()
			if err != nil {
				return out, false, fmt.Errorf("redis: claim expired: %w", err)
			}
			s, err := decodeFlat(kv)
			if err != nil {
				// Claimed and published all the same; report what we can.
				b.log.Error("redis: decoding a claimed session", "err", err)
				continue
			}
			b.metrics.EventPublished(string(sessionbridge.EventExpired))
			out = append(out, s)
		}
	}
	return out, more, firstErr
}

// TakeExpiryTurn reports whether the caller holds the turn to run the
// periodic expiry claim for the next ttl: one SET NX PX of one key per node
// and interval, so that only one node reads the 256 expiry indexes each
// interval instead of every node. Claims stay exactly-once without it.
//
// A node that did not hold the turn heard no claims of its own in between:
// when it holds it again, it reads every index (see expiryWatch).
func (st *Store) TakeExpiryTurn(ctx context.Context, ttl time.Duration) (bool, error) {
	mine, err := st.b.takeTurn(ctx, "expiry:turn", ttl)
	if !mine {
		st.b.expiry.forget()
	}
	return mine, err
}

// takeTurn sets the key name (under the prefix) to this node's ID for ttl
// unless it is set: true if it was not.
func (b *Backend) takeTurn(ctx context.Context, name string, ttl time.Duration) (bool, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	err := b.client.Do(ctx, b.client.B().Set().Key(b.prefix+name).Value(b.nodeID).Nx().Px(max(ttl, time.Millisecond)).Build()).Error()
	if rueidis.IsRedisNil(err) {
		return false, nil
	}
	if err != nil {
		return false, b.fail("expiry_turn", err)
	}
	return true, nil
}

// Ping reports whether Redis answers.
func (st *Store) Ping(ctx context.Context) error { return st.b.Ping(ctx) }
