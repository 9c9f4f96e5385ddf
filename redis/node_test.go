package redis

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

// Node hands a node's Manager every piece of one Backend, named with one
// node ID: the store and the bus it publishes on, tickets, keys, and a
// presence that records under that ID.
func TestNodeIsOneBackend(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv, func(o *Options) { o.NodeID = "node-n" })
	n := b.Node()
	if n.NodeID != "node-n" || n.Store != b.Store() || n.Bus != b.Bus() || n.Tickets != b.Tickets() || n.Keys != b.Keys() || n.Presence == nil {
		t.Fatalf("Node() = %+v", n)
	}
	local := &fakeLocal{}
	local.set(sessionbridge.ConnInfo{ID: "c1", SessionID: "s1", UserID: "u1", NodeID: "node-n", ConnectedAt: time.Now()})
	p, ok := n.Presence(local).(*Presence)
	if !ok || p.local != local {
		t.Fatalf("Node().Presence built %T on %v, want this Backend's presence on the local registry", p, p.local)
	}
	if err := p.Publish(bg); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Client().Do(bg, b.Client().B().Exists().Key(p.nodeKey("node-n")).Build()).AsInt64(); err != nil || got != 1 {
		t.Fatalf("presence record of node-n exists = %d, %v", got, err)
	}
	m, err := sessionbridge.NewManager(n)
	if err != nil || m.NodeID() != "node-n" {
		t.Fatalf("NewManager(Node()) = %v (node %q)", err, m.NodeID())
	}
	// Without Options.NodeID, the one default of every package.
	host, _ := os.Hostname()
	d, e := newBackend(t, srv).Node(), newBackend(t, srv).Node()
	if !strings.HasPrefix(d.NodeID, host+"-") || d.NodeID == e.NodeID {
		t.Fatalf("default node IDs %q and %q, want two distinct %q-<random>", d.NodeID, e.NodeID, host)
	}
}
