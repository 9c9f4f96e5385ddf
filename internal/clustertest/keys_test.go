package clustertest

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/gateway"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
	"github.com/sessionbridge/sessionbridge/keys"
)

// newKey creates a key of user on n with scopes and ttl (zero: never
// expires).
func newKey(t *testing.T, n *node, user string, ttl time.Duration, scopes ...string) (string, *sb.APIKey) {
	t.Helper()
	key, k, err := n.keys.Create(bg, keys.NewKey{UserID: user, Name: "ci", Scopes: scopes, TTL: ttl})
	if err != nil {
		t.Fatalf("create key on %s: %v", n.name, err)
	}
	return key, k
}

func TestKeyRevokeOnAClosesSocketOnB(t *testing.T) {
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, nodeOpts{})
	key, k := newKey(t, a, "alice", 0, "ws:connect")
	c := dialKey(t, b, key)
	if _, err := a.keys.Delete(bg, k.ID); err != nil {
		t.Fatal(err)
	}
	c.expectClose(gateway.CloseReauthenticate, gateway.ReasonAPIKeyRevoked, eventWait)
	for _, n := range []*node{a, b} {
		h := http.Header{"Authorization": {"Bearer " + key}}
		if _, resp, err := tryDialHeader(n.srv.URL, h); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("dial %s with a revoked key: %v, %v; want 401", n.name, err, resp)
		}
	}
}

func TestKeyScopeChangeOnAReachesB(t *testing.T) {
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, nodeOpts{})
	key, k := newKey(t, a, "bob", 0, "ws:connect", "chat.*")
	c := dialKey(t, b, key)
	scopes := []string{"ws:connect", "chat.**"}
	if _, err := a.keys.Update(bg, k.ID, keys.Change{Scopes: &scopes}, 0); err != nil {
		t.Fatal(err)
	}
	f := c.expect(gateway.TypeScopesUpdated, eventWait)
	var d struct {
		Scopes []string `json:"scopes"`
	}
	if err := json.Unmarshal(f.Data, &d); err != nil || !slices.Equal(d.Scopes, scopes) {
		t.Fatalf("scopes.updated %s, want %v", f.Data, scopes)
	}
	if !c.isOpen(eventWait) {
		t.Fatal("a scope change closed the socket")
	}
	lost := []string{"chat.**"}
	if _, err := a.keys.Update(bg, k.ID, keys.Change{Scopes: &lost}, 0); err != nil {
		t.Fatal(err)
	}
	c.expectClose(gateway.CloseForbidden, gateway.ReasonForbidden, eventWait)
}

func TestKeyRollGraceWarnsThenClosesOnB(t *testing.T) {
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, nodeOpts{warning: time.Second})
	key, k := newKey(t, a, "carol", time.Hour, "ws:connect")
	c := dialKey(t, b, key)
	newKeyStr, next, err := a.keys.Roll(bg, k.ID, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c2 := dialKey(t, b, newKeyStr)
	f := c.expect(gateway.TypeAPIKeyExpiring, eventWait)
	var d struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(f.Data, &d); err != nil {
		t.Fatal(err)
	}
	old, err := a.keys.Get(bg, k.ID)
	if err != nil || !d.ExpiresAt.Equal(old.ExpiresAt) || !old.ExpiresAt.Before(next.ExpiresAt) {
		t.Fatalf("api_key.expiring at %v; the old key expires %v (%v), the new one %v", d.ExpiresAt, old.ExpiresAt, err, next.ExpiresAt)
	}
	c.expectClose(gateway.CloseReauthenticate, gateway.ReasonAPIKeyRevoked, eventWait)
	if !c2.isOpen(eventWait) {
		t.Fatal("the new key's socket closed at the end of the old key's grace")
	}
}

func TestKeySubscriptionKilledThenRevokeStillCloses(t *testing.T) {
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, nodeOpts{})
	key, k := newKey(t, a, "dave", 0, "ws:connect")
	c := dialKey(t, b, key)
	// B's verification cache holds the key too.
	if _, err := b.keys.Verify(bg, key, ""); err != nil {
		t.Fatal(err)
	}
	// Cut every subscription, then revoke: the deleted event may be
	// published while B is not subscribed. B's re-validation after it
	// re-subscribes must close the socket (the sweep is an hour away), and
	// its cache must forget the key.
	if _, err := srv.Do("CLIENT", "KILL", "TYPE", "pubsub"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.keys.Delete(bg, k.ID); err != nil {
		t.Fatal(err)
	}
	c.expectClose(gateway.CloseReauthenticate, gateway.ReasonAPIKeyRevoked, eventWait)
	eventually(t, eventWait, "B to refuse the revoked key", func() bool {
		_, err := b.keys.Verify(bg, key, "")
		return errors.Is(err, sb.ErrInvalidToken)
	})
}

func TestKeyCacheOnAInvalidatedByRevokeOnB(t *testing.T) {
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, nodeOpts{})
	key, k := newKey(t, a, "erin", 0, "ws:connect")
	// The gap that follows A's first subscription empties its cache; verify
	// until the record stays.
	eventually(t, eventWait, "A to cache the key", func() bool {
		_, err := a.keys.Verify(bg, key, "")
		return err == nil && a.keys.Cache.Len() == 1
	})
	// Warm: no Redis round trip. Redis counts the commands it runs.
	before := commandCalls(t, srv, "hgetall")
	for range 10 {
		if _, err := a.keys.Verify(bg, key, ""); err != nil {
			t.Fatal(err)
		}
	}
	if after := commandCalls(t, srv, "hgetall"); after != before {
		t.Fatalf("10 warm verifications ran %d HGETALL in Redis, want 0", after-before)
	}
	if _, err := b.keys.Delete(bg, k.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, eventWait, "A to refuse the key revoked on B", func() bool {
		_, err := a.keys.Verify(bg, key, "")
		return errors.Is(err, sb.ErrInvalidToken)
	})
}

// commandCalls returns how often Redis ran cmd, from INFO commandstats.
func commandCalls(t *testing.T, srv *redistest.Server, cmd string) int {
	t.Helper()
	info, err := srv.Do("INFO", "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info.(string), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls="); ok {
			n := 0
			for _, ch := range rest {
				if ch < '0' || ch > '9' {
					break
				}
				n = n*10 + int(ch-'0')
			}
			return n
		}
	}
	return 0
}

func TestKeyExpiryPublishedOnceWithTwoClaimers(t *testing.T) {
	srv := redistest.Start(t)
	// Both nodes claim expiries every 20ms: they race for every key.
	a, b := twoNodes(t, srv, nodeOpts{expiry: 20 * time.Millisecond})
	count := rawSubscriber(t, srv, "sb:apikey:expired")
	const n = 6
	var ids []string
	var clients []*client
	for i := range n {
		key, k := newKey(t, a, "frank", 2*time.Second, "ws:connect")
		ids = append(ids, k.ID)
		on := a
		if i%2 == 1 {
			on = b
		}
		clients = append(clients, dialKey(t, on, key))
	}
	for _, c := range clients {
		c.expectClose(gateway.CloseReauthenticate, gateway.ReasonAPIKeyRevoked, eventWait)
	}
	eventually(t, eventWait, "every key expiry to be published", func() bool {
		for _, id := range ids {
			if count(`"key_id":"`+id+`"`) == 0 {
				return false
			}
		}
		return true
	})
	for _, nd := range []*node{a, b} {
		if got, err := nd.manager.ClaimExpiredKeys(bg, 0); err != nil || len(got) != 0 {
			t.Fatalf("ClaimExpiredKeys on %s after the fact = %d, %v", nd.name, len(got), err)
		}
	}
	// Pub/sub keeps order on one connection: once a marker published after
	// every claim arrives, every expired event has too.
	srv.MustDo("PUBLISH", "sb:apikey:expired", `{"key_id":"marker"}`)
	eventually(t, eventWait, "the marker", func() bool { return count("marker") == 1 })
	for _, id := range ids {
		if got := count(`"key_id":"` + id + `"`); got != 1 {
			t.Fatalf("key %s: %d expired events, want exactly 1", id, got)
		}
	}
	// Expired keys are still there, shown as expired, and refused.
	k, err := a.keys.Get(bg, ids[0])
	if err != nil || !k.Expired(time.Now()) {
		t.Fatalf("expired key reads as %+v, %v", k, err)
	}
}

// TestKeyRevokeWithRedisAway: a revoke while Redis is away fails with
// ErrUnavailable and leaves nothing half done: the key, its indexes and its
// sockets are all as before, and a revoke once Redis is back works.
func TestKeyRevokeWithRedisAway(t *testing.T) {
	srv := redistest.Start(t, redistest.AOF("always")...)
	a, b := twoNodes(t, srv, nodeOpts{timeout: 500 * time.Millisecond})
	key, k := newKey(t, a, "grace", time.Hour, "ws:connect")
	c := dialKey(t, b, key)
	srv.Stop()
	if _, err := a.keys.Delete(bg, k.ID); !errors.Is(err, sb.ErrUnavailable) {
		t.Fatalf("Delete with Redis away = %v, want ErrUnavailable", err)
	}
	if _, _, err := a.keys.Roll(bg, k.ID, time.Minute); !errors.Is(err, sb.ErrUnavailable) {
		t.Fatalf("Roll with Redis away = %v, want ErrUnavailable", err)
	}
	if !c.isOpen(eventWait) {
		t.Fatal("the key's socket closed while Redis was away")
	}
	srv.RestartKeepingData()
	shard := sb.ShardOfID(k.ID)
	if n := srv.MustDo("EXISTS", "sb:k:{"+shard+"}"+k.ID).(int64); n != 1 {
		t.Fatal("the key's hash is gone after a failed revoke")
	}
	if v := srv.MustDo("ZSCORE", "sb:uk:{"+sb.Shard("grace")+"}grace", k.ID); v == nil {
		t.Fatal("the user index lost the key")
	}
	if v := srv.MustDo("ZSCORE", "sb:kx:{"+shard+"}", k.ID); v == nil {
		t.Fatal("the expiry index lost the key")
	}
	if keys := srv.MustDo("ZCARD", "sb:uk:{"+sb.Shard("grace")+"}grace").(int64); keys != 1 {
		t.Fatalf("the user has %d keys after a failed roll, want 1", keys)
	}
	eventually(t, eventWait, "A to reach Redis again", func() bool { return a.backend.Ping(bg) == nil })
	eventually(t, eventWait, "the revoke to succeed", func() bool {
		_, err := a.keys.Delete(bg, k.ID)
		return err == nil
	})
	c.expectClose(gateway.CloseReauthenticate, gateway.ReasonAPIKeyRevoked, eventWait)
}

// TestKeySecretNowhere: no key secret, nor the key, is ever in Redis, on the
// bus or in a log line.
func TestKeySecretNowhere(t *testing.T) {
	srv := redistest.Start(t)
	var logs lockedBuffer
	a, b := twoNodes(t, srv, nodeOpts{logs: &logs, expiry: 20 * time.Millisecond, warning: time.Second})
	payloads := rawPatternSubscriber(t, srv, "sb:apikey:*")

	key, k := newKey(t, a, "heidi", time.Hour, "ws:connect")
	c := dialKey(t, b, key)
	scopes := []string{"ws:connect", "x"}
	if _, err := a.keys.Update(bg, k.ID, keys.Change{Scopes: &scopes}, 0); err != nil {
		t.Fatal(err)
	}
	rolled, _, err := a.keys.Roll(bg, k.ID, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.expectClose(gateway.CloseReauthenticate, gateway.ReasonAPIKeyRevoked, eventWait)
	c2 := dialKey(t, a, rolled)
	rolledID, _, _ := sb.ParseAPIKey(rolled)
	if _, err := b.keys.Delete(bg, rolledID); err != nil {
		t.Fatal(err)
	}
	c2.expectClose(gateway.CloseReauthenticate, gateway.ReasonAPIKeyRevoked, eventWait)
	// A refused attempt with a wrong secret is logged too.
	if _, resp, err := tryDialHeader(a.srv.URL, http.Header{"Authorization": {"Bearer " + key[:len(key)-1] + string(key[len(key)-1]^1)}}); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("dial with a mistyped key: %v", err)
	}
	eventually(t, eventWait, "the updated, deleted and expired events", func() bool {
		all := strings.Join(payloads(), "\n")
		return strings.Contains(all, `"scopes":["ws:connect","x"]`) &&
			strings.Contains(all, `"key_id":"`+rolledID+`"`) && strings.Count(all, `"key_id":"`+k.ID+`"`) >= 3
	})

	var secrets []string
	for _, full := range []string{key, rolled} {
		_, secret, err := sb.ParseAPIKey(full)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, full, secret)
	}
	check := func(where, text string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Fatalf("a key secret is in %s", where)
			}
		}
	}
	for _, p := range payloads() {
		check("a bus payload", p)
	}
	check("the logs", logs.String())
	if !strings.Contains(logs.String(), k.ID) {
		t.Fatal("the logs never name the key by its ID; the check above proves nothing")
	}
	dump := srv.MustDo("KEYS", "*").([]any)
	for _, name := range dump {
		key := name.(string)
		check("a Redis key name", key)
		switch srv.MustDo("TYPE", key).(string) {
		case "hash":
			for _, v := range srv.MustDo("HGETALL", key).([]any) {
				check("Redis hash "+key, v.(string))
			}
		case "zset":
			for _, v := range srv.MustDo("ZRANGE", key, "0", "-1").([]any) {
				check("Redis sorted set "+key, v.(string))
			}
		case "string":
			check("Redis string "+key, srv.MustDo("GET", key).(string))
		}
	}
}

// rawPatternSubscriber collects every message on channels matching pattern
// with a plain rueidis client, independent of the code under test.
func rawPatternSubscriber(t *testing.T, srv *redistest.Server, pattern string) func() []string {
	t.Helper()
	return rawMessages(t, srv.Addr(), 1, func(c rueidis.Client) rueidis.Completed {
		return c.B().Psubscribe().Pattern(pattern).Build()
	})
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
