package sessionbridge

import (
	"context"
	"time"
)

// Store keeps sessions. Every write that changes a session publishes its event
// on the store's bus in the same atomic step, so that no crash can separate a
// write from its event; touches publish too, so that other nodes move their
// expiry timers.
//
// Implementations must be safe for concurrent use, return sessions the caller
// may modify, wrap ErrNotFound, ErrExists, ErrVersionConflict and
// ErrUnavailable, and keep a per-user index and an expiry index.
type Store interface {
	// Get returns the session with id, or ErrNotFound. It may return a session
	// past its deadline that has not been claimed as expired yet; callers check.
	Get(ctx context.Context, id string) (*Session, error)
	// GetMany returns the sessions that exist among ids, in one round trip,
	// keyed by ID. Missing IDs are absent from the map.
	GetMany(ctx context.Context, ids []string) (map[string]*Session, error)
	// Create stores a new session and publishes ev. ErrExists if the ID is taken.
	Create(ctx context.Context, s *Session, ev Event) error
	// Update replaces the session if its stored Version is still prevVersion,
	// and publishes ev. ErrNotFound if it is gone (a delete always wins over an
	// update in flight), ErrVersionConflict if the version moved; an error if
	// s names another user (a session never changes hands).
	Update(ctx context.Context, s *Session, prevVersion uint64, ev Event) error
	// Touch records activity: it sets LastSeenAt to seen and ExpiresAt to
	// expiresAt, but only if the stored LastSeenAt is before ifSeenBefore; it
	// reports whether it wrote (and then published ev). Version is unchanged.
	Touch(ctx context.Context, id string, seen, expiresAt, ifSeenBefore time.Time, ev Event) (bool, error)
	// Delete removes the session and publishes ev, with the session's user and
	// the version it had filled in where ev leaves them empty; ErrNotFound if
	// it was gone.
	Delete(ctx context.Context, id string, ev Event) (*Session, error)
	// Rotate atomically replaces the session oldID by s (a new ID and secret,
	// same user), publishing deleted (with Reason rotated) for the old and
	// created for the new one. s is made from a read of the old session and
	// counts as one change of it: Rotate applies only if the stored Version is
	// still s.Version-1 and no touch recorded a LastSeenAt later than
	// s.LastSeenAt since, else it returns ErrVersionConflict and changes
	// nothing, so that an update landing between the read and the rotation is
	// not lost. ErrNotFound if oldID is gone, ErrExists if s.ID is taken.
	Rotate(ctx context.Context, oldID string, s *Session, deleted, created Event) error
	// ListUser returns the sessions of a user, from the per-user index.
	ListUser(ctx context.Context, userID string) ([]*Session, error)
	// ClaimExpired removes sessions whose deadline is at or before now from the
	// expiry index, deletes them and publishes an expired event for each, made
	// from tmpl with the session's IDs filled in. Each expired session is
	// claimed exactly once across all callers and nodes. At most limit are
	// claimed per call.
	ClaimExpired(ctx context.Context, now time.Time, limit int, tmpl Event) ([]*Session, error)
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
}

// SessionVersion names a session and the version of it a caller holds.
type SessionVersion struct {
	ID      string
	Version uint64
}

// A VersionChecker is a [Store] that can tell which of the sessions a caller
// holds changed without reading them whole. A node re-validates every
// session it holds a socket of (after following new topics, after a gap, on
// its sweep), and almost all of them are unchanged: it then reads whole only
// the few that changed. [Manager.ChangedSessions] reads whole sessions from
// a store that does not implement it.
type VersionChecker interface {
	// ChangedVersions returns the IDs among held whose session is gone or
	// whose stored Version is not the held one, in one round trip. A
	// session past its deadline that has not been claimed as expired yet
	// counts as unchanged if its version is; callers keep their own timers.
	ChangedVersions(ctx context.Context, held []SessionVersion) ([]string, error)
}

// Bus carries events between nodes. Store writes publish through the store;
// Publish is for events that change no session (messages).
type Bus interface {
	// Publish sends ev to every subscriber on every node.
	Publish(ctx context.Context, ev Event) error
	// Subscribe delivers every event to h until ctx is done, then returns
	// ctx.Err(). It calls h.HandleGap after each (re)subscription, including the
	// first, and whenever events may have been lost.
	Subscribe(ctx context.Context, h EventHandler) error
}

// TopicKind says what a Topic follows.
type TopicKind uint8

// Topic kinds.
const (
	// TopicSession follows one session: its updates, touches, deletion,
	// expiry and the messages sent to it.
	TopicSession TopicKind = iota + 1
	// TopicUser follows the messages sent to a user (SendToUser) and the
	// creation of the user's sessions.
	TopicUser
)

// Topic is what a node follows on a [Router]: one session or one user.
type Topic struct {
	Kind TopicKind
	// ID is the session ID or the user ID.
	ID string
}

// SessionTopic returns the topic of session id.
func SessionTopic(id string) Topic { return Topic{Kind: TopicSession, ID: id} }

// UserTopic returns the topic of user id.
func UserTopic(id string) Topic { return Topic{Kind: TopicUser, ID: id} }

// A Router is a [Bus] that delivers the events of a session, and the
// messages of a user, only to the nodes that follow them, so that a node
// receives events in proportion to the sockets it holds. API key events, if
// the bus carries them, reach every node. A Bus that is not a Router
// delivers every event to every subscriber.
//
// Follow and Unfollow return at once; the subscription follows in the
// background. Once it is in place, Subscribe's handler is told through
// [FollowHandler] if it implements it: events published before that moment
// may have been missed, so the handler re-reads what it holds of those
// topics. Calls are counted: a topic followed twice needs two Unfollows.
type Router interface {
	Bus
	// Follow asks for the events of topic from now on.
	Follow(topic Topic)
	// Unfollow says this node no longer needs the events of topic. The bus
	// may keep delivering them for a while, so that a socket reconnecting
	// soon after costs no new subscription.
	Unfollow(topic Topic)
}

// A FollowHandler is an [EventHandler] told when a [Router]'s subscriptions
// take effect.
type FollowHandler interface {
	EventHandler
	// HandleFollowed is called once every event of topics published from
	// now on will be delivered: after the first subscription to them and
	// after each re-subscription (a reconnect, a moved slot). Events
	// published before may have been missed: the handler re-validates the
	// sessions among topics against the store. Like HandleEvent, it must
	// not block for long.
	HandleFollowed(topics []Topic)
}

type noCacheKey struct{}

// WithoutCache returns a context under which a store that caches session
// reads reads from its source instead, and keeps no copy. The gateway
// authenticates sockets this way: it holds a socket's session itself from
// then on and follows its changes through events, so a cached copy would only
// cost memory (about 2 KiB a socket with Redis) and CPU.
func WithoutCache(ctx context.Context) context.Context {
	return context.WithValue(ctx, noCacheKey{}, true)
}

// CacheAllowed reports whether reads under ctx may be served from, and kept
// in, a cache; see WithoutCache.
func CacheAllowed(ctx context.Context) bool { return ctx.Value(noCacheKey{}) == nil }
