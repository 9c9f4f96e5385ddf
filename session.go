package sessionbridge

import (
	"encoding/json"
	"slices"
	"time"
)

// Session is a stored session. The secret half of its token is never kept: only
// its SHA-256 in SecretHash.
type Session struct {
	ID         string
	UserID     string
	SecretHash [32]byte
	// Data is the application's session data, always a JSON object.
	Data   json.RawMessage
	Device Device
	// CreatedAt is when the session was created (or, after ID rotation, when
	// the original session was created).
	CreatedAt time.Time
	// LastSeenAt is the last recorded activity; it moves at most once per touch
	// interval.
	LastSeenAt time.Time
	// ExpiresAt is the current deadline: the idle deadline, never past
	// AbsoluteExpiresAt.
	ExpiresAt time.Time
	// AbsoluteExpiresAt is the hard deadline no activity can extend.
	AbsoluteExpiresAt time.Time
	// Scopes are the session's own scope patterns, set by an administrator
	// (the admin API, the users file at login), never by the session's user:
	// they live beside Data, not in it. Nil means none are stored and the
	// session holds the configured default; an empty non-nil list holds no
	// scope at all.
	Scopes []string
	// Version counts changes of Data and Scopes; it starts at 1 and every
	// update adds 1. Touches do not change it.
	Version uint64
}

// Device describes where a session was created.
type Device struct {
	UserAgent  string `json:"user_agent"`
	Browser    string `json:"browser"`
	OS         string `json:"os"`
	DeviceType string `json:"device_type"`
	IP         string `json:"ip"`
}

// PublicSession is the view of a session that may be shown to its owner, sent in
// frames and events: everything but the secret hash.
type PublicSession struct {
	ID                string          `json:"id"`
	UserID            string          `json:"user_id"`
	Data              json.RawMessage `json:"data"`
	Device            Device          `json:"device"`
	CreatedAt         time.Time       `json:"created_at"`
	LastSeenAt        time.Time       `json:"last_seen_at"`
	ExpiresAt         time.Time       `json:"expires_at"`
	AbsoluteExpiresAt time.Time       `json:"absolute_expires_at"`
	// Scopes are the session's stored scopes; null when it holds the
	// configured default.
	Scopes  []string `json:"scopes"`
	Version uint64   `json:"version"`
}

// Public returns the public view of s.
func (s *Session) Public() PublicSession {
	data := s.Data
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	return PublicSession{
		ID: s.ID, UserID: s.UserID, Data: data, Device: s.Device,
		CreatedAt: s.CreatedAt, LastSeenAt: s.LastSeenAt,
		ExpiresAt: s.ExpiresAt, AbsoluteExpiresAt: s.AbsoluteExpiresAt,
		Scopes: slices.Clone(s.Scopes), Version: s.Version,
	}
}

// ScopesOr returns the session's stored scopes, or def when it has none
// stored. The result may share memory with s or def: callers must not
// modify it.
func (s *Session) ScopesOr(def []string) []string {
	if s.Scopes == nil {
		return def
	}
	return s.Scopes
}

// Clone returns a deep copy of s, so that stores can hand out sessions that
// callers may change freely.
func (s *Session) Clone() *Session {
	if s == nil {
		return nil
	}
	c := *s
	if s.Data != nil {
		c.Data = append(json.RawMessage(nil), s.Data...)
	}
	c.Scopes = slices.Clone(s.Scopes) // nil stays nil, empty stays empty
	return &c
}

// Expired reports whether s is past its idle or absolute deadline at now.
func (s *Session) Expired(now time.Time) bool {
	return !now.Before(s.ExpiresAt) || !now.Before(s.AbsoluteExpiresAt)
}

// Deadline is the moment s expires if nothing extends it.
func (s *Session) Deadline() time.Time {
	if s.AbsoluteExpiresAt.Before(s.ExpiresAt) {
		return s.AbsoluteExpiresAt
	}
	return s.ExpiresAt
}
