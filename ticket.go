package sessionbridge

import (
	"context"
	"time"
)

// TicketTTL is how long a WebSocket ticket stays redeemable.
const TicketTTL = 30 * time.Second

// Ticket is what a single-use WebSocket ticket stands for: the principal that
// asked for it over HTTP.
type Ticket struct {
	UserID    string     `json:"user_id"`
	SessionID string     `json:"session_id,omitempty"`
	Method    AuthMethod `json:"auth"`
	Scopes    []string   `json:"scopes,omitempty"`
	// KeyID names the API key of an API-key ticket: the upgrade reads the
	// key as it stands then, so that a key revoked or changed since the
	// ticket was issued counts as such, and the socket is closed with the
	// key's revocation like one opened with the key itself.
	KeyID string `json:"key_id,omitempty"`
	// ExpiresAt is when the credential the ticket was issued for expires (a
	// JWT's exp, an API key's expiry): a socket opened with the ticket is
	// closed then, as one opened with the credential itself would be, and a
	// ticket whose ExpiresAt has passed is refused. Zero means no expiry of
	// its own; session tickets leave it zero and follow their session.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// TicketStore issues and redeems single-use tickets, so that a browser can
// open a WebSocket without putting its session token in a URL. Tickets are
// shared by all nodes: one issued on one node is redeemable on any other.
type TicketStore interface {
	// Issue stores t under a fresh random ticket string valid for ttl and
	// returns that string. Only a hash of it is stored.
	Issue(ctx context.Context, t Ticket, ttl time.Duration) (string, error)
	// Redeem returns the ticket's content and makes it unusable, atomically:
	// of two concurrent redeems at most one succeeds. ErrInvalidToken for an
	// unknown, used or expired ticket.
	Redeem(ctx context.Context, ticket string) (*Ticket, error)
}

// TokenVerifier verifies a bearer credential that is not a session token (a
// JWT, an API key) and says whom it stands for. It returns an error wrapping
// ErrInvalidToken for a bad credential and ErrUnavailable when it cannot
// decide. An error may also have a method Reason() string naming the cause
// in a short, stable label ("expired", "bad_signature"), which the gateway
// records in audit records and metrics; the jwt package's errors do.
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (*Principal, error)
}
