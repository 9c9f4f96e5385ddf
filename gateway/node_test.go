package gateway

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"

	sb "github.com/sessionbridge/sessionbridge"
)

// fakeCluster is a cluster presence that answers with this node's own
// connections and records whether its Run is running.
type fakeCluster struct {
	sb.Presence
	running, ran atomic.Bool
}

func (f *fakeCluster) Run(ctx context.Context) error {
	f.ran.Store(true)
	f.running.Store(true)
	defer f.running.Store(false)
	<-ctx.Done()
	return ctx.Err()
}

// The gateway takes the node's presence from the Manager's backend, hands it
// its own registry, answers with it, and keeps it running for as long as
// its Run.
func TestGatewayRunsTheBackendsPresence(t *testing.T) {
	fc := &fakeCluster{}
	// Registered first, so it runs after the env's cleanup has stopped Run.
	t.Cleanup(func() {
		if !fc.ran.Load() || fc.running.Load() {
			t.Errorf("presence ran %v, still running after Run returned %v", fc.ran.Load(), fc.running.Load())
		}
	})
	e := newEnvWith(t, func(b *sb.Backend) {
		b.Presence = func(local sb.Presence) sb.ClusterPresence {
			fc.Presence = local
			return fc
		}
	}, nil)
	if e.g.Presence() != fc || fc.Presence != e.g {
		t.Fatalf("Presence() = %v, built from %v; want the backend's, built from the gateway", e.g.Presence(), fc.Presence)
	}
	waitFor(t, "the presence running", fc.running.Load)
	s, tok := e.session("alice")
	e.dial(http.Header{"X-Session-Token": {tok}}, "")
	list, err := e.g.Presence().UserConnections(context.Background(), "alice")
	if err != nil || len(list) != 1 || list[0].SessionID != s.ID || list[0].NodeID != e.mgr.NodeID() {
		t.Fatalf("UserConnections = %+v, %v; want alice's one socket on node %q", list, err, e.mgr.NodeID())
	}
}

func TestGatewayWithoutClusterPresenceAnswersForItself(t *testing.T) {
	e := newEnv(t, nil)
	if e.g.Presence() != e.g {
		t.Fatalf("Presence() = %v, want the gateway itself", e.g.Presence())
	}
}
