package redis

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

func TestTickets(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv)
	other := newBackend(t, srv, func(o *Options) { o.Prefix = a.prefix })
	want := sessionbridge.Ticket{UserID: "u1", SessionID: "00AAAAAAAAAAAAAAAA", Method: sessionbridge.AuthSession, Scopes: []string{"a"}}
	tk, err := a.Tickets().Issue(bg, want, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Only the hash is stored: the one key is named by it.
	if n := srv.MustDo("DBSIZE").(int64); n != 1 {
		t.Fatalf("DBSIZE = %d, want 1", n)
	}
	key := a.ticketKey(ticketHash(tk))
	if strings.Contains(key, tk) {
		t.Fatal("the ticket key contains the ticket")
	}
	if ttl := srv.MustDo("PTTL", key).(int64); ttl <= 0 || ttl > 60000 {
		t.Fatalf("ticket PTTL = %d", ttl)
	}
	if v := srv.MustDo("GET", key).(string); strings.Contains(v, tk) {
		t.Fatal("the ticket value contains the ticket")
	}
	got, err := other.Tickets().Redeem(bg, tk) // redeemable on another node
	if err != nil {
		t.Fatal(err)
	}
	if got.UserID != want.UserID || got.SessionID != want.SessionID || got.Method != want.Method || len(got.Scopes) != 1 {
		t.Fatalf("Redeem = %+v, want %+v", got, want)
	}
	if _, err := a.Tickets().Redeem(bg, tk); !errors.Is(err, sessionbridge.ErrInvalidToken) {
		t.Fatalf("second Redeem = %v, want ErrInvalidToken", err)
	}
	for _, bad := range []string{"", "short", strings.Repeat("A", 43) + "x", strings.Repeat("*", 43)} {
		if _, err := a.Tickets().Redeem(bg, bad); !errors.Is(err, sessionbridge.ErrInvalidToken) {
			t.Fatalf("Redeem(%q) = %v, want ErrInvalidToken", bad, err)
		}
	}
}

func TestTicketExpires(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv)
	tk, err := a.Tickets().Issue(bg, sessionbridge.Ticket{UserID: "u"}, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the ticket to expire", func() bool {
		return srv.MustDo("EXISTS", a.ticketKey(ticketHash(tk))).(int64) == 0
	})
	if _, err := a.Tickets().Redeem(bg, tk); !errors.Is(err, sessionbridge.ErrInvalidToken) {
		t.Fatalf("Redeem of an expired ticket = %v", err)
	}
}

func TestTicketConcurrentRedeemOnce(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv)
	b := newBackend(t, srv, func(o *Options) { o.Prefix = a.prefix })
	for range 20 {
		tk, err := a.Tickets().Issue(bg, sessionbridge.Ticket{UserID: "u"}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		var ok atomic.Int32
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				node := a
				if i%2 == 1 {
					node = b
				}
				if _, err := node.Tickets().Redeem(bg, tk); err == nil {
					ok.Add(1)
				}
			}()
		}
		wg.Wait()
		if ok.Load() != 1 {
			t.Fatalf("%d concurrent redeems succeeded, want 1", ok.Load())
		}
	}
}
