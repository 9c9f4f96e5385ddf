package sessionbridge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/memory"
)

// A Manager on the in-process backend: create a session, authenticate its
// token, change its data, log it out.
func ExampleManager() {
	ctx := context.Background()
	backend := memory.New()
	backend.NodeID = "node-1"
	m, err := sessionbridge.NewManager(backend)
	if err != nil {
		panic(err)
	}
	// Run claims expired sessions (and API keys) until ctx is done.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go m.Run(runCtx)

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
