package gateway

import (
	"context"
	"errors"
	"slices"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
)

// KeyReader reads API key records for the re-validation of the sockets of
// keys. A key absent from the map is gone: its sockets are closed with 4401
// api_key_revoked. sb.KeyStore implements it, and so does *keys.Manager.
type KeyReader interface {
	GetKeys(ctx context.Context, ids []string) (map[string]*sb.APIKey, error)
}

// mayConnect reports whether scopes allow a socket at all. Scopes that do
// not compile allow nothing (fail closed).
func mayConnect(scopes []string) bool {
	set, err := sb.CompileScopes(scopes)
	return err == nil && set.Allows(sb.ScopeConnect)
}

// joinKey finishes the registration of a connection opened with an API key:
// it closes it at once if the key's sockets are already being closed, gives
// it the key's scopes when this node knows a newer version of the key than
// the one it authenticated with, arms the key's timer for the first socket,
// and reads the key once more when an event about it may have come between
// the authentication and the registration (marked is false when no mark
// could be taken before authenticating, as for tickets).
func (g *Gateway) joinKey(ctx context.Context, c *Conn, marked bool, mark uint64) {
	ke := c.kentry
	if ke == nil {
		return
	}
	c.mu.Lock()
	version := c.p.KeyVersion
	c.mu.Unlock()
	ke.mu.Lock()
	if ke.closeCode != 0 {
		c.closeWith(ke.closeCode, ke.closeReason)
		ke.mu.Unlock()
		return
	}
	if ke.version > version {
		// replaceScopes closes the socket 4403 if the key lost ws:connect.
		c.replaceScopes(nonNil(slices.Clone(ke.scopes)), nil)
	}
	if !ke.synced {
		ke.synced = true
		g.scheduleKeyLocked(ke)
	}
	ke.mu.Unlock()
	if g.cfg.KeyStore != nil && (!marked || g.marks.mark(ke.id) != mark) {
		// An event about this key that arrived between the authentication
		// and the registration found no socket to apply to.
		found, err := g.cfg.KeyStore.GetKeys(ctx, []string{ke.id})
		g.reconcileKey(ke, found[ke.id], err)
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// onKeyUpdated applies an apikey:updated event: new scopes are pushed as
// scopes.updated (or close the key's sockets with 4403 when ws:connect is
// lost), a new expiry moves the key's timer. An event that skipped a
// version has the key read from the store.
func (g *Gateway) onKeyUpdated(ev sb.Event) bool {
	ke := g.reg.key(ev.KeyID)
	if ke == nil {
		return false
	}
	ke.mu.Lock()
	defer ke.mu.Unlock()
	if ke.removed || ke.closeCode != 0 {
		return false
	}
	switch {
	case ev.Version != 0 && ev.Version <= ke.version:
		return false
	case ev.Version == ke.version+1 || g.cfg.KeyStore == nil:
		// The next version, or no store to ask: the event says what changed.
		ke.version = ev.Version
		if ev.Scopes != nil {
			g.setKeyScopesLocked(ke, ev.Scopes)
		}
		if !ev.ExpiresAt.IsZero() && !ev.ExpiresAt.Equal(ke.expiresAt) {
			ke.expiresAt = ev.ExpiresAt
			g.scheduleKeyLocked(ke)
		}
		return true
	}
	g.refreshKeyLocked(ke)
	return true
}

// setKeyScopesLocked installs scopes as the key's and pushes scopes.updated,
// encoded once, to each of its sockets, or closes them all with 4403
// forbidden when the scopes no longer allow a socket. The caller holds
// ke.mu.
func (g *Gateway) setKeyScopesLocked(ke *keyEntry, scopes []string) {
	ke.scopes = slices.Clone(scopes)
	if !mayConnect(scopes) {
		g.closeKeyLocked(ke, CloseForbidden, ReasonForbidden, "lost "+sb.ScopeConnect)
		return
	}
	set, err := sb.CompileScopes(scopes)
	if err != nil { // mayConnect compiled them: not reached
		g.closeKeyLocked(ke, CloseForbidden, ReasonForbidden, "scopes do not compile")
		return
	}
	ke.forEachConnLocked(func(c *Conn) {
		c.replaceScopes(nonNil(slices.Clone(scopes)), &set)
	})
}

// refreshKeyLocked re-reads a key in the background, coalescing concurrent
// requests. The caller holds ke.mu.
func (g *Gateway) refreshKeyLocked(ke *keyEntry) {
	if ke.refreshing {
		ke.refreshAgain = true
		return
	}
	if !g.enter() {
		return
	}
	ke.refreshing = true
	go func() {
		defer g.wg.Done()
		for {
			ctx, cancel := context.WithTimeout(g.baseCtx, g.writeTimeout)
			found, err := g.cfg.KeyStore.GetKeys(ctx, []string{ke.id})
			cancel()
			g.reconcileKey(ke, found[ke.id], err)
			ke.mu.Lock()
			again := ke.refreshAgain && !ke.removed
			ke.refreshAgain = false
			if !again {
				ke.refreshing = false
			}
			ke.mu.Unlock()
			if !again {
				return
			}
		}
	}()
}

// reconcileKey brings a key's entry in line with the store: k is the key as
// read (nil if it is gone) and err the read's error. A gone or expired key
// closes its sockets with 4401 api_key_revoked; a newer version installs
// its scopes and expiry. A store error changes nothing. It reports whether
// it closed the key's sockets.
func (g *Gateway) reconcileKey(ke *keyEntry, k *sb.APIKey, err error) bool {
	switch {
	case err != nil && !errors.Is(err, sb.ErrKeyNotFound):
		g.log.Warn("gateway: re-reading api key", "key_id", ke.id, "err", err)
		return false
	case err != nil || k == nil:
		return g.closeKeyEntry(ke, CloseReauthenticate, ReasonAPIKeyRevoked, "gone") > 0
	case k.Expired(g.clock.Now()):
		return g.closeKeyEntry(ke, CloseReauthenticate, ReasonAPIKeyRevoked, "expired") > 0
	}
	ke.mu.Lock()
	defer ke.mu.Unlock()
	if ke.removed || ke.closeCode != 0 || k.Version <= ke.version && ke.version != 0 {
		return false
	}
	ke.version = k.Version
	if !k.ExpiresAt.Equal(ke.expiresAt) {
		ke.expiresAt = k.ExpiresAt
		g.scheduleKeyLocked(ke)
	}
	if !slices.Equal(k.Scopes, ke.scopes) {
		g.setKeyScopesLocked(ke, k.Scopes)
		return ke.closeCode != 0
	}
	return false
}

// closeKey closes every local socket of an API key; it returns how many.
func (g *Gateway) closeKey(id string, code int, reason, why string) int {
	ke := g.reg.key(id)
	if ke == nil {
		return 0
	}
	return g.closeKeyEntry(ke, code, reason, why)
}

func (g *Gateway) closeKeyEntry(ke *keyEntry, code int, reason, why string) int {
	ke.mu.Lock()
	defer ke.mu.Unlock()
	return g.closeKeyLocked(ke, code, reason, why)
}

// closeKeyLocked closes the key's sockets and remembers why, so that a
// socket joining the entry before the last of them has left is closed the
// same way. The caller holds ke.mu.
func (g *Gateway) closeKeyLocked(ke *keyEntry, code int, reason, why string) int {
	if ke.removed || ke.closeCode != 0 {
		return 0
	}
	n := 0
	ke.closeCode, ke.closeReason = code, reason
	ke.forEachConnLocked(func(c *Conn) {
		c.closeNow(code, reason)
		n++
	})
	if ke.timer != nil {
		ke.timer.Stop()
		ke.timer = nil
	}
	if n > 0 {
		g.log.Info("gateway: closed the connections of an api key", "key_id", ke.id,
			"connections", n, "code", code, "reason", reason, "why", why)
	}
	return n
}

// revalidateKeys checks every local API key against the store, in batches
// of resyncBatch IDs per GetKeys call, and returns how many keys' sockets it
// closed, and false if the store could not be read: the sockets then stay
// open and Run tries again.
func (g *Gateway) revalidateKeys(ctx context.Context, trigger string) (closed int, ok bool) {
	ks := g.cfg.KeyStore
	if ks == nil {
		return 0, true
	}
	ids := g.reg.keyIDs()
	ok = true
	for len(ids) > 0 {
		batch := ids[:min(len(ids), resyncBatch)]
		ids = ids[len(batch):]
		cctx, cancel := context.WithTimeout(ctx, g.writeTimeout)
		found, err := ks.GetKeys(cctx, batch)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				g.log.Warn("gateway: re-validating api keys; keeping sockets open and trying again", "trigger", trigger, "err", err)
			}
			ok = false
			break
		}
		for _, id := range batch {
			if ke := g.reg.key(id); ke != nil && g.reconcileKey(ke, found[id], nil) {
				closed++
			}
		}
	}
	return closed, ok
}

// scheduleKeyLocked (re)arms the key's timer for its current expiry: an
// api_key.expiring warning ExpiryWarning before it (once per expiry), then
// the expiry itself, which closes the key's sockets with 4401
// api_key_revoked. The caller holds ke.mu.
func (g *Gateway) scheduleKeyLocked(ke *keyEntry) {
	if ke.removed || ke.closeCode != 0 {
		return
	}
	deadline := ke.expiresAt
	if deadline.IsZero() {
		if ke.timer != nil {
			ke.timer.Stop()
			ke.timer = nil
		}
		return
	}
	now := g.clock.Now()
	warn := g.warning > 0 && !ke.warnedFor.Equal(deadline) && now.Before(deadline)
	if ke.timer != nil {
		if ke.timerDeadline.Equal(deadline) && ke.timerWarn == warn {
			return
		}
		ke.timer.Stop()
	}
	at := deadline
	if warn {
		at = deadline.Add(-g.warning)
	}
	ke.timerDeadline, ke.timerWarn = deadline, warn
	ke.timer = g.clock.AfterFunc(max(at.Sub(now), 0), func() { g.onKeyTimer(ke, deadline, warn) })
}

// onKeyTimer runs at a key's warning time or expiry. A key's expiry only
// ever moves earlier (a roll), and every move comes as an event or through
// a re-validation, so the local deadline decides without a store read.
func (g *Gateway) onKeyTimer(ke *keyEntry, deadline time.Time, warn bool) {
	if !g.enter() {
		return
	}
	defer g.wg.Done()
	ke.mu.Lock()
	defer ke.mu.Unlock()
	if ke.removed || ke.closeCode != 0 || !ke.expiresAt.Equal(deadline) || ke.timerWarn != warn || !ke.timerDeadline.Equal(deadline) {
		return
	}
	ke.timer = nil
	if !warn {
		g.closeKeyLocked(ke, CloseReauthenticate, ReasonAPIKeyRevoked, "expired")
		return
	}
	if b, err := encodeFrame(TypeAPIKeyExpiring, "", expiringData{ExpiresAt: deadline.UTC()}); err == nil {
		ke.forEachConnLocked(func(c *Conn) { _ = c.enqueue(b) })
	}
	ke.warnedFor = deadline
	g.scheduleKeyLocked(ke)
}
