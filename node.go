package sessionbridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
)

// Backend is what one node runs on: where its sessions, tickets and API keys
// live, and the bus that carries their events to the other nodes. The
// memory package builds one for a single process (memory.New), the redis
// package one for a cluster ((*redis.Backend).Node), so that the store and
// the bus it publishes on always come as a pair.
//
// A Manager owns it (NewManager); the gateway, the authenticator and the
// HTTP API take its pieces from the Manager, so that one node never mixes
// the bus of one backend with the store of another.
type Backend struct {
	// NodeID names this node in events, presence records and connection
	// lists; empty means a fresh NewNodeID, chosen once by NewManager.
	NodeID string
	// Store keeps the sessions; required.
	Store Store
	// Bus is the bus Store publishes on; required. The gateway subscribes
	// to it and publishes its messages on it.
	Bus Bus
	// Tickets keeps the single-use WebSocket tickets; nil refuses tickets.
	Tickets TicketStore
	// Keys keeps the API keys and publishes their events on Bus; nil means
	// no API keys.
	Keys KeyStore
	// Presence, if set, returns the presence of the whole cluster, given
	// local, which answers for this node's own connections (the gateway's
	// registry). Nil means a node's own connections are all there is, as
	// on a single node.
	Presence func(local Presence) ClusterPresence
}

// ClusterPresence is presence that answers for every node. Run keeps this
// node's share of it current until ctx is done, then withdraws it and
// returns ctx.Err(); the gateway runs it for as long as its own Run.
type ClusterPresence interface {
	Presence
	Run(ctx context.Context) error
}

// NewNodeID returns a fresh node ID, "<hostname>-<8 random hex digits>":
// readable in logs, and distinct for two nodes on one host. It is the node
// ID of every node that is not given one.
func NewNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	var b [4]byte
	// crypto/rand.Read never fails (it crashes the program instead).
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}
