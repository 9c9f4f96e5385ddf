package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/auth"
	"github.com/sessionbridge/sessionbridge/keys"
	"github.com/sessionbridge/sessionbridge/memory"
)

// keyEnv is an env whose API keys are real ones, managed by a keys.Manager
// on a memory key store that publishes on the env's bus, with the
// verification cache fed by the gateway.
type keyEnv struct {
	*env
	km *keys.Manager
}

func newKeyEnv(t *testing.T) *keyEnv { return newKeyEnvWith(t, nil) }

// newKeyEnvWith is newKeyEnv with the key verifier wrapped by wrap.
func newKeyEnvWith(t *testing.T, wrap func(auth.KeyVerifier, *keys.Manager) auth.KeyVerifier) *keyEnv {
	t.Helper()
	ke := &keyEnv{}
	var clock *fakeClock
	now := func() time.Time { return clock.Now() }
	var st *memory.KeyStore
	e := newEnvWith(t, func(b *sb.Backend) {
		// The key store publishes on the node's bus.
		st = memory.NewKeyStore(b.Bus.(*lossyBus).Bus)
		b.Keys = st
	}, func(c *Config) {
		ke.km = &keys.Manager{Store: st, Cache: &keys.Cache{}, NodeID: c.Manager.NodeID(), Now: now}
		c.APIKeys = ke.km
		if wrap != nil {
			c.APIKeys = wrap(c.APIKeys, ke.km)
		}
		c.KeyEvents = ke.km.Cache
		c.KeyStore = st
	})
	clock = e.clock
	ke.env = e
	return ke
}

func (ke *keyEnv) key(scopes ...string) (string, *sb.APIKey) {
	ke.t.Helper()
	key, k, err := ke.km.Create(context.Background(), keys.NewKey{UserID: "alice", Name: "k", Scopes: scopes, TTL: time.Hour})
	if err != nil {
		ke.t.Fatal(err)
	}
	return key, k
}

func (ke *keyEnv) keyConns(id string) int {
	e := ke.g.reg.key(id)
	if e == nil {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

// isOpen reports whether the socket still answers a ping.
func (c *client) isOpen() bool {
	c.send(TypePing, "p", nil)
	for {
		f, err := c.tryRead()
		if err != nil {
			return false
		}
		if f.Type == TypePong {
			return true
		}
	}
}

func TestKeyRevokeClosesItsSockets(t *testing.T) {
	ke := newKeyEnv(t)
	key, k := ke.key("ws:connect")
	other, _ := ke.key("ws:connect")
	c1, w := ke.dial(bearer(key), "")
	c2, _ := ke.dial(bearer(key), "")
	c3, _ := ke.dial(bearer(other), "")
	if w.Auth != sb.AuthAPIKey || !slices.Equal(w.Scopes, []string{"ws:connect"}) {
		t.Fatalf("welcome %+v", w)
	}
	if n := ke.keyConns(k.ID); n != 2 {
		t.Fatalf("%d connections indexed under the key, want 2", n)
	}
	if _, err := ke.km.Delete(context.Background(), k.ID); err != nil {
		t.Fatal(err)
	}
	c1.expectClose(CloseReauthenticate, ReasonAPIKeyRevoked)
	c2.expectClose(CloseReauthenticate, ReasonAPIKeyRevoked)
	if !c3.isOpen() {
		t.Fatal("another key's socket was closed")
	}
	waitFor(t, "the key's entry to go", func() bool { return ke.g.reg.key(k.ID) == nil })
	if _, resp, err := ke.tryDial(bearer(key), ""); err == nil || resp.StatusCode != 401 {
		t.Fatalf("dial with a revoked key: %v", err)
	}
}

func TestKeyScopeChangePushedWithoutReconnect(t *testing.T) {
	ke := newKeyEnv(t)
	key, k := ke.key("ws:connect", "chat.*")
	c, _ := ke.dial(bearer(key), "")
	scopes := []string{"ws:connect", "chat.**", "!chat.admin.*"}
	if _, err := ke.km.Update(context.Background(), k.ID, keys.Change{Scopes: &scopes}, 0); err != nil {
		t.Fatal(err)
	}
	f := c.readType(TypeScopesUpdated)
	var d scopesUpdatedData
	if err := json.Unmarshal(f.Data, &d); err != nil || !slices.Equal(d.Scopes, scopes) {
		t.Fatalf("scopes.updated %s", f.Data)
	}
	conn := ke.g.reg.key(k.ID).head
	if got := conn.Principal().Scopes; !slices.Equal(got, scopes) {
		t.Fatalf("connection acts with %v, want %v", got, scopes)
	}
	// A rename changes no scope and pushes nothing; the socket stays.
	name := "renamed"
	if _, err := ke.km.Update(context.Background(), k.ID, keys.Change{Name: &name}, 0); err != nil {
		t.Fatal(err)
	}
	c.send(TypePing, "p", nil)
	if f := c.read(); f.Type != TypePong {
		t.Fatalf("after a rename: %s %s", f.Type, f.Data)
	}
	// Losing ws:connect closes with 4403.
	none := []string{"chat.**"}
	if _, err := ke.km.Update(context.Background(), k.ID, keys.Change{Scopes: &none}, 0); err != nil {
		t.Fatal(err)
	}
	c.expectClose(CloseForbidden, ReasonForbidden)
}

func TestKeyRollGraceWarnsThenCloses(t *testing.T) {
	ke := newKeyEnv(t)
	key, k := ke.key("ws:connect")
	c, _ := ke.dial(bearer(key), "")
	newKey, _, err := ke.km.Roll(context.Background(), k.ID, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := ke.dial(bearer(newKey), "")
	// The cut reaches the socket as an event; wait until it has moved the
	// key's timer before moving the clock.
	cut := ke.clock.Now().Add(3 * time.Minute)
	waitFor(t, "the key's expiry to move", func() bool {
		e := ke.g.reg.key(k.ID)
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.expiresAt.Equal(cut)
	})
	ke.clock.Advance(2 * time.Minute) // the warning is due a minute before
	f := c.readType(TypeAPIKeyExpiring)
	var d expiringData
	if err := json.Unmarshal(f.Data, &d); err != nil || !d.ExpiresAt.Equal(cut) {
		t.Fatalf("api_key.expiring %s, want %v", f.Data, cut)
	}
	ke.clock.Advance(time.Minute)
	c.expectClose(CloseReauthenticate, ReasonAPIKeyRevoked)
	if !c2.isOpen() {
		t.Fatal("the new key's socket was closed")
	}
}

func TestKeyExpiryClosesWithoutEvent(t *testing.T) {
	ke := newKeyEnv(t)
	key, _ := ke.key("ws:connect")
	c, _ := ke.dial(bearer(key), "")
	ke.clock.Advance(time.Hour - time.Minute)
	c.readType(TypeAPIKeyExpiring)
	ke.clock.Advance(time.Minute)
	c.expectClose(CloseReauthenticate, ReasonAPIKeyRevoked)
}

func TestKeyExpiredEventCloses(t *testing.T) {
	ke := newKeyEnv(t)
	key, k := ke.key("ws:connect")
	c, _ := ke.dial(bearer(key), "")
	ke.bus.Bus.Publish(context.Background(), sb.Event{Type: sb.EventKeyExpired, KeyID: k.ID, UserID: "alice", Version: 1})
	c.expectClose(CloseReauthenticate, ReasonAPIKeyRevoked)
}

// TestKeyLostEventsCaughtByRevalidation: events this node never received
// are made good by the re-validation after a gap.
func TestKeyLostEventsCaughtByRevalidation(t *testing.T) {
	ke := newKeyEnv(t)
	gone, g := ke.key("ws:connect")
	changed, ch := ke.key("ws:connect")
	cg, _ := ke.dial(bearer(gone), "")
	cc, _ := ke.dial(bearer(changed), "")
	ke.bus.dropIf(func(ev sb.Event) bool { return ev.Type.IsKey() })
	if _, err := ke.km.Delete(context.Background(), g.ID); err != nil {
		t.Fatal(err)
	}
	scopes := []string{"ws:connect", "x"}
	if _, err := ke.km.Update(context.Background(), ch.ID, keys.Change{Scopes: &scopes}, 0); err != nil {
		t.Fatal(err)
	}
	if !cg.isOpen() {
		t.Fatal("the socket closed though its event was lost")
	}
	ke.bus.dropIf(nil)
	ke.g.HandleGap()
	cg.expectClose(CloseReauthenticate, ReasonAPIKeyRevoked)
	f := cc.readType(TypeScopesUpdated)
	var d scopesUpdatedData
	if err := json.Unmarshal(f.Data, &d); err != nil || !slices.Equal(d.Scopes, scopes) {
		t.Fatalf("scopes.updated after the gap: %s", f.Data)
	}
	// The gap also flushed the verification cache: the revoked key is
	// refused here at once.
	if _, err := ke.km.Verify(context.Background(), gone, ""); !errors.Is(err, sb.ErrInvalidToken) {
		t.Fatalf("Verify of the revoked key after the gap = %v", err)
	}
}

// TestKeySkippedVersionReadsTheStore: an event that is not the next version
// of what this node knows has the key read again.
func TestKeySkippedVersionReadsTheStore(t *testing.T) {
	ke := newKeyEnv(t)
	key, k := ke.key("ws:connect")
	c, _ := ke.dial(bearer(key), "")
	ke.bus.dropIf(func(ev sb.Event) bool { return ev.KeyID == k.ID && ev.Version == 2 })
	scopes := []string{"ws:connect", "a"}
	if _, err := ke.km.Update(context.Background(), k.ID, keys.Change{Scopes: &scopes}, 0); err != nil {
		t.Fatal(err)
	}
	ke.bus.dropIf(nil)
	name := "renamed" // version 3 carries no scopes; the store has them
	if _, err := ke.km.Update(context.Background(), k.ID, keys.Change{Name: &name}, 0); err != nil {
		t.Fatal(err)
	}
	f := c.readType(TypeScopesUpdated)
	var d scopesUpdatedData
	if err := json.Unmarshal(f.Data, &d); err != nil || !slices.Equal(d.Scopes, scopes) {
		t.Fatalf("scopes.updated %s", f.Data)
	}
}

// revokingVerifier revokes the key right after verifying it, so that the
// revocation's event is applied before the socket is registered.
type revokingVerifier struct {
	auth.KeyVerifier
	km *keys.Manager
}

func (r revokingVerifier) Verify(ctx context.Context, key, ip string) (*sb.APIKey, error) {
	k, err := r.KeyVerifier.Verify(ctx, key, ip)
	if err != nil {
		return nil, err
	}
	if _, err := r.km.Delete(ctx, k.ID); err != nil {
		return nil, err
	}
	return k, nil
}

func TestKeyRevokedDuringUpgradeIsClosed(t *testing.T) {
	ke := newKeyEnvWith(t, func(v auth.KeyVerifier, km *keys.Manager) auth.KeyVerifier {
		return revokingVerifier{KeyVerifier: v, km: km}
	})
	key, _ := ke.key("ws:connect")
	c, _, err := ke.tryDial(bearer(key), "")
	if err != nil {
		t.Fatal(err)
	}
	c.expectClose(CloseReauthenticate, ReasonAPIKeyRevoked)
}
