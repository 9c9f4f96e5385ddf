package memory_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/memory"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestTicketsSingleUse(t *testing.T) {
	ctx := context.Background()
	ts := memory.NewTickets()
	want := sessionbridge.Ticket{UserID: "u1", SessionID: "s1", Method: sessionbridge.AuthSession, Scopes: []string{"read"}}
	ticket, err := ts.Issue(ctx, want, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(ticket) != 43 {
		t.Fatalf("ticket %d characters, want 43 (32 bytes base64url)", len(ticket))
	}
	want.Scopes[0] = "changed by caller" // the store kept its own copy
	got, err := ts.Redeem(ctx, ticket)
	if err != nil {
		t.Fatal(err)
	}
	if got.UserID != "u1" || got.SessionID != "s1" || got.Method != sessionbridge.AuthSession || !slices.Equal(got.Scopes, []string{"read"}) {
		t.Fatalf("redeemed %+v", got)
	}
	if _, err := ts.Redeem(ctx, ticket); !errors.Is(err, sessionbridge.ErrInvalidToken) {
		t.Fatalf("second redeem = %v, want ErrInvalidToken", err)
	}
	if ts.Len() != 0 {
		t.Fatalf("Len() = %d after redeem, want 0", ts.Len())
	}
}

func TestTicketsIssueAreDistinct(t *testing.T) {
	ts := memory.NewTickets()
	seen := map[string]bool{}
	for range 1000 {
		tk, err := ts.Issue(context.Background(), sessionbridge.Ticket{UserID: "u"}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if seen[tk] {
			t.Fatalf("ticket %q issued twice", tk)
		}
		seen[tk] = true
	}
}

func TestTicketsRejectUnknownAndMalformed(t *testing.T) {
	ts := memory.NewTickets()
	for _, tk := range []string{"", "short", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", string(make([]byte, 10000))} {
		if _, err := ts.Redeem(context.Background(), tk); !errors.Is(err, sessionbridge.ErrInvalidToken) {
			t.Errorf("Redeem(%.10q) = %v, want ErrInvalidToken", tk, err)
		}
	}
}

func TestTicketsExpire(t *testing.T) {
	ctx := context.Background()
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	ts := &memory.Tickets{Now: clk.Now}
	old, err := ts.Issue(ctx, sessionbridge.Ticket{UserID: "u"}, sessionbridge.TicketTTL)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(sessionbridge.TicketTTL - time.Nanosecond)
	live, err := ts.Issue(ctx, sessionbridge.Ticket{UserID: "u"}, 0) // 0 means TicketTTL
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Nanosecond)
	if _, err := ts.Redeem(ctx, old); !errors.Is(err, sessionbridge.ErrInvalidToken) {
		t.Fatalf("redeem at expiry = %v, want ErrInvalidToken", err)
	}
	if _, err := ts.Redeem(ctx, live); err != nil {
		t.Fatalf("redeem of live ticket: %v", err)
	}

	// Expired tickets nobody redeemed are swept on the next Issue.
	for range 100 {
		if _, err := ts.Issue(ctx, sessionbridge.Ticket{UserID: "u"}, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(time.Second)
	if _, err := ts.Issue(ctx, sessionbridge.Ticket{UserID: "u"}, time.Second); err != nil {
		t.Fatal(err)
	}
	if got := ts.Len(); got != 1 {
		t.Fatalf("Len() = %d after sweep, want 1", got)
	}
}

func TestTicketsConcurrentRedeemExactlyOnce(t *testing.T) {
	ctx := context.Background()
	ts := memory.NewTickets()
	for range 50 {
		tk, err := ts.Issue(ctx, sessionbridge.Ticket{UserID: "u"}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		var wins atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 8 {
			wg.Go(func() {
				<-start
				if _, err := ts.Redeem(ctx, tk); err == nil {
					wins.Add(1)
				} else if !errors.Is(err, sessionbridge.ErrInvalidToken) {
					t.Errorf("redeem: %v", err)
				}
			})
		}
		close(start)
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("%d redeems succeeded, want 1", wins.Load())
		}
	}
}
