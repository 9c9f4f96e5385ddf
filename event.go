package sessionbridge

import (
	"encoding/json"
	"time"
)

// EventType names what happened to a session or an API key. It travels
// with the event; which channel carries it is the bus's business.
type EventType string

// Event types.
const (
	EventCreated EventType = "created"
	EventUpdated EventType = "updated"
	EventDeleted EventType = "deleted"
	EventExpired EventType = "expired"
	// EventMessage carries an application message to a user's or a session's
	// sockets (SendToUser, SendToSession); it changes no session.
	EventMessage EventType = "message"

	// API key events: a key's scopes or expiry changed (an update, or a roll
	// cutting the old key's life short), it was revoked, or its expiry was
	// claimed. They carry KeyID instead of SessionID. Creating a key
	// publishes nothing: no node holds anything about a key not yet made.
	EventKeyUpdated EventType = "apikey_updated"
	EventKeyDeleted EventType = "apikey_deleted"
	EventKeyExpired EventType = "apikey_expired"
)

// Known reports whether t is one of EventTypes.
func (t EventType) Known() bool {
	switch t {
	case EventCreated, EventUpdated, EventDeleted, EventExpired, EventMessage,
		EventKeyUpdated, EventKeyDeleted, EventKeyExpired:
		return true
	}
	return false
}

// IsKey reports whether t is an API key event.
func (t EventType) IsKey() bool {
	return t == EventKeyUpdated || t == EventKeyDeleted || t == EventKeyExpired
}

// EventTypes lists every event type.
var EventTypes = []EventType{
	EventCreated, EventUpdated, EventDeleted, EventExpired, EventMessage,
	EventKeyUpdated, EventKeyDeleted, EventKeyExpired,
}

// Source says through which door a change came in.
type Source string

// Sources of changes.
const (
	SourceHTTP      Source = "http"
	SourceWebSocket Source = "websocket"
	SourceAPI       Source = "api"
	SourceSystem    Source = "system"
)

// Reasons carried by deleted events, so that sockets can be closed with the
// right close reason and audits name the cause.
const (
	ReasonLogout  = "logout"
	ReasonRevoked = "revoked"
	ReasonRotated = "rotated"
)

// Event is one change to a session or an API key, as published on the bus.
// Its JSON form is the pub/sub payload (compact, about 200 bytes); Type is
// carried by the channel, not the payload. It never carries a secret.
type Event struct {
	Type      EventType `json:"-"`
	SessionID string    `json:"session_id,omitempty"`
	// KeyID names the API key of a key event.
	KeyID  string `json:"key_id,omitempty"`
	UserID string `json:"user_id,omitempty"`
	// Updates is the JSON merge patch an update applied. An updated event
	// without Updates is a touch: only the deadline moved.
	Updates      json.RawMessage `json:"updates,omitempty"`
	Source       Source          `json:"source"`
	Timestamp    time.Time       `json:"timestamp"`
	ConnectionID string          `json:"connection_id,omitempty"`
	NodeID       string          `json:"node_id"`
	Version      uint64          `json:"version,omitempty"`
	// Scopes, on an updated event of a session or an API key, are its new
	// scopes when the update set them (an empty, non-nil list is sent as []:
	// no scope at all); nil when the update left them as they were.
	Scopes []string `json:"scopes,omitzero"`
	// ExpiresAt is the session's deadline after the change (created, updated),
	// so that nodes move their expiry timers without reading the store; for
	// an API key update, its expiry when the update changed it.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Reason says why a session or key was deleted (logout, revoked, rotated).
	Reason string `json:"reason,omitempty"`
	// Data is the payload of a message event.
	Data json.RawMessage `json:"data,omitempty"`
}

// EventHandler receives events from a Bus.
type EventHandler interface {
	// HandleEvent is called for every event, in publish order per channel. It
	// must not block for long: it runs on the bus's delivery goroutine.
	HandleEvent(Event)
	// HandleGap is called whenever events may have been lost: after the bus
	// (re)subscribed, or dropped events for a slow handler. The handler must
	// re-validate what it holds against the store.
	HandleGap()
}
