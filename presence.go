package sessionbridge

import (
	"context"
	"time"
)

// ConnInfo describes one live WebSocket connection, wherever it is.
type ConnInfo struct {
	ID          string     `json:"connection_id"`
	SessionID   string     `json:"session_id,omitempty"`
	UserID      string     `json:"user_id"`
	Method      AuthMethod `json:"auth"`
	NodeID      string     `json:"node_id"`
	ConnectedAt time.Time  `json:"connected_at"`
	IP          string     `json:"ip,omitempty"`
	UserAgent   string     `json:"user_agent,omitempty"`
	// KeyID names the API key a connection was opened with.
	KeyID string `json:"key_id,omitempty"`
}

// Presence answers who is connected. The gateway's registry answers for its own
// node; a cluster implementation answers for every node, forgetting nodes that
// stopped reporting.
type Presence interface {
	// SessionCounts returns the number of live connections of each session in
	// ids; sessions without connections may be absent.
	SessionCounts(ctx context.Context, ids []string) (map[string]int, error)
	// UserConnections lists the live connections of a user; an empty userID
	// lists all of them.
	UserConnections(ctx context.Context, userID string) ([]ConnInfo, error)
}
