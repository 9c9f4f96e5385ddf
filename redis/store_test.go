package redis

import (
	"errors"
	"testing"

	"github.com/redis/rueidis"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
	"github.com/sessionbridge/sessionbridge/storetest"
)

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	storetest.Run(t, func(t *testing.T) (sessionbridge.Store, sessionbridge.Bus) {
		b := newBackend(t, srv)
		return b.Store(), b.Bus()
	})
}

// TestGetWithoutClientCache covers the read path used when the cache is off:
// every Get is a round trip and sees every write at once.
func TestGetWithoutClientCache(t *testing.T) {
	srv := redistest.Start(t)
	writer := newBackend(t, srv)
	reader := newBackend(t, srv, func(o *Options) { o.Prefix = writer.prefix; o.DisableClientCache = true })
	s := newSession(t, "nocache-user")
	if err := writer.Store().Create(bg, s, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	for v := uint64(1); v <= 5; v++ {
		got, err := reader.Store().Get(bg, s.ID)
		if err != nil || got.Version != v {
			t.Fatalf("Get = %v, %v; want version %d at once", got, err, v)
		}
		next := got.Clone()
		next.Version = v + 1
		if err := writer.Store().Update(bg, next, v, sessionbridge.Event{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := writer.Store().Delete(bg, s.ID, sessionbridge.Event{}); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Store().Get(bg, s.ID); !errors.Is(err, sessionbridge.ErrNotFound) {
		t.Fatalf("Get after delete = %v, want ErrNotFound at once", err)
	}
}

// TestConformanceOnCluster runs the suite on a Redis Cluster node, which
// refuses any script or command that strays outside one hash slot: it shows
// that the key layout is cluster-ready.
func TestConformanceOnCluster(t *testing.T) {
	srv := redistest.StartCluster(t)
	storetest.Run(t, func(t *testing.T) (sessionbridge.Store, sessionbridge.Bus) {
		b := newBackend(t, srv)
		if b.Client().Mode() != rueidis.ClientModeCluster {
			t.Fatalf("client mode %s, want cluster", b.Client().Mode())
		}
		return b.Store(), b.Bus()
	})
}
