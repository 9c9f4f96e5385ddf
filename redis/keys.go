package redis

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/strictjson"
)

// Key layout; docs/redis.md explains each key. The part in braces is the hash
// tag: the user's shard, so a session, its user's index and its shard's expiry
// index share one Redis Cluster slot.

func (b *Backend) sessionKey(id string) string {
	return b.sessionKeyPrefix(sessionbridge.ShardOfID(id)) + id
}

func (b *Backend) sessionKeyPrefix(shard string) string { return b.prefix + "s:{" + shard + "}" }

func (b *Backend) userKey(userID string) string {
	return b.userKeyPrefix(sessionbridge.Shard(userID)) + userID
}

func (b *Backend) userKeyPrefix(shard string) string { return b.prefix + "u:{" + shard + "}" }

func (b *Backend) expiryKey(shard string) string { return b.prefix + "x:{" + shard + "}" }

func (b *Backend) ticketKey(hashHex string) string { return b.prefix + "t:" + hashHex }

// sessionChannel is the shard channel that carries the events of one
// session, and userChannel the one that carries a user's messages and the
// creation of the user's sessions: the same hash tag as their keys, so that a
// write script publishes on its own slot (SPUBLISH).
func (b *Backend) sessionChannel(id string) string {
	return b.sessionChannelPrefix(sessionbridge.ShardOfID(id)) + id
}

func (b *Backend) sessionChannelPrefix(shard string) string { return b.prefix + "e:{" + shard + "}:s:" }

func (b *Backend) userChannel(userID string) string {
	return b.prefix + "e:{" + sessionbridge.Shard(userID) + "}:u:" + userID
}

// onItsChannel reports whether ev is about what channel carries: a session
// channel's events name its session, a user channel's name its user (and,
// for a created event, a session of that user's shard).
func (b *Backend) onItsChannel(channel string, ev sessionbridge.Event) bool {
	if ev.SessionID != "" && channel == b.sessionChannel(ev.SessionID) {
		return true
	}
	if ev.UserID == "" || channel != b.userChannel(ev.UserID) {
		return false
	}
	return ev.SessionID == "" || sessionbridge.ShardOfID(ev.SessionID) == sessionbridge.Shard(ev.UserID)
}

// topicChannel is the shard channel of a topic, "" for none.
func (b *Backend) topicChannel(t sessionbridge.Topic) string {
	switch t.Kind {
	case sessionbridge.TopicSession:
		if sessionbridge.ValidID(t.ID) {
			return b.sessionChannel(t.ID)
		}
	case sessionbridge.TopicUser:
		if t.ID != "" {
			return b.userChannel(t.ID)
		}
	}
	return ""
}

// channel is the broadcast channel of an API key event type: every node
// receives those (see docs/redis.md).
func (b *Backend) channel(t sessionbridge.EventType) string {
	switch t {
	case sessionbridge.EventKeyUpdated:
		return b.prefix + "apikey:updated"
	case sessionbridge.EventKeyDeleted:
		return b.prefix + "apikey:deleted"
	case sessionbridge.EventKeyExpired:
		return b.prefix + "apikey:expired"
	}
	return ""
}

// shards lists the 256 shard names, "00" to "ff".
var shards = func() []string {
	out := make([]string, 256)
	for i := range out {
		out[i] = hex.EncodeToString([]byte{byte(i)})
	}
	return out
}()

// Session hash fields.
const (
	fID         = "id"
	fUserID     = "user_id"
	fSecretHash = "secret_hash"
	fData       = "data"
	fDevice     = "device"
	fVersion    = "version"
	fCreated    = "created_at"
	fLastSeen   = "last_seen_at"
	fExpires    = "expires_at"
	fAbsolute   = "absolute_expires_at"
	fScopes     = "scopes"
)

// nanos formats t as Unix nanoseconds, the form every time field has in Redis:
// scripts compare them as decimal strings of equal length.
func nanos(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.UnixNano(), 10)
}

func parseNanos(s string) (time.Time, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	if n == 0 {
		return time.Time{}, nil
	}
	return time.Unix(0, n).UTC(), nil
}

// millis is the expiry index score of a deadline.
func millis(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// sessionFields returns the HSET field-value pairs of s.
func sessionFields(s *sessionbridge.Session) ([]string, error) {
	dev, err := json.Marshal(s.Device)
	if err != nil {
		return nil, fmt.Errorf("encode device: %w", err)
	}
	data := string(s.Data)
	if len(s.Data) == 0 {
		data = "{}"
	}
	// Always written, so that an update or rotation replaces it too: null
	// for the configured default, else the list (an empty one holds no
	// scope).
	scopes, err := json.Marshal(s.Scopes)
	if err != nil {
		return nil, fmt.Errorf("encode scopes: %w", err)
	}
	return []string{
		fID, s.ID,
		fUserID, s.UserID,
		fSecretHash, hex.EncodeToString(s.SecretHash[:]),
		fData, data,
		fDevice, string(dev),
		fVersion, strconv.FormatUint(s.Version, 10),
		fCreated, nanos(s.CreatedAt),
		fLastSeen, nanos(s.LastSeenAt),
		fExpires, nanos(s.ExpiresAt),
		fAbsolute, nanos(s.AbsoluteExpiresAt),
		fScopes, string(scopes),
	}, nil
}

// decodeSession builds a session from its hash; nil, nil for an empty hash
// (no such key).
func decodeSession(m map[string]string) (*sessionbridge.Session, error) {
	if len(m) == 0 {
		return nil, nil
	}
	s := &sessionbridge.Session{ID: m[fID], UserID: m[fUserID], Data: json.RawMessage(m[fData])}
	if !sessionbridge.ValidID(s.ID) {
		return nil, fmt.Errorf("corrupt session hash: bad id")
	}
	h, err := hex.DecodeString(m[fSecretHash])
	if err != nil || len(h) != len(s.SecretHash) {
		return nil, fmt.Errorf("corrupt session %s: bad secret hash", s.ID)
	}
	copy(s.SecretHash[:], h)
	if d := m[fDevice]; d != "" {
		if err := strictjson.DecodeOpen([]byte(d), &s.Device); err != nil {
			return nil, fmt.Errorf("corrupt session %s: device: %w", s.ID, err)
		}
	}
	if len(s.Data) == 0 {
		s.Data = json.RawMessage("{}")
	}
	// Absent (a session written before scopes existed, or by an application
	// that leaves them to the default), "" and null all mean the default.
	if sc := m[fScopes]; sc != "" && sc != "null" {
		if err := strictjson.DecodeOpen([]byte(sc), &s.Scopes); err != nil || s.Scopes == nil || slices.Contains(s.Scopes, "") {
			return nil, fmt.Errorf("corrupt session %s: scopes must be a JSON array of strings", s.ID)
		}
	}
	if s.Version, err = strconv.ParseUint(m[fVersion], 10, 64); err != nil {
		return nil, fmt.Errorf("corrupt session %s: version: %w", s.ID, err)
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{fCreated, &s.CreatedAt}, {fLastSeen, &s.LastSeenAt}, {fExpires, &s.ExpiresAt}, {fAbsolute, &s.AbsoluteExpiresAt}} {
		if *f.dst, err = parseNanos(m[f.name]); err != nil {
			return nil, fmt.Errorf("corrupt session %s: %s: %w", s.ID, f.name, err)
		}
	}
	return s, nil
}

// decodeFlat decodes an HGETALL reply in array form, as scripts return it.
func decodeFlat(kv []string) (*sessionbridge.Session, error) {
	m := make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return decodeSession(m)
}
