package memory_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/memory"
)

func TestStoreThroughManager(t *testing.T) {
	ctx := context.Background()
	b := memory.New()
	b.NodeID = "n1"
	rec := newRecorder()
	subscribe(t, b.Bus.(*memory.Bus), rec)
	m, err := sessionbridge.NewManager(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.NodeID() != "n1" {
		t.Fatalf("NodeID() = %q, want the backend's n1", m.NodeID())
	}
	s, token, err := m.Create(ctx, sessionbridge.NewSession{UserID: "alice"}, sessionbridge.Change{Source: sessionbridge.SourceHTTP})
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Authenticate(ctx, token)
	if err != nil || got.ID != s.ID {
		t.Fatalf("Authenticate = %v, %v", got, err)
	}
	if _, err := m.Update(ctx, s.ID, []byte(`{"a":1}`), 0, sessionbridge.Change{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Delete(ctx, s.ID, sessionbridge.ReasonLogout, sessionbridge.Change{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Authenticate(ctx, token); !errors.Is(err, sessionbridge.ErrInvalidToken) {
		t.Fatalf("Authenticate after delete = %v", err)
	}
	st := b.Store.(*memory.Store)
	if st.Writes() != 3 || st.Len() != 0 {
		t.Fatalf("Writes=%d Len=%d, want 3 and 0", st.Writes(), st.Len())
	}
	// The key store publishes on the same bus as the session store: the
	// backend is one node's, not a set of parts that may not match.
	k := &sessionbridge.APIKey{ID: "2bAAAAAAAAAAAAAA", UserID: "alice", Version: 1, CreatedAt: time.Now()}
	if err := b.Keys.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Keys.DeleteKey(ctx, k.ID, sessionbridge.Event{NodeID: "n1"}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "the session and key events", func(r *recorder) bool {
		var sess, key int
		for _, ev := range r.events {
			switch {
			case ev.SessionID == s.ID:
				sess++
			case ev.Type == sessionbridge.EventKeyDeleted && ev.KeyID == k.ID:
				key++
			}
		}
		return sess == 3 && key == 1
	})
	ticket, err := b.Tickets.Issue(ctx, sessionbridge.Ticket{UserID: "alice"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Tickets.Redeem(ctx, ticket); err != nil || got.UserID != "alice" {
		t.Fatalf("Redeem = %v, %v", got, err)
	}
}
