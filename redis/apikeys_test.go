package redis

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
	"github.com/sessionbridge/sessionbridge/storetest"
)

func TestKeyStoreConformance(t *testing.T) {
	srv := redistest.Start(t)
	storetest.RunKeys(t, func(t *testing.T) (sessionbridge.KeyStore, sessionbridge.Bus) {
		b := newBackend(t, srv)
		return b.Keys(), b.Bus()
	})
}

// TestKeyStoreConformanceOnCluster runs the key suite on a Redis Cluster
// node, which refuses any script that strays outside one hash slot. The key
// suite is small, so it runs whole here too.
func TestKeyStoreConformanceOnCluster(t *testing.T) {
	srv := redistest.StartCluster(t)
	storetest.RunKeys(t, func(t *testing.T) (sessionbridge.KeyStore, sessionbridge.Bus) {
		b := newBackend(t, srv)
		return b.Keys(), b.Bus()
	})
}

// TestKeyStoreKeepsNoSecret checks that nothing in Redis can be used as the
// key: only the SHA-256 of its secret is there.
func TestKeyStoreKeepsNoSecret(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv)
	key, id, hash, err := sessionbridge.NewAPIKey("alice")
	if err != nil {
		t.Fatal(err)
	}
	_, secret, _ := sessionbridge.ParseAPIKey(key)
	k := &sessionbridge.APIKey{ID: id, UserID: "alice", SecretHash: hash, CreatedAt: time.Now(), Version: 1}
	if err := b.Keys().CreateKey(bg, k); err != nil {
		t.Fatal(err)
	}
	m, err := b.Client().Do(bg, b.Client().B().Hgetall().Key(b.apiKeyKey(id)).Build()).AsStrMap()
	if err != nil || len(m) == 0 {
		t.Fatalf("HGETALL = %v, %v", m, err)
	}
	for f, v := range m {
		if strings.Contains(v, secret) {
			t.Fatalf("field %s holds the secret", f)
		}
	}
}

// TestKeyStoreUnavailable: with Redis away every call fails with
// ErrUnavailable and nothing is half-written when it returns.
func TestKeyStoreUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv)
	_, id, hash, _ := sessionbridge.NewAPIKey("alice")
	k := &sessionbridge.APIKey{ID: id, UserID: "alice", SecretHash: hash, CreatedAt: time.Now(), Version: 1}
	if err := b.Keys().CreateKey(bg, k); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	_, nextID, nextHash, _ := sessionbridge.NewAPIKey("alice")
	next := &sessionbridge.APIKey{ID: nextID, UserID: "alice", SecretHash: nextHash, CreatedAt: time.Now(), Version: 1}
	if err := b.Keys().RollKey(bg, id, time.Now(), next, sessionbridge.Event{}); !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Fatalf("RollKey with Redis away = %v, want ErrUnavailable", err)
	}
	if _, err := b.Keys().DeleteKey(bg, id, sessionbridge.Event{}); !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Fatalf("DeleteKey with Redis away = %v, want ErrUnavailable", err)
	}
	if _, err := b.Keys().GetKey(bg, id); !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Fatalf("GetKey with Redis away = %v, want ErrUnavailable", err)
	}
	// Redis comes back empty (the test server keeps nothing on disk): the
	// store works again without a new Backend.
	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := b.Keys().CreateKey(bg, next)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CreateKey after Redis came back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got, err := b.Keys().GetKey(bg, nextID); err != nil || got.UserID != "alice" {
		t.Fatalf("GetKey after Redis came back = %v, %v", got, err)
	}
}
