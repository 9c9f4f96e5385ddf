package redis

import (
	"strings"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

// Events are read like every other input: a payload with a member twice or
// invalid UTF-8 is dropped (and, as it may have been a revocation, answered
// with a re-validation), never read one of several ways.
func TestBusRefusesAmbiguousPayloads(t *testing.T) {
	srv := redistest.Start(t)
	m := newCountingMetrics()
	b := newBackend(t, srv, func(o *Options) { o.Metrics = m })
	rec := &recorder{}
	subscribe(t, b, rec)
	id := sessionIDIn(t, "c3")
	followSessions(t, b, rec, id)
	gaps := rec.gapCount()
	ch := b.sessionChannel(id)
	srv.MustDo("SPUBLISH", ch, `{"type":"deleted","session_id":"`+id+`","session_id":"b","source":"api","node_id":"n"}`)
	srv.MustDo("SPUBLISH", ch, "{\"type\":\"deleted\",\"session_id\":\"\xffroot\",\"source\":\"api\",\"node_id\":\"n\"}")
	// Member names match exactly: a case variant is an unknown member,
	// skipped, so this event is about the exact name's session only.
	srv.MustDo("SPUBLISH", ch, `{"type":"deleted","SESSION_ID":"variant","session_id":"`+id+`","source":"api","node_id":"n"}`)
	eventually(t, 5*time.Second, "the exact-name event", func() bool {
		_, ok := rec.find(func(ev sessionbridge.Event) bool { return ev.SessionID == id })
		return ok
	})
	if got := m.get(func(m *countingMetrics) int { return m.errors["decode_event"] }); got != 2 {
		t.Fatalf("decode errors = %d, want 2", got)
	}
	if n := rec.count(func(sessionbridge.Event) bool { return true }); n != 1 {
		t.Fatalf("delivered %d events, want only the unambiguous one", n)
	}
	eventually(t, 5*time.Second, "a gap for the refused events", func() bool { return rec.gapCount() > gaps })
}

func TestTicketWithAmbiguousBodyIsRefused(t *testing.T) {
	srv := redistest.Start(t)
	a := newBackend(t, srv)
	tk, err := a.Tickets().Issue(bg, sessionbridge.Ticket{UserID: "alice", Method: sessionbridge.AuthSession}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	key := a.ticketKey(ticketHash(tk))
	body := srv.MustDo("GET", key).(string)
	twice := strings.Replace(body, `"user_id":"alice"`, `"user_id":"alice","user_id":"root"`, 1)
	if twice == body {
		t.Fatalf("ticket body %s has no user_id to duplicate", body)
	}
	srv.MustDo("SET", key, twice)
	if got, err := a.Tickets().Redeem(bg, tk); err == nil || !strings.Contains(err.Error(), "corrupt ticket") {
		t.Fatalf("Redeem of a ticket naming two users = %+v, %v; want a corrupt-ticket error", got, err)
	}
}

// An event must be about what its channel carries: one that names another
// session than its session channel's, or another user than its user
// channel's, is dropped and answered with a re-validation.
func TestBusRefusesEventsAboutAnotherChannelsTopic(t *testing.T) {
	srv := redistest.Start(t)
	m := newCountingMetrics()
	b := newBackend(t, srv, func(o *Options) { o.Metrics = m })
	rec := &recorder{}
	subscribe(t, b, rec)
	own, other := sessionIDIn(t, "c3"), sessionIDIn(t, "c3")
	followSessions(t, b, rec, own, other)
	follow(t, b, rec, sessionbridge.UserTopic("ann"))
	gaps := rec.gapCount()
	srv.MustDo("SPUBLISH", b.sessionChannel(own), `{"type":"deleted","session_id":"`+other+`","source":"api","node_id":"n"}`)
	srv.MustDo("SPUBLISH", b.userChannel("ann"), `{"type":"message","user_id":"bob","source":"api","node_id":"n","data":{}}`)
	// Then one that belongs where it is: once it arrives, the two above
	// were read (one channel, one connection, in order).
	srv.MustDo("SPUBLISH", b.sessionChannel(own), `{"type":"deleted","session_id":"`+own+`","source":"api","node_id":"n"}`)
	eventually(t, 5*time.Second, "the event on its own channel", func() bool {
		_, ok := rec.find(func(ev sessionbridge.Event) bool { return ev.SessionID == own })
		return ok
	})
	eventually(t, 5*time.Second, "both misplaced events refused", func() bool {
		return m.get(func(m *countingMetrics) int { return m.errors["decode_event"] }) == 2
	})
	if n := rec.count(func(ev sessionbridge.Event) bool { return ev.SessionID == other || ev.UserID == "bob" }); n != 0 {
		t.Fatalf("%d misplaced events delivered, want 0", n)
	}
	eventually(t, 5*time.Second, "a gap for the refused events", func() bool { return rec.gapCount() > gaps })
}
