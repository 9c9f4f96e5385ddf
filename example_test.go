package sessionbridge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/memory"
)

// A Manager on the in-process store: create a session, authenticate its
// token, change its data, log it out.
func ExampleManager() {
	ctx := context.Background()
	m := &sessionbridge.Manager{Store: memory.NewStore(memory.NewBus()), NodeID: "node-1"}

	s, token, err := m.Create(ctx, sessionbridge.NewSession{UserID: "alice", Data: json.RawMessage(`{"theme":"dark"}`)},
		sessionbridge.Change{Source: sessionbridge.SourceHTTP})
	if err != nil {
		panic(err)
	}
	got, err := m.Authenticate(ctx, token)
	fmt.Println(got.ID == s.ID, err)

	updated, err := m.Update(ctx, s.ID, json.RawMessage(`{"theme":null,"lang":"fr"}`), 0, sessionbridge.Change{Source: sessionbridge.SourceAPI})
	fmt.Println(string(updated.Data), updated.Version, err)

	if _, err := m.Delete(ctx, s.ID, sessionbridge.ReasonLogout, sessionbridge.Change{Source: sessionbridge.SourceHTTP}); err != nil {
		panic(err)
	}
	_, err = m.Authenticate(ctx, token)
	fmt.Println(errors.Is(err, sessionbridge.ErrInvalidToken))
	// Output:
	// true <nil>
	// {"lang":"fr"} 2 <nil>
	// true
}

func ExampleMergePatch() {
	out, err := sessionbridge.MergePatch(
		json.RawMessage(`{"a":"b","c":{"d":"e","f":"g"}}`),
		json.RawMessage(`{"a":"z","c":{"f":null}}`),
	)
	fmt.Println(string(out), err)
	// Output: {"a":"z","c":{"d":"e"}} <nil>
}
