package gateway

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"sync"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
)

// registry indexes the live connections of this node by connection, session,
// user and API key ID. Every operation is O(1) apart from the fan-out itself: the
// per-session and per-user lists are intrusive (the links live in Conn), so a
// connection costs no map entry beyond its own.
//
// Lock order: registry.mu, then sessionEntry.mu or keyEntry.mu, then Conn.mu.
type registry struct {
	mu       sync.RWMutex
	conns    map[string]*Conn
	sessions map[string]*sessionEntry
	users    map[string]*userEntry
	keys     map[string]*keyEntry
	// pendingUsers and pendingSessions count the slots reserve gave to
	// upgrades not yet added: with the live counts, they keep the caps exact
	// under concurrent upgrades. Empty at rest, so idle sockets pay nothing.
	pendingUsers    map[string]int
	pendingSessions map[string]int
	// router, if the bus routes events, is told when a session or user
	// gets its first local connection and loses its last.
	router sb.Router
}

// Errors of registry.reserve: which cap an upgrade would pass.
var (
	errUserCap    = errors.New("too many connections for this user")
	errSessionCap = errors.New("too many connections for this session")
)

// userEntry heads the list of a user's connections.
type userEntry struct {
	head *Conn
	n    int
}

// sessionEntry is what this node holds about one session that has live
// connections: the current session (shared by all of them, so that data is
// held once per session, not per socket), the list of connections and the
// session's expiry timer.
type sessionEntry struct {
	id string

	mu   sync.Mutex
	head *Conn
	n    int
	// sess is the latest known state of the session. Only its Data, Version,
	// LastSeenAt, ExpiresAt and AbsoluteExpiresAt are kept current.
	sess *sb.Session
	// removed is set when the last connection left; timers and refreshes
	// that still hold the entry then do nothing.
	removed bool
	// partial is set when sess took a version from an updated event that
	// did not carry the scopes (they need not have changed, but an event
	// written by hand may leave out a change): the next re-validation reads
	// the session whole instead of comparing versions.
	partial bool
	// closeCode and closeReason are set once the session's sockets were
	// closed because it was revoked or expired. Until the last of them has
	// left, the entry stays registered, and a socket that joins it in that
	// time must be closed the same way: the event has already gone by.
	closeCode   int
	closeReason string

	timer         stopper
	timerDeadline time.Time // the deadline the timer was set for
	timerWarn     bool      // whether the pending timer is the warning
	warnedFor     time.Time // the deadline a session.expiring was sent for

	touching     bool
	lastTouchTry time.Time

	refreshing   bool
	refreshAgain bool
}

// keyEntry is what this node holds about one API key that has live
// connections: the key's version, scopes and expiry as last known, the list
// of its connections and the key's expiry timer (one per key, not per
// socket).
type keyEntry struct {
	id string

	mu   sync.Mutex
	head *Conn
	n    int
	// version, scopes and expiresAt are the key as last known here; version
	// 0 means not known (the next event about the key is then checked
	// against the store).
	version   uint64
	scopes    []string
	expiresAt time.Time
	// synced is set once the first connection's registration has armed the
	// timer.
	synced bool
	// removed, closeCode and closeReason: as in sessionEntry.
	removed     bool
	closeCode   int
	closeReason string

	timer         stopper
	timerDeadline time.Time
	timerWarn     bool
	warnedFor     time.Time

	refreshing   bool
	refreshAgain bool
}

func newRegistry() *registry {
	return &registry{
		conns:           make(map[string]*Conn),
		sessions:        make(map[string]*sessionEntry),
		users:           make(map[string]*userEntry),
		keys:            make(map[string]*keyEntry),
		pendingUsers:    make(map[string]int),
		pendingSessions: make(map[string]int),
	}
}

// reserve takes a slot for one more connection of user uid and session sid
// (either may be empty: no cap applies to it), unless the live connections
// and the slots already taken reach perUser or perSession (zero: no cap). The
// slot is then either filled by addReserved or given back by unreserve.
func (r *registry) reserve(uid, sid string, perUser, perSession int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if uid != "" && perUser > 0 {
		n := r.pendingUsers[uid]
		if u := r.users[uid]; u != nil {
			n += u.n
		}
		if n >= perUser {
			return errUserCap
		}
	}
	if sid != "" && perSession > 0 {
		n := r.pendingSessions[sid]
		if e := r.sessions[sid]; e != nil {
			e.mu.Lock()
			n += e.n
			e.mu.Unlock()
		}
		if n >= perSession {
			return errSessionCap
		}
	}
	if uid != "" {
		r.pendingUsers[uid]++
	}
	if sid != "" {
		r.pendingSessions[sid]++
	}
	return nil
}

// unreserve gives back a slot that reserve took for uid and sid.
func (r *registry) unreserve(uid, sid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unreserveLocked(uid, sid)
}

func (r *registry) unreserveLocked(uid, sid string) {
	release := func(m map[string]int, k string) {
		if k == "" {
			return
		}
		if m[k] <= 1 {
			delete(m, k)
		} else {
			m[k]--
		}
	}
	release(r.pendingUsers, uid)
	release(r.pendingSessions, sid)
}

// addReserved is add for a connection that reserve took a slot for: the slot
// becomes the connection in one step, so that the count never dips.
func (r *registry) addReserved(c *Conn, sess *sb.Session) (e *sessionEntry, created bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unreserveLocked(c.p.UserID, c.p.SessionID)
	return r.addLocked(c, sess)
}

// add registers c. If c is bound to a session, it joins that session's
// entry, which is created from sess when c is the first connection of the
// session on this node; created reports that case.
func (r *registry) add(c *Conn, sess *sb.Session) (e *sessionEntry, created bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addLocked(c, sess)
}

func (r *registry) addLocked(c *Conn, sess *sb.Session) (e *sessionEntry, created bool) {
	r.conns[c.id] = c
	if uid := c.p.UserID; uid != "" {
		u := r.users[uid]
		if u == nil {
			u = &userEntry{}
			r.users[uid] = u
			if r.router != nil {
				r.router.Follow(sb.UserTopic(uid))
			}
		}
		c.uNext = u.head
		if u.head != nil {
			u.head.uPrev = c
		}
		u.head = c
		u.n++
	}
	if sid := c.p.SessionID; sid != "" {
		e = r.sessions[sid]
		if e == nil {
			if sess != nil {
				sess.SecretHash = [32]byte{} // not needed here; do not keep it
			}
			e = &sessionEntry{id: sid, sess: sess}
			r.sessions[sid] = e
			created = true
			if r.router != nil {
				r.router.Follow(sb.SessionTopic(sid))
			}
		}
		// An existing entry keeps its session even if sess is newer: the
		// event that made it newer is on its way and will reach every
		// socket of the session, this one included.
		e.mu.Lock()
		c.sNext = e.head
		if e.head != nil {
			e.head.sPrev = c
		}
		e.head = c
		e.n++
		e.mu.Unlock()
		c.entry = e
	}
	if kid := c.p.KeyID; kid != "" {
		ke := r.keys[kid]
		if ke == nil {
			ke = &keyEntry{
				id: kid, version: c.p.KeyVersion,
				scopes: append([]string(nil), c.p.Scopes...), expiresAt: c.p.ExpiresAt,
			}
			r.keys[kid] = ke
		}
		ke.mu.Lock()
		c.kNext = ke.head
		if ke.head != nil {
			ke.head.kPrev = c
		}
		ke.head = c
		ke.n++
		ke.mu.Unlock()
		c.kentry = ke
	}
	return e, created
}

// remove unregisters c; it is a no-op for a connection that is not
// registered. When c was the last connection of its session, the entry is
// dropped and its timer stopped.
func (r *registry) remove(c *Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns[c.id] != c {
		return
	}
	delete(r.conns, c.id)
	if uid := c.p.UserID; uid != "" {
		if u := r.users[uid]; u != nil {
			if c.uPrev != nil {
				c.uPrev.uNext = c.uNext
			} else {
				u.head = c.uNext
			}
			if c.uNext != nil {
				c.uNext.uPrev = c.uPrev
			}
			c.uPrev, c.uNext = nil, nil
			u.n--
			if u.n == 0 {
				delete(r.users, uid)
				if r.router != nil {
					r.router.Unfollow(sb.UserTopic(uid))
				}
			}
		}
	}
	if e := c.entry; e != nil {
		e.mu.Lock()
		if c.sPrev != nil {
			c.sPrev.sNext = c.sNext
		} else {
			e.head = c.sNext
		}
		if c.sNext != nil {
			c.sNext.sPrev = c.sPrev
		}
		c.sPrev, c.sNext = nil, nil
		e.n--
		if e.n == 0 {
			e.removed = true
			if e.timer != nil {
				e.timer.Stop()
				e.timer = nil
			}
			if r.sessions[e.id] == e {
				delete(r.sessions, e.id)
				if r.router != nil {
					r.router.Unfollow(sb.SessionTopic(e.id))
				}
			}
		}
		e.mu.Unlock()
	}
	if ke := c.kentry; ke != nil {
		ke.mu.Lock()
		if c.kPrev != nil {
			c.kPrev.kNext = c.kNext
		} else {
			ke.head = c.kNext
		}
		if c.kNext != nil {
			c.kNext.kPrev = c.kPrev
		}
		c.kPrev, c.kNext = nil, nil
		ke.n--
		if ke.n == 0 {
			ke.removed = true
			if ke.timer != nil {
				ke.timer.Stop()
				ke.timer = nil
			}
			if r.keys[ke.id] == ke {
				delete(r.keys, ke.id)
			}
		}
		ke.mu.Unlock()
	}
}

// key returns the entry of an API key with live connections, or nil.
func (r *registry) key(id string) *keyEntry {
	r.mu.RLock()
	ke := r.keys[id]
	r.mu.RUnlock()
	return ke
}

// keyIDs returns the IDs of every API key with live connections.
func (r *registry) keyIDs() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ids := make([]string, 0, len(r.keys))
	for id := range r.keys {
		ids = append(ids, id)
	}
	return ids
}

// forEachConnLocked calls f for every connection of ke, under ke.mu: f
// must not block. The caller holds ke.mu.
func (ke *keyEntry) forEachConnLocked(f func(*Conn)) {
	for c := ke.head; c != nil; c = c.kNext {
		f(c)
	}
}

// session returns the entry of a session with live connections, or nil.
func (r *registry) session(id string) *sessionEntry {
	r.mu.RLock()
	e := r.sessions[id]
	r.mu.RUnlock()
	return e
}

// conn returns a live connection by ID, or nil.
func (r *registry) conn(id string) *Conn {
	r.mu.RLock()
	c := r.conns[id]
	r.mu.RUnlock()
	return c
}

// len returns the number of live connections.
func (r *registry) len() int {
	r.mu.RLock()
	n := len(r.conns)
	r.mu.RUnlock()
	return n
}

// forUser calls f for every connection of a user, under the registry's read
// lock: f must not block.
func (r *registry) forUser(uid string, f func(*Conn)) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	u := r.users[uid]
	if u == nil {
		return 0
	}
	for c := u.head; c != nil; c = c.uNext {
		f(c)
	}
	return u.n
}

// forAll calls f for every connection, under the registry's read lock: f
// must not block.
func (r *registry) forAll(f func(*Conn)) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, c := range r.conns {
		f(c)
	}
}

// snapshot appends every live connection to buf.
func (r *registry) snapshot(buf []*Conn) []*Conn {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, c := range r.conns {
		buf = append(buf, c)
	}
	return buf
}

// sessionIDs returns the IDs of every session with live connections.
func (r *registry) sessionIDs() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ids := make([]string, 0, len(r.sessions))
	for id := range r.sessions {
		ids = append(ids, id)
	}
	return ids
}

// forEachConn calls f for every connection of e, under e.mu: f must not
// block. The caller holds e.mu.
func (e *sessionEntry) forEachConnLocked(f func(*Conn)) {
	for c := e.head; c != nil; c = c.sNext {
		f(c)
	}
}

// newConnID returns a fresh connection ID: 16 base64url characters, 96
// random bits.
func newConnID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b[:])
}
