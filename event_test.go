package sessionbridge_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
)

func TestEventTypesKnown(t *testing.T) {
	if len(sessionbridge.EventTypes) != 8 {
		t.Fatalf("EventTypes has %d types, want 8", len(sessionbridge.EventTypes))
	}
	for _, typ := range sessionbridge.EventTypes {
		if !typ.Known() {
			t.Errorf("%s is not Known", typ)
		}
	}
	for _, typ := range []sessionbridge.EventType{"", "bogus", "Updated", "session:updates"} {
		if typ.Known() {
			t.Errorf("%q is Known", typ)
		}
	}
}

func TestKeyEventJSON(t *testing.T) {
	ev := sessionbridge.Event{
		Type: sessionbridge.EventKeyUpdated, KeyID: "2bAAAAAAAAAAAAAA", UserID: "alice", Version: 3,
		Source: sessionbridge.SourceAPI, NodeID: "node-1", Scopes: []string{"ws:connect", "chat.**"},
		Timestamp: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"key_id":"2bAAAAAAAAAAAAAA","user_id":"alice","source":"api","timestamp":"2026-03-01T12:00:00Z",` +
		`"node_id":"node-1","version":3,"scopes":["ws:connect","chat.**"]}`
	if string(b) != want {
		t.Fatalf("payload\n got  %s\n want %s", b, want)
	}
	// No scope left is sent as [], unchanged scopes not at all, and each
	// comes back as it went.
	for _, tc := range []struct {
		scopes []string
		json   string
	}{{[]string{}, `"scopes":[]`}, {nil, ""}} {
		ev.Scopes = tc.scopes
		b, _ := json.Marshal(ev)
		if tc.json != "" && !bytes.Contains(b, []byte(tc.json)) || tc.json == "" && bytes.Contains(b, []byte("scopes")) {
			t.Fatalf("scopes %#v encoded as %s", tc.scopes, b)
		}
		var back sessionbridge.Event
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if (back.Scopes == nil) != (tc.scopes == nil) || len(back.Scopes) != len(tc.scopes) {
			t.Fatalf("scopes %#v came back as %#v", tc.scopes, back.Scopes)
		}
	}
	for _, typ := range sessionbridge.EventTypes {
		want := typ == sessionbridge.EventKeyUpdated || typ == sessionbridge.EventKeyDeleted || typ == sessionbridge.EventKeyExpired
		if typ.IsKey() != want {
			t.Errorf("%s.IsKey() = %v", typ, typ.IsKey())
		}
	}
}

func sampleEvent() sessionbridge.Event {
	return sessionbridge.Event{
		Type: sessionbridge.EventUpdated, SessionID: "2bAAAAAAAAAAAAAAAA", UserID: "alice",
		Updates: json.RawMessage(`{"theme":"dark"}`), Source: sessionbridge.SourceWebSocket,
		Timestamp:    time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC),
		ConnectionID: "c-42", NodeID: "node-1", Version: 7,
		ExpiresAt: time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC),
	}
}

func TestEventJSON(t *testing.T) {
	ev := sampleEvent()
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"session_id":"2bAAAAAAAAAAAAAAAA","user_id":"alice","updates":{"theme":"dark"},"source":"websocket",` +
		`"timestamp":"2026-03-01T12:00:00.123456789Z","connection_id":"c-42","node_id":"node-1","version":7,` +
		`"expires_at":"2026-03-01T12:30:00Z"}`
	if string(b) != want {
		t.Fatalf("payload\n got  %s\n want %s", b, want)
	}
	if len(b) > 300 {
		t.Errorf("payload is %d bytes; the contract says about 200", len(b))
	}
	var back sessionbridge.Event
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	back.Type = ev.Type // carried by the channel, not the payload
	if !sameEvent(back, ev) {
		t.Fatalf("round trip\n got  %+v\n want %+v", back, ev)
	}

	// Optional fields are left out when empty.
	sparse, err := json.Marshal(sessionbridge.Event{Type: sessionbridge.EventDeleted, SessionID: "x", Source: sessionbridge.SourceSystem, NodeID: "n"})
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"type", "updates", "connection_id", "version", "expires_at", "reason", "data", "user_id"} {
		if bytes.Contains(sparse, []byte(`"`+field+`"`)) {
			t.Errorf("empty %s present in %s", field, sparse)
		}
	}
}

func TestSessionHelpers(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := &sessionbridge.Session{
		ID: "id", UserID: "u", Data: json.RawMessage(`{"a":1}`),
		ExpiresAt: now.Add(time.Minute), AbsoluteExpiresAt: now.Add(time.Hour), Version: 3,
	}
	if !s.Deadline().Equal(s.ExpiresAt) {
		t.Fatal("Deadline is not the earlier idle deadline")
	}
	if s.Expired(now) || s.Expired(now.Add(time.Minute-1)) || !s.Expired(now.Add(time.Minute)) {
		t.Fatal("Expired does not switch exactly at the idle deadline")
	}
	s.ExpiresAt = now.Add(2 * time.Hour)
	if !s.Deadline().Equal(s.AbsoluteExpiresAt) || !s.Expired(now.Add(time.Hour)) {
		t.Fatal("the absolute deadline does not bound Deadline and Expired")
	}

	c := s.Clone()
	c.Data[2] = 'b'
	if string(s.Data) != `{"a":1}` {
		t.Fatal("Clone shares Data")
	}
	if (*sessionbridge.Session)(nil).Clone() != nil {
		t.Fatal("Clone of nil is not nil")
	}

	p := (&sessionbridge.Session{ID: "id"}).Public()
	if string(p.Data) != `{}` {
		t.Fatalf("Public of a session without data has data %s, want {}", p.Data)
	}
	b, err := json.Marshal(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("secret")) || bytes.Contains(b, []byte("hash")) {
		t.Fatalf("public view leaks the secret hash: %s", b)
	}
}

func TestPrincipalHasScope(t *testing.T) {
	p := &sessionbridge.Principal{Scopes: []string{"read", "write"}}
	if !p.HasScope("read") || !p.HasScope("") || p.HasScope("admin") {
		t.Fatal("HasScope on a scoped principal")
	}
	all := &sessionbridge.Principal{Scopes: []string{"*"}}
	if !all.HasScope("admin") {
		t.Fatal("* does not grant every scope")
	}
}

func TestPrincipalHasScopePatterns(t *testing.T) {
	p := &sessionbridge.Principal{Scopes: []string{"ws:connect", "chat.*", "!chat.admin"}}
	for name, want := range map[string]bool{
		"ws:connect": true, "chat.send": true, "chat.admin": false, "chat.room.send": false, "session.update": false,
	} {
		if got := p.HasScope(name); got != want {
			t.Errorf("HasScope(%q) = %v, want %v", name, got, want)
		}
	}
	bad := &sessionbridge.Principal{Scopes: []string{"chat.**.x"}}
	if bad.HasScope("chat.a.x") {
		t.Error("patterns that do not compile allow something")
	}
}

func TestCompileScopesLegacyStar(t *testing.T) {
	in := []string{"*", "!admin.*"}
	set, err := sessionbridge.CompileScopes(in)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{
		"ws:connect": true, "chat.room.send": true, "admin.kick": false, "admin": true,
	} {
		if got := set.Allows(name); got != want {
			t.Errorf("bare * then Allows(%q) = %v, want %v", name, got, want)
		}
	}
	if in[0] != "*" {
		t.Error("CompileScopes changed its argument")
	}
	// Only the bare allow pattern is an alias: "chat.*" is still one segment.
	set, _ = sessionbridge.CompileScopes([]string{"chat.*"})
	if set.Allows("chat.room.send") {
		t.Error(`"chat.*" allows two segments`)
	}
}
