package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/strictjson"
)

// Frame types sent by clients.
const (
	TypePing          = "ping"
	TypeSessionGet    = "session.get"
	TypeSessionUpdate = "session.update"
	TypeAuthRefresh   = "auth.refresh"
)

// Frame types sent by the server.
const (
	TypeWelcome         = "welcome"
	TypePong            = "pong"
	TypeSession         = "session"
	TypeAck             = "ack"
	TypeSessionUpdated  = "session.updated"
	TypeSessionExpiring = "session.expiring"
	TypeMessage         = "message"
	// TypeAPIKeyExpiring warns an API-key connection that its key expires.
	TypeAPIKeyExpiring = "api_key.expiring"
	TypeError          = "error"
)

// Error codes carried by error frames.
const (
	CodeBadRequest  = "bad_request"
	CodeForbidden   = "forbidden"
	CodeRateLimited = "rate_limited"
	CodeUnknownType = "unknown_type"
	CodeInternal    = "internal"
	// CodeUnavailable answers a forwarded frame when the application cannot
	// be reached, does not answer in time or fails, or the node has too many
	// frames waiting for it: a retry later may succeed.
	CodeUnavailable = "unavailable"
)

// Close codes and reasons the gateway sends.
const (
	CloseNormal         = 1000
	CloseGoingAway      = 1001
	CloseInvalidData    = 1007
	ClosePolicy         = 1008
	CloseTooBig         = 1009
	CloseReauthenticate = 4401
	CloseForbidden      = 4403
	CloseRateLimited    = 4429

	ReasonServerShutdown = "server_shutdown"
	ReasonSessionExpired = "session_expired"
	ReasonSessionRevoked = "session_revoked"
	ReasonTokenExpired   = "token_expired"
	ReasonAPIKeyRevoked  = "api_key_revoked"
	ReasonForbidden      = "forbidden"
	ReasonRateLimited    = "rate_limited"
	ReasonSlowConsumer   = "slow_consumer"
	ReasonInvalidUTF8    = "invalid_utf8"
)

// maxFrameIDLen bounds the id a client may attach to a frame; it is echoed
// back, so an unbounded one would let a client make the server copy it.
const maxFrameIDLen = 128

// inFrame is a frame received from a client.
type inFrame struct {
	Type string          `json:"type"`
	ID   string          `json:"id,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
}

// errBadFrame is wrapped by decodeFrame for anything that is not a frame.
var errBadFrame = errors.New("malformed frame")

// decodeFrame parses one client frame under the rules of strictjson (exact
// member names, no duplicate names, valid UTF-8, bounded nesting, nothing
// after the value), refusing members other than type, id and data. On error
// it still returns the id when one can be read unambiguously, so that the
// error frame can echo it.
func decodeFrame(b []byte) (inFrame, error) {
	var f inFrame
	if err := strictjson.Decode(b, &f); err != nil {
		// strictjson's messages say where, never quote a value: a frame may
		// carry a credential.
		return inFrame{ID: echoableID(b)}, fmt.Errorf("%w: %v", errBadFrame, err)
	}
	if len(f.ID) > maxFrameIDLen {
		return inFrame{}, fmt.Errorf("%w: id longer than %d bytes", errBadFrame, maxFrameIDLen)
	}
	if f.Type == "" {
		return f, fmt.Errorf("%w: missing type", errBadFrame)
	}
	if len(f.Data) > 0 && string(f.Data) == "null" {
		f.Data = nil
	}
	return f, nil
}

// echoableID returns the id of a refused frame when the frame is otherwise
// well-formed JSON with one string id of bounded length, else "".
func echoableID(b []byte) string {
	var v struct {
		ID string `json:"id"`
	}
	if strictjson.DecodeOpen(b, &v) != nil || len(v.ID) > maxFrameIDLen {
		return ""
	}
	return v.ID
}

// decodePayload decodes the data of a built-in request into v under the
// rules of decodeFrame, refusing unknown members. shape describes the
// expected data for the error message.
func decodePayload(raw json.RawMessage, v any, shape string) error {
	if len(raw) == 0 {
		return badRequest("data must be " + shape)
	}
	if err := strictjson.Decode(raw, v); err != nil {
		return badRequest("data must be " + shape + ": " + err.Error())
	}
	return nil
}

// outFrame is a frame sent to a client.
type outFrame struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
	Data any    `json:"data,omitempty"`
}

// encodeFrame returns the wire form of a frame: by hand for the frames every
// connect and every session change send (see appendFastFrame), else with
// encoding/json.
func encodeFrame(typ, id string, data any) ([]byte, error) {
	if b, ok := appendFastFrame(make([]byte, 0, fastFrameSize(data)), typ, id, data); ok {
		return b, nil
	}
	b, err := json.Marshal(outFrame{Type: typ, ID: id, Data: data})
	if err != nil {
		return nil, fmt.Errorf("gateway: encoding %s frame: %w", typ, err)
	}
	return b, nil
}

// Frame payloads.

type welcomeData struct {
	ConnectionID string            `json:"connection_id"`
	Auth         sb.AuthMethod     `json:"auth"`
	UserID       string            `json:"user_id"`
	Session      *sb.PublicSession `json:"session"`
	Scopes       []string          `json:"scopes"`
	ExpiresAt    *time.Time        `json:"expires_at"`
}

type sessionData struct {
	Session sb.PublicSession `json:"session"`
}

type sessionUpdatedData struct {
	Session sb.PublicSession `json:"session"`
	Source  sb.Source        `json:"source"`
}

type ackData struct {
	Version   uint64     `json:"version,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

type expiringData struct {
	ExpiresAt time.Time `json:"expires_at"`
}

type messageData struct {
	Data json.RawMessage `json:"data"`
}

type errorData struct {
	ID      string `json:"id,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// Rule and RetryAfterMS come with code rate_limited when a rate limit
	// rule refused the frame: which one, and how long until a frame may
	// pass again.
	Rule         string `json:"rule,omitempty"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
}

type updateRequest struct {
	Data json.RawMessage `json:"data"`
	// Version, when set, makes the update conditional on it.
	Version uint64 `json:"version,omitempty"`
}

type refreshRequest struct {
	Token string `json:"token"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
