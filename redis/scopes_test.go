package redis

import (
	"slices"
	"testing"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

// TestSessionScopesField reads the scopes field as docs/redis.md states it:
// a JSON array, null, empty or absent (the default), anything else a
// corrupt session.
func TestSessionScopesField(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv, func(o *Options) { o.DisableClientCache = true })
	st := b.Store()
	s := newSession(t, "alice")
	if err := st.Create(bg, s, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	key := b.sessionKey(s.ID)
	if got := srv.MustDo("HGET", key, "scopes"); got != "null" {
		t.Fatalf("scopes field of a session with the default: %v, want null", got)
	}
	for _, tc := range []struct {
		field string // "-" deletes it
		want  []string
	}{
		{`["ws:connect","chat.*","!chat.admin"]`, []string{"ws:connect", "chat.*", "!chat.admin"}},
		{`[]`, []string{}},
		{`null`, nil},
		{``, nil},
		{`-`, nil},
	} {
		if tc.field == "-" {
			srv.MustDo("HDEL", key, "scopes")
		} else {
			srv.MustDo("HSET", key, "scopes", tc.field)
		}
		got, err := st.Get(bg, s.ID)
		if err != nil {
			t.Fatalf("scopes %q: %v", tc.field, err)
		}
		if (got.Scopes == nil) != (tc.want == nil) || !slices.Equal(got.Scopes, tc.want) {
			t.Errorf("scopes %q read as %#v, want %#v", tc.field, got.Scopes, tc.want)
		}
	}
	for _, bad := range []string{`"**"`, `{"a":1}`, `[1]`, `["a","a"`, `[null]`} {
		srv.MustDo("HSET", key, "scopes", bad)
		if got, err := st.Get(bg, s.ID); err == nil {
			t.Errorf("scopes %q read as %#v, want a corrupt session", bad, got.Scopes)
		}
	}
}
