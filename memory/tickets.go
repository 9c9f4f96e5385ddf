package memory

import (
	"container/heap"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sessionbridge/sessionbridge"
)

const (
	ticketBytes = 32
	// ticketLen is the length of an issued ticket: 32 bytes in unpadded base64url.
	ticketLen = 43
)

// Tickets is an in-process [sessionbridge.TicketStore]. Tickets are 32 random
// bytes in base64url; only their SHA-256 is kept. Expired tickets are dropped
// on the next Issue, so no background goroutine is needed and memory is bounded
// by the tickets issued within one TTL.
//
// The zero value is ready to use.
type Tickets struct {
	// Now returns the current time; nil means time.Now. Tests inject a clock.
	Now func() time.Time

	mu      sync.Mutex
	tickets map[[32]byte]ticketEntry
	byTime  ticketHeap
}

type ticketEntry struct {
	t       sessionbridge.Ticket
	expires time.Time
}

// NewTickets returns an empty ticket store on the system clock.
func NewTickets() *Tickets { return &Tickets{} }

func (ts *Tickets) now() time.Time {
	if ts.Now != nil {
		return ts.Now()
	}
	return time.Now()
}

// Issue stores a copy of t under a fresh random ticket valid for ttl and returns
// the ticket. A ttl that is not positive means sessionbridge.TicketTTL.
func (ts *Tickets) Issue(ctx context.Context, t sessionbridge.Ticket, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		ttl = sessionbridge.TicketTTL
	}
	var b [ticketBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("memory: issue ticket: %w", err)
	}
	ticket := base64.RawURLEncoding.EncodeToString(b[:])
	hash := sha256.Sum256([]byte(ticket))
	t.Scopes = slices.Clone(t.Scopes)

	now := ts.now()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.sweep(now)
	if ts.tickets == nil {
		ts.tickets = make(map[[32]byte]ticketEntry)
	}
	exp := now.Add(ttl)
	ts.tickets[hash] = ticketEntry{t: t, expires: exp}
	heap.Push(&ts.byTime, ticketDeadline{hash: hash, expires: exp})
	return ticket, nil
}

// Redeem returns the content of ticket and makes it unusable; of concurrent
// redeems of one ticket exactly one succeeds. It returns
// sessionbridge.ErrInvalidToken for a malformed, unknown, used or expired
// ticket.
func (ts *Tickets) Redeem(ctx context.Context, ticket string) (*sessionbridge.Ticket, error) {
	if len(ticket) != ticketLen {
		return nil, sessionbridge.ErrInvalidToken
	}
	hash := sha256.Sum256([]byte(ticket))
	now := ts.now()
	ts.mu.Lock()
	e, ok := ts.tickets[hash]
	if ok {
		delete(ts.tickets, hash)
	}
	ts.mu.Unlock()
	if !ok || !now.Before(e.expires) {
		return nil, sessionbridge.ErrInvalidToken
	}
	t := e.t
	t.Scopes = slices.Clone(t.Scopes)
	return &t, nil
}

// Len returns the number of tickets held, including expired ones not yet
// swept.
func (ts *Tickets) Len() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.tickets)
}

// sweep drops expired tickets; ts.mu must be held.
func (ts *Tickets) sweep(now time.Time) {
	for len(ts.byTime) > 0 && !now.Before(ts.byTime[0].expires) {
		d := heap.Pop(&ts.byTime).(ticketDeadline)
		// The ticket may have been redeemed already, or (astronomically
		// unlikely) its hash reused; only drop the entry this deadline is for.
		if e, ok := ts.tickets[d.hash]; ok && e.expires.Equal(d.expires) {
			delete(ts.tickets, d.hash)
		}
	}
}

type ticketDeadline struct {
	hash    [32]byte
	expires time.Time
}

type ticketHeap []ticketDeadline

func (h ticketHeap) Len() int           { return len(h) }
func (h ticketHeap) Less(i, j int) bool { return h[i].expires.Before(h[j].expires) }
func (h ticketHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *ticketHeap) Push(x any)        { *h = append(*h, x.(ticketDeadline)) }
func (h *ticketHeap) Pop() any {
	old := *h
	n := len(old)
	d := old[n-1]
	*h = old[:n-1]
	return d
}

var _ sessionbridge.TicketStore = (*Tickets)(nil)
