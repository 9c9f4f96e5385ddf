package memory_test

import (
	"context"
	"errors"
	"testing"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/memory"
)

func TestStoreThroughManager(t *testing.T) {
	ctx := context.Background()
	st := memory.NewStore(memory.NewBus())
	m := &sessionbridge.Manager{Store: st, NodeID: "n1"}
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
	if st.Writes() != 3 || st.Len() != 0 {
		t.Fatalf("Writes=%d Len=%d, want 3 and 0", st.Writes(), st.Len())
	}
}
