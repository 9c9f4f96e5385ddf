package redis

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

// TestForeignApplicationRecipe follows docs/redis.md the way an application
// in another language would, with raw Redis commands only: create a session
// by hand, authenticate it through the Manager, revoke it with the delete
// script.
func TestForeignApplicationRecipe(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv, func(o *Options) { o.Prefix = "sb:" })
	rec := &recorder{}
	subscribe(t, b, rec)

	user := "alice@example.com"
	sum := sha256.Sum256([]byte(user))
	shard := hex.EncodeToString(sum[:1])
	var idRand [12]byte
	var secretRand [32]byte
	_, _ = rand.Read(idRand[:])
	_, _ = rand.Read(secretRand[:])
	id := shard + base64.RawURLEncoding.EncodeToString(idRand[:])
	secret := base64.RawURLEncoding.EncodeToString(secretRand[:])
	token := id + "." + secret
	secretHash := sha256.Sum256([]byte(secret))

	now := time.Now()
	ns := func(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }
	ms := func(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }
	deadline := now.Add(30 * time.Minute)
	skey, ukey, xkey := "sb:s:{"+shard+"}"+id, "sb:u:{"+shard+"}"+user, "sb:x:{"+shard+"}"
	srv.MustDo("HSET", skey, "id", id, "user_id", user, "secret_hash", hex.EncodeToString(secretHash[:]),
		"data", `{"plan":"pro"}`, "device", `{}`, "version", "1",
		"created_at", ns(now), "last_seen_at", ns(now), "expires_at", ns(deadline), "absolute_expires_at", ns(now.Add(24*time.Hour)))
	srv.MustDo("PEXPIREAT", skey, ms(deadline.Add(time.Hour)))
	srv.MustDo("SADD", ukey, id)
	srv.MustDo("PEXPIREAT", ukey, ms(deadline.Add(time.Hour)))
	srv.MustDo("ZADD", xkey, ms(deadline), id)
	// The node holds sockets of the user and, once it has one, of the
	// session: it follows both channels.
	follow(t, b, rec, sessionbridge.UserTopic(user), sessionbridge.SessionTopic(id))
	srv.MustDo("SPUBLISH", "sb:e:{"+shard+"}:u:"+user, `{"type":"created","session_id":"`+id+`","user_id":"`+user+`","source":"api","timestamp":"`+now.UTC().Format(time.RFC3339Nano)+`","node_id":"billing-app","version":1}`)

	m := nodeManager(t, b)
	s, err := m.Authenticate(bg, token)
	if err != nil {
		t.Fatalf("Authenticate a hand-made session: %v", err)
	}
	if s.UserID != user || string(s.Data) != `{"plan":"pro"}` || !s.ExpiresAt.Equal(time.Unix(0, deadline.UnixNano())) {
		t.Fatalf("session = %+v", s)
	}
	if list, err := m.List(bg, user); err != nil || len(list) != 1 {
		t.Fatalf("List = %v, %v", list, err)
	}
	eventually(t, 5*time.Second, "the created event", func() bool {
		_, ok := rec.find(func(ev sessionbridge.Event) bool { return ev.Type == sessionbridge.EventCreated && ev.SessionID == id })
		return ok
	})

	// Revoke with the delete script, as documented.
	payload := `{"type":"deleted","session_id":"` + id + `","user_id":"@@sb:user_id@@","source":"api","timestamp":"` + now.UTC().Format(time.RFC3339Nano) + `","node_id":"billing-app","reason":"revoked"}`
	if got := srv.MustDo("EVAL", luaDelete, "2", skey, xkey, "sb:e:{"+shard+"}:s:"+id, payload, "u", id, "sb:u:{"+shard+"}"); len(got.([]any)) == 0 {
		t.Fatal("delete script found nothing")
	}
	// This node's cached copy goes with the invalidation Redis pushes.
	eventually(t, 5*time.Second, "the revoked token to stop authenticating", func() bool {
		_, err := m.Authenticate(bg, token)
		return errors.Is(err, sessionbridge.ErrInvalidToken)
	})
	ev, ok := sessionbridge.Event{}, false
	eventually(t, 5*time.Second, "the deleted event", func() bool {
		ev, ok = rec.find(func(ev sessionbridge.Event) bool { return ev.Type == sessionbridge.EventDeleted && ev.SessionID == id })
		return ok
	})
	if ev.UserID != user || ev.Reason != sessionbridge.ReasonRevoked {
		t.Fatalf("deleted event = %+v", ev)
	}
	if n := srv.MustDo("SCARD", ukey).(int64); n != 0 {
		t.Fatalf("user index has %d members after revoke", n)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{
		{},
		{URL: "http://example.invalid"},
		{URL: "redis://127.0.0.1:1/0", Prefix: "a{b}:"},
	} {
		if b, err := New(context.Background(), o); err == nil {
			b.Close()
			t.Errorf("New(%+v): want an error", o)
		}
	}
	// Nothing listens on port 1: the connection error says unavailable.
	_, err := New(context.Background(), Options{URL: "redis://127.0.0.1:1/0", Timeout: 200 * time.Millisecond})
	if !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Fatalf("New against a closed port = %v, want ErrUnavailable", err)
	}
}
