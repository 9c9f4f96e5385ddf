package redis

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/strictjson"
)

const (
	ticketBytes = 32
	ticketLen   = 43 // base64url of ticketBytes, unpadded
)

// Tickets is a [sessionbridge.TicketStore] in Redis: a ticket is stored as
// SET <prefix>t:<sha256 hex of the ticket> <json> PX <ttl> NX and redeemed
// with GETDEL, so that it works once, on any node, and only its hash is kept.
type Tickets struct {
	b *Backend
}

var _ sessionbridge.TicketStore = (*Tickets)(nil)

func ticketHash(ticket string) string {
	sum := sha256.Sum256([]byte(ticket))
	return hex.EncodeToString(sum[:])
}

// Issue stores t under a fresh random ticket valid for ttl (TicketTTL if not
// positive) and returns the ticket.
func (ts *Tickets) Issue(ctx context.Context, t sessionbridge.Ticket, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		ttl = sessionbridge.TicketTTL
	}
	var raw [ticketBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("redis: issue ticket: %w", err)
	}
	ticket := base64.RawURLEncoding.EncodeToString(raw[:])
	body, err := json.Marshal(t)
	if err != nil {
		return "", fmt.Errorf("redis: issue ticket: %w", err)
	}
	b := ts.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	cmd := b.client.B().Set().Key(b.ticketKey(ticketHash(ticket))).Value(string(body)).Nx().PxMilliseconds(max(ttl.Milliseconds(), 1)).Build()
	if err := b.client.Do(ctx, cmd).Error(); err != nil {
		// NX on 256 random bits cannot collide in practice; a nil reply is
		// reported like any other failure.
		return "", b.fail("issue_ticket", err)
	}
	return ticket, nil
}

// Redeem returns the ticket's content and deletes it in one GETDEL: of two
// concurrent redeems at most one succeeds. ErrInvalidToken for a malformed,
// unknown, used or expired ticket.
func (ts *Tickets) Redeem(ctx context.Context, ticket string) (*sessionbridge.Ticket, error) {
	if len(ticket) != ticketLen {
		return nil, sessionbridge.ErrInvalidToken
	}
	if raw, err := base64.RawURLEncoding.DecodeString(ticket); err != nil || len(raw) != ticketBytes {
		return nil, sessionbridge.ErrInvalidToken
	}
	b := ts.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	body, err := b.client.Do(ctx, b.client.B().Getdel().Key(b.ticketKey(ticketHash(ticket))).Build()).ToString()
	if isNil(err) {
		return nil, sessionbridge.ErrInvalidToken
	}
	if err != nil {
		return nil, b.fail("redeem_ticket", err)
	}
	var t sessionbridge.Ticket
	if err := strictjson.DecodeOpen([]byte(body), &t); err != nil {
		return nil, fmt.Errorf("redis: redeem ticket: corrupt ticket: %w", err)
	}
	return &t, nil
}
