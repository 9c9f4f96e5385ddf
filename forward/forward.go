// Package forward hands the frames of an application's own message types to
// the application, in gateway mode: the gateway serves the protocol's
// built-in frames itself, checks the connection's scopes and limits, and
// passes every other allowed frame of a configured type to a [Forwarder],
// whose answer becomes the reply frame.
//
// [HTTP] is the Forwarder of the standalone server: it POSTs each frame, with
// the principal that sent it, to one HTTP endpoint of the application, signed
// with a shared secret (HMAC-SHA256, see [Sign] and [Verify]), and reads the
// application's JSON answer under strict rules. The request and answer formats
// are described in docs/forwarding.md.
package forward

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	sb "github.com/sessionbridge/sessionbridge"
)

// Forwarder hands one client frame to the application.
type Forwarder interface {
	// Forward sends req to the application and returns the frame to answer
	// the client with. An error that is an *[Error] names the error frame to
	// answer with; any other error is a failure of the forwarder (answered
	// with code internal), or the end of ctx. Forward returns promptly once
	// ctx is done, and is safe for concurrent use.
	Forward(ctx context.Context, req Request) (Reply, error)
}

// Request is one client frame with who sent it. Its JSON form is the body the
// HTTP forwarder sends (with a forward_id beside it).
type Request struct {
	// Type is the frame's type.
	Type string `json:"type"`
	// ID is the client's request id, echoed in the reply; "" if none.
	ID string `json:"id,omitempty"`
	// Data is the frame's data, already read under the protocol's strict
	// JSON rules; nil when the frame has none.
	Data json.RawMessage `json:"data,omitempty"`
	// ConnectionID names the socket the frame came on.
	ConnectionID string `json:"connection_id"`
	// Principal is whom the connection acts for.
	Principal Principal `json:"principal"`
}

// Principal is whom a forwarded frame's connection acts for.
type Principal struct {
	// Auth is how the connection authenticated: session, jwt or apikey.
	Auth sb.AuthMethod `json:"auth"`
	// UserID is the user the connection acts for.
	UserID string `json:"user_id"`
	// SessionID is the bound session, if any.
	SessionID string `json:"session_id,omitempty"`
	// KeyID is the API key, for API-key connections.
	KeyID string `json:"key_id,omitempty"`
	// Scopes are the connection's scopes as of the frame; never nil in the
	// JSON form.
	Scopes []string `json:"scopes"`
}

// Reply is the frame that answers a forwarded one; the gateway gives it the
// request's id.
type Reply struct {
	// Type is the reply frame's type: never a built-in type (see [Builtin])
	// but TypeAck.
	Type string
	// Data is the reply frame's data; nil for none.
	Data json.RawMessage
}

// TypeAck is the reply of an application that answered with no content;
// ResultSuffix makes the default reply type of a frame of type t, t+".result",
// as for the gateway's own handlers.
const (
	TypeAck      = "ack"
	ResultSuffix = ".result"
)

// Error codes of the error frames a forwarded frame may be answered with:
// the protocol's codes (docs/protocol.md). CodeUnavailable means the
// application could not be reached, did not answer in time or failed (HTTP
// 5xx), or the node has too many frames waiting for it: a retry later may
// succeed.
const (
	CodeBadRequest  = "bad_request"
	CodeForbidden   = "forbidden"
	CodeRateLimited = "rate_limited"
	CodeUnknownType = "unknown_type"
	CodeInternal    = "internal"
	CodeUnavailable = "unavailable"
)

// codes are the codes an application may answer with; any other becomes
// CodeInternal.
var codes = []string{CodeBadRequest, CodeForbidden, CodeRateLimited, CodeUnknownType, CodeInternal, CodeUnavailable}

// Sentinel errors, wrapped by the Err of an *[Error]; callers branch on them
// with errors.Is.
var (
	// ErrRefused means the application answered with an error.
	ErrRefused = errors.New("forward: refused by the application")
	// ErrUnavailable means the application could not be reached, did not
	// answer within the timeout, or answered with HTTP 5xx.
	ErrUnavailable = errors.New("forward: application unavailable")
	// ErrBusy means the node already has its bound of frames waiting for the
	// application; the frame was not sent.
	ErrBusy = errors.New("forward: too many frames in flight")
	// ErrBadAnswer means the application answered something the gateway
	// cannot relay: another status, a body too large, malformed or of the
	// wrong shape, or a reply of a built-in type.
	ErrBadAnswer = errors.New("forward: unusable answer")
)

// Error is a forwarded frame that is answered with an error frame: Code and
// Message are for the client; Err is the cause, for logs only.
type Error struct {
	// Code is one of the Code constants.
	Code string
	// Message is safe to show the client: it never holds the application's
	// raw answer, only a message the application chose to send in an error
	// answer.
	Message string
	// Err wraps one of the package's sentinel errors.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// builtins are the frame types of the protocol itself, in both directions,
// including the ones Phase 2 adds: never forwarded, never an application's
// reply type.
var builtins = []string{
	"ping", "pong", "welcome", "session", "session.get", "session.update", "session.updated",
	"session.expiring", "auth.refresh", "ack", "message", "error", "scopes.updated", "api_key.expiring",
}

// Builtin reports whether t is a frame type of the protocol itself: such
// frames are never forwarded, and an application may not answer with one.
func Builtin(t string) bool { return slices.Contains(builtins, t) }

// MaxTypeLen bounds the reply type an application may choose.
const MaxTypeLen = 128

// validType reports whether t can name a frame: 1 to MaxTypeLen bytes of
// segments separated by ".", each of ASCII letters, digits, "_", "-" and
// ":" (the characters of scope patterns, so that a scope can name it).
func validType(t string) bool {
	if t == "" || len(t) > MaxTypeLen {
		return false
	}
	seg := 0
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case c == '.':
			if seg == 0 {
				return false
			}
			seg = 0
			continue
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-', c == ':':
		default:
			return false
		}
		seg++
	}
	return seg > 0
}
