package server

import (
	"context"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/metrics"
)

// countingStore counts the session changes this node makes, whoever asked
// for them (HTTP, WebSocket, admin API, expiry), in
// sessionbridge_session_changes_total. Wrapping the store is the one place
// every change passes through.
type countingStore struct {
	sessionbridge.Store
	m *metrics.Metrics
}

func (c countingStore) Create(ctx context.Context, s *sessionbridge.Session, ev sessionbridge.Event) error {
	err := c.Store.Create(ctx, s, ev)
	if err == nil {
		c.m.SessionEvent("created")
	}
	return err
}

func (c countingStore) Update(ctx context.Context, s *sessionbridge.Session, prev uint64, ev sessionbridge.Event) error {
	err := c.Store.Update(ctx, s, prev, ev)
	if err == nil {
		c.m.SessionEvent("updated")
	}
	return err
}

func (c countingStore) Touch(ctx context.Context, id string, seen, expiresAt, ifSeenBefore time.Time, ev sessionbridge.Event) (bool, error) {
	wrote, err := c.Store.Touch(ctx, id, seen, expiresAt, ifSeenBefore, ev)
	if wrote {
		c.m.SessionEvent("touched")
	}
	return wrote, err
}

func (c countingStore) Delete(ctx context.Context, id string, ev sessionbridge.Event) (*sessionbridge.Session, error) {
	s, err := c.Store.Delete(ctx, id, ev)
	if err == nil {
		c.m.SessionEvent("deleted")
	}
	return s, err
}

func (c countingStore) Rotate(ctx context.Context, oldID string, s *sessionbridge.Session, deleted, created sessionbridge.Event) error {
	err := c.Store.Rotate(ctx, oldID, s, deleted, created)
	if err == nil {
		c.m.SessionEvent("deleted")
		c.m.SessionEvent("created")
	}
	return err
}

func (c countingStore) ClaimExpired(ctx context.Context, now time.Time, limit int, tmpl sessionbridge.Event) ([]*sessionbridge.Session, error) {
	list, err := c.Store.ClaimExpired(ctx, now, limit, tmpl)
	for range list {
		c.m.SessionEvent("expired")
	}
	return list, err
}

// TakeExpiryTurn passes the expiry turn of a store that hands turns out
// (see Manager.Run); a store that does not leaves every turn to the
// caller.
func (c countingStore) TakeExpiryTurn(ctx context.Context, ttl time.Duration) (bool, error) {
	turns, ok := c.Store.(interface {
		TakeExpiryTurn(context.Context, time.Duration) (bool, error)
	})
	if !ok {
		return true, nil
	}
	return turns.TakeExpiryTurn(ctx, ttl)
}
