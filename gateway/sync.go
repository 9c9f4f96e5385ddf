package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
)

// Run keeps this node's sockets in step with the sessions and API keys they
// belong to: it subscribes the gateway to the bus (so that HandleEvent and
// HandleGap see every event) and re-validates every local session and key
// each SweepInterval. It
// returns when ctx is done, with every goroutine it started ended. Call it
// once per Gateway: a second concurrent Run would deliver messages twice.
// With a cluster presence, Run keeps this node's share of it current too.
func (g *Gateway) Run(ctx context.Context) error {
	defer g.runPresence(ctx)()
	subDone := make(chan struct{})
	go func() {
		defer close(subDone)
		backoff := 100 * time.Millisecond
		for {
			err := g.bus.Subscribe(ctx, g)
			if ctx.Err() != nil {
				return
			}
			g.log.Warn("gateway: bus subscription ended; resubscribing", "err", err, "in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(backoff*2, 10*time.Second)
		}
	}()
	t := time.NewTicker(g.sweep)
	defer t.Stop()
	// A re-validation that could not read the store is tried again with
	// back-off, not left to the next sweep: after a gap the events it covers
	// are lost, and the store is often still partly away then (a Cluster
	// shard failing over while the subscription is already back).
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	backoff := minResyncRetry
	for {
		ok := true
		select {
		case <-ctx.Done():
			<-subDone
			return ctx.Err()
		case <-t.C:
			ok = g.revalidate(ctx, "sweep")
		case <-g.resync:
			ok = g.revalidate(ctx, "gap")
		case <-retry.C:
			ok = g.revalidate(ctx, "gap") && g.revalidateFollowed(ctx)
		case <-g.followKick:
			ok = g.revalidateFollowed(ctx)
		}
		if ok {
			backoff = minResyncRetry
			continue
		}
		retry.Reset(backoff)
		backoff = min(backoff*2, maxResyncRetry)
	}
}

// Back-off of a re-validation that could not read the store.
const (
	minResyncRetry = 100 * time.Millisecond
	maxResyncRetry = 5 * time.Second
)

// HandleEvent applies one bus event to the local sockets. It implements
// sb.EventHandler; it never blocks on a socket (frames go to bounded queues)
// and touches the store only when an update arrived out of order.
func (g *Gateway) HandleEvent(ev sb.Event) {
	g.metrics.EventReceived(string(ev.Type))
	if ev.Type.IsKey() {
		// The verification cache first, then the mark: an upgrade that sees
		// the mark unmoved verified its key after the cache dropped it.
		if h := g.cfg.KeyEvents; h != nil {
			h.HandleEvent(ev)
		}
		g.marks.note(ev.KeyID)
	} else if ev.Type != sb.EventMessage {
		// Before the registry lookup, so that an upgrade in progress either
		// sees the mark move or has its socket found (see eventMarks).
		g.marks.note(ev.SessionID)
	}
	applied := false
	switch ev.Type {
	case sb.EventUpdated:
		applied = g.onUpdated(ev)
	case sb.EventDeleted:
		applied = g.closeSession(ev.SessionID, CloseReauthenticate, ReasonSessionRevoked, ev.Reason) > 0
	case sb.EventExpired:
		applied = g.closeSession(ev.SessionID, CloseReauthenticate, ReasonSessionExpired, "expired") > 0
	case sb.EventMessage:
		applied = g.onMessage(ev)
	case sb.EventKeyUpdated:
		applied = g.onKeyUpdated(ev)
	case sb.EventKeyDeleted:
		applied = g.closeKey(ev.KeyID, CloseReauthenticate, ReasonAPIKeyRevoked, "revoked") > 0
	case sb.EventKeyExpired:
		applied = g.closeKey(ev.KeyID, CloseReauthenticate, ReasonAPIKeyRevoked, "expired") > 0
	case sb.EventCreated:
	}
	if applied {
		g.metrics.EventApplied(string(ev.Type))
		if !ev.Timestamp.IsZero() {
			g.metrics.ApplyLag(g.clock.Now().Sub(ev.Timestamp))
		}
	}
}

// HandleGap asks Run to re-validate every local session and API key against
// the store: events may have been lost. It returns at once.
func (g *Gateway) HandleGap() {
	if h := g.cfg.KeyEvents; h != nil {
		h.HandleGap()
	}
	g.marks.gap()
	select {
	case g.resync <- struct{}{}:
	default:
	}
}

// HandleFollowed re-validates the local sessions among topics against the
// store: the bus delivers their events from now on, and may have missed
// some before (an event published between a socket's authentication and the
// subscription, or during a reconnect). It implements sb.FollowHandler and
// returns at once; Run does the reading, in batches.
func (g *Gateway) HandleFollowed(topics []sb.Topic) {
	g.followMu.Lock()
	for _, t := range topics {
		if t.Kind == sb.TopicSession {
			// An upgrade of this session in progress re-reads it, as if an
			// event had arrived (see eventMarks).
			g.marks.note(t.ID)
			g.followed = append(g.followed, t.ID)
		}
	}
	g.followMu.Unlock()
	select {
	case g.followKick <- struct{}{}:
	default:
	}
}

var _ sb.FollowHandler = (*Gateway)(nil)

// revalidateFollowed re-validates the sessions HandleFollowed queued; those
// it could not read stay queued for the retry.
func (g *Gateway) revalidateFollowed(ctx context.Context) bool {
	g.followMu.Lock()
	ids := g.followed
	g.followed = nil
	g.followMu.Unlock()
	if len(ids) == 0 {
		return true
	}
	g.metrics.Resync("follow")
	closed, rest := g.revalidateSessions(ctx, "follow", ids)
	if closed > 0 {
		g.metrics.ResyncClosed(closed)
	}
	if len(rest) == 0 {
		return true
	}
	g.followMu.Lock()
	g.followed = append(g.followed, rest...)
	g.followMu.Unlock()
	return false
}

func (g *Gateway) onUpdated(ev sb.Event) bool {
	e := g.reg.session(ev.SessionID)
	if e == nil {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.removed {
		return false
	}
	if len(ev.Updates) == 0 {
		// A touch: only the deadline and last activity move.
		moved := false
		if ev.Timestamp.After(e.sess.LastSeenAt) {
			e.sess.LastSeenAt = ev.Timestamp
		}
		if ev.ExpiresAt.After(e.sess.ExpiresAt) {
			e.sess.ExpiresAt = ev.ExpiresAt
			g.scheduleLocked(e)
			moved = true
		}
		return moved
	}
	switch {
	case ev.Version != 0 && ev.Version <= e.sess.Version:
		// Already applied here (this node's own update, or a re-read).
		return false
	case ev.Version == e.sess.Version+1:
		data, err := sb.MergePatch(e.sess.Data, ev.Updates)
		if err == nil {
			next := e.sess.Clone()
			next.Data, next.Version = data, ev.Version
			if ev.Scopes != nil {
				next.Scopes = slices.Clone(ev.Scopes)
			}
			if ev.ExpiresAt.After(next.ExpiresAt) {
				next.ExpiresAt = ev.ExpiresAt
			}
			g.setSessionLocked(e, next, ev.Source, ev.ConnectionID)
			e.partial = e.partial || ev.Scopes == nil
			return true
		}
	}
	// A version was skipped (or the patch does not apply): read the store.
	g.refreshLocked(e, ev.Source)
	return true
}

// refreshLocked re-reads a session in the background, coalescing concurrent
// requests. The caller holds e.mu.
func (g *Gateway) refreshLocked(e *sessionEntry, src sb.Source) {
	if e.refreshing {
		e.refreshAgain = true
		return
	}
	if !g.enter() {
		return
	}
	e.refreshing = true
	go func() {
		defer g.wg.Done()
		for {
			ctx, cancel := context.WithTimeout(g.baseCtx, g.writeTimeout)
			s, err := g.cfg.Manager.Stored(ctx, e.id)
			cancel()
			g.reconcile(e, s, err, src)
			e.mu.Lock()
			again := e.refreshAgain && !e.removed
			e.refreshAgain = false
			if !again {
				e.refreshing = false
			}
			e.mu.Unlock()
			if !again {
				return
			}
		}
	}()
}

// reconcile brings an entry in line with what the store says: s and err are
// the result of reading it. Gone sessions close 4401 session_revoked, expired
// ones 4401 session_expired; a newer version is pushed as session.updated; a
// moved deadline moves the timer. A store error changes nothing. It reports
// whether it closed the session's sockets.
func (g *Gateway) reconcile(e *sessionEntry, s *sb.Session, err error, src sb.Source) bool {
	switch {
	case errors.Is(err, sb.ErrNotFound):
		return g.closeEntry(e, CloseReauthenticate, ReasonSessionRevoked, "gone") > 0
	case err != nil:
		g.log.Warn("gateway: re-reading session", "session_id", e.id, "err", err)
		return false
	case s.Expired(g.clock.Now()):
		return g.closeEntry(e, CloseReauthenticate, ReasonSessionExpired, "expired") > 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.removed {
		return false
	}
	if s.Version >= e.sess.Version {
		e.partial = false
	}
	if s.Version > e.sess.Version {
		g.setSessionLocked(e, s, src, "")
		return false
	}
	if s.Version == e.sess.Version && !sameScopes(s.Scopes, e.sess.Scopes) {
		// Scopes written without an event that carries them.
		prev := e.sess.Scopes
		e.sess.Scopes = slices.Clone(s.Scopes)
		g.applySessionScopesLocked(e, prev)
	}
	if s.Version == e.sess.Version && !s.Deadline().Equal(e.sess.Deadline()) {
		e.sess.ExpiresAt, e.sess.AbsoluteExpiresAt = s.ExpiresAt, s.AbsoluteExpiresAt
		if s.LastSeenAt.After(e.sess.LastSeenAt) {
			e.sess.LastSeenAt = s.LastSeenAt
		}
		g.scheduleLocked(e)
	}
	return false
}

// applySession records s, the result of an update made on this node, and
// pushes session.updated to the session's sockets but skip.
func (g *Gateway) applySession(e *sessionEntry, s *sb.Session, src sb.Source, skip *Conn) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.removed || s.Version <= e.sess.Version {
		return
	}
	g.setSessionLocked(e, s.Clone(), src, skip.id)
}

// setSessionLocked installs next as the entry's session and pushes
// session.updated, encoded once, to every socket of the session except the
// one whose update it was. The caller holds e.mu.
func (g *Gateway) setSessionLocked(e *sessionEntry, next *sb.Session, src sb.Source, skipConn string) {
	deadlineMoved := !next.Deadline().Equal(e.sess.Deadline())
	if next.LastSeenAt.Before(e.sess.LastSeenAt) {
		next.LastSeenAt = e.sess.LastSeenAt
	}
	next.SecretHash = [32]byte{}
	prevScopes := e.sess.Scopes
	e.sess = next
	defer g.applySessionScopesLocked(e, prevScopes)
	if deadlineMoved {
		g.scheduleLocked(e)
	}
	if src == "" {
		src = sb.SourceSystem
	}
	b, err := encodeFrame(TypeSessionUpdated, "", sessionUpdatedData{Session: next.Public(), Source: src})
	if err != nil {
		g.log.Error("gateway: encoding session.updated", "session_id", e.id, "err", err)
		return
	}
	e.forEachConnLocked(func(c *Conn) {
		if c.id != skipConn {
			_ = c.sendNow(b)
		}
	})
}

// closeSession closes every local socket of a session; it returns how many.
func (g *Gateway) closeSession(id string, code int, reason, why string) int {
	e := g.reg.session(id)
	if e == nil {
		return 0
	}
	return g.closeEntry(e, code, reason, why)
}

func (g *Gateway) closeEntry(e *sessionEntry, code int, reason, why string) int {
	e.mu.Lock()
	n := 0
	var uid string
	if !e.removed {
		uid = e.sess.UserID
		e.closeCode, e.closeReason = code, reason
		e.forEachConnLocked(func(c *Conn) {
			c.closeNow(code, reason)
			n++
		})
		if e.timer != nil {
			e.timer.Stop()
			e.timer = nil
		}
	}
	e.mu.Unlock()
	if n > 0 {
		ev := auditSessionRevoked
		if reason == ReasonSessionExpired {
			ev = auditSessionExpired
		}
		g.audit.Log(context.Background(), ev, auditFields{
			SessionID: e.id, UserID: uid, Reason: why, Source: string(sb.SourceWebSocket),
			Detail: fmt.Sprintf("closed %d local connection(s) with %d %s", n, code, reason),
		})
	}
	return n
}

func (g *Gateway) onMessage(ev sb.Event) bool {
	b, err := encodeFrame(TypeMessage, "", messageData{Data: ev.Data})
	if err != nil {
		g.log.Warn("gateway: dropping message event with invalid data", "err", err)
		return false
	}
	send := func(c *Conn) { _ = c.enqueue(b) }
	if ev.SessionID != "" {
		e := g.reg.session(ev.SessionID)
		if e == nil {
			return false
		}
		e.mu.Lock()
		n := e.n
		e.forEachConnLocked(send)
		e.mu.Unlock()
		return n > 0
	}
	if ev.UserID != "" {
		return g.reg.forUser(ev.UserID, send) > 0
	}
	return false
}

// revalidate checks every local session, then every local API key, against
// the store, in batches of resyncBatch IDs per read. When the store cannot
// be reached the sockets stay open and it reports false: Run tries again.
func (g *Gateway) revalidate(ctx context.Context, trigger string) (ok bool) {
	g.metrics.Resync(trigger)
	closed, ok := g.revalidateKeys(ctx, trigger)
	n, rest := g.revalidateSessions(ctx, trigger, g.reg.sessionIDs())
	closed += n
	ok = ok && len(rest) == 0
	if closed > 0 {
		g.metrics.ResyncClosed(closed)
		g.log.Info("gateway: re-validation closed sessions and api keys", "trigger", trigger, "closed", closed)
	}
	return ok
}

// revalidateSessions reconciles the local sessions among ids with the store,
// resyncBatch IDs per read: it asks which of them are gone or at another
// version than the one held here, and reads whole only those, the ones
// whose local deadline has passed (their timer did not fire, as after a
// pause of the process) and the ones whose version came from an event that
// may not carry every change (see sessionEntry.partial). A touch moves no
// version: a deadline that moved without its event being seen here is found
// by the session's timer, which reads the store before it closes anything.
// It returns how many connections it closed and the IDs it could not read
// (the store was away): their sockets stay open.
func (g *Gateway) revalidateSessions(ctx context.Context, trigger string, ids []string) (closed int, rest []string) {
	held := make([]sb.SessionVersion, 0, min(len(ids), resyncBatch))
	var whole []string
	for len(ids) > 0 {
		batch := ids[:min(len(ids), resyncBatch)]
		held, whole = held[:0], whole[:0]
		now := g.clock.Now()
		for _, id := range batch {
			e := g.reg.session(id)
			if e == nil {
				continue
			}
			e.mu.Lock()
			switch {
			case e.removed:
			case e.partial || e.sess.Expired(now):
				whole = append(whole, id)
			default:
				held = append(held, sb.SessionVersion{ID: id, Version: e.sess.Version})
			}
			e.mu.Unlock()
		}
		n, err := g.reconcileChanged(ctx, held, whole)
		if err != nil {
			if ctx.Err() == nil {
				g.log.Warn("gateway: re-validating sessions; keeping sockets open and trying again", "trigger", trigger, "err", err)
			}
			return closed, ids
		}
		closed += n
		ids = ids[len(batch):]
	}
	return closed, nil
}

// reconcileChanged reads whole, and reconciles, the sessions among held whose
// version moved or which are gone, and those of whole; it reports how many
// connections it closed.
func (g *Gateway) reconcileChanged(ctx context.Context, held []sb.SessionVersion, whole []string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, g.writeTimeout)
	defer cancel()
	read := whole
	if len(held) > 0 {
		changed, err := g.cfg.Manager.ChangedSessions(ctx, held)
		if err != nil {
			return 0, err
		}
		read = append(read, changed...)
	}
	if len(read) == 0 {
		return 0, nil
	}
	found, err := g.cfg.Manager.StoredMany(ctx, read)
	if err != nil {
		return 0, err
	}
	closed := 0
	for _, id := range read {
		e := g.reg.session(id)
		if e == nil {
			continue
		}
		s, ok := found[id]
		var gerr error
		if !ok {
			gerr = sb.ErrNotFound
		}
		if g.reconcile(e, s, gerr, sb.SourceSystem) {
			closed++
		}
	}
	return closed, nil
}

// scheduleLocked (re)arms the session's timer for its current deadline: a
// warning ExpiryWarning before it (once per deadline), then the deadline
// itself. The caller holds e.mu.
func (g *Gateway) scheduleLocked(e *sessionEntry) {
	if e.removed {
		return
	}
	deadline := e.sess.Deadline()
	now := g.clock.Now()
	warn := g.warning > 0 && !e.warnedFor.Equal(deadline) && now.Before(deadline)
	if e.timer != nil {
		if e.timerDeadline.Equal(deadline) && e.timerWarn == warn {
			return
		}
		e.timer.Stop()
	}
	at := deadline
	if warn {
		at = deadline.Add(-g.warning)
	}
	e.timerDeadline, e.timerWarn = deadline, warn
	e.timer = g.clock.AfterFunc(max(at.Sub(now), 0), func() { g.onSessionTimer(e, deadline, warn) })
}

// onSessionTimer runs at a session's warning time or deadline. It re-reads
// the session, since another node may have extended it: then it only moves
// the timer. When the store cannot be read, the local deadline decides (fail
// closed).
func (g *Gateway) onSessionTimer(e *sessionEntry, deadline time.Time, warn bool) {
	if !g.enter() {
		return
	}
	defer g.wg.Done()
	e.mu.Lock()
	stale := e.removed || !e.sess.Deadline().Equal(deadline) || e.timerWarn != warn || !e.timerDeadline.Equal(deadline)
	if !stale {
		e.timer = nil
	}
	e.mu.Unlock()
	if stale {
		return
	}
	ctx, cancel := context.WithTimeout(g.baseCtx, g.writeTimeout)
	s, err := g.cfg.Manager.Stored(ctx, e.id)
	cancel()
	now := g.clock.Now()
	switch {
	case err != nil && !errors.Is(err, sb.ErrNotFound):
		if !now.Before(deadline) {
			g.closeEntry(e, CloseReauthenticate, ReasonSessionExpired, "expired; store unavailable")
			return
		}
		g.log.Warn("gateway: re-reading session at its timer; using the local deadline", "session_id", e.id, "err", err)
	case err != nil:
		if !now.Before(deadline) {
			g.closeEntry(e, CloseReauthenticate, ReasonSessionExpired, "expired")
		} else {
			g.closeEntry(e, CloseReauthenticate, ReasonSessionRevoked, "gone")
		}
		return
	case s.Expired(now):
		g.closeEntry(e, CloseReauthenticate, ReasonSessionExpired, "expired")
		return
	case s.Deadline().After(deadline):
		g.reconcile(e, s, nil, sb.SourceSystem)
		return
	}
	if !now.Before(deadline) {
		// The store's copy is not expired by its own clock but the local
		// deadline has passed: the local deadline wins.
		g.closeEntry(e, CloseReauthenticate, ReasonSessionExpired, "expired")
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.removed || e.timer != nil || !e.sess.Deadline().Equal(deadline) {
		// The deadline moved while the store was read; whoever moved it
		// armed a new timer.
		return
	}
	if warn {
		b, err := encodeFrame(TypeSessionExpiring, "", expiringData{ExpiresAt: deadline.UTC()})
		if err == nil {
			e.forEachConnLocked(func(c *Conn) { _ = c.enqueue(b) })
		}
		e.warnedFor = deadline
	}
	g.scheduleLocked(e)
}
