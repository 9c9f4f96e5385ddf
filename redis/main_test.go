package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// When a client fails to connect at construction (a test does that
		// on purpose), rueidis leaves a topology refresh asleep for up to a
		// second before it ends by itself.
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"))
}

// newBackend connects a Backend with a fresh random prefix to srv, so that
// tests sharing a server never see each other's keys or events.
func newBackend(t testing.TB, srv *redistest.Server, mod ...func(*Options)) *Backend {
	t.Helper()
	var r [4]byte
	_, _ = rand.Read(r[:])
	o := Options{URL: srv.URL(), Prefix: "sbt" + hex.EncodeToString(r[:]) + ":", Timeout: 2 * time.Second}
	for _, f := range mod {
		f(&o)
	}
	b, err := New(context.Background(), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		<-tick.C
	}
}
