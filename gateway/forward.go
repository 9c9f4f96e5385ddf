package gateway

import (
	"context"
	"errors"
	"fmt"

	"github.com/sessionbridge/sessionbridge/forward"
	"github.com/sessionbridge/sessionbridge/scope"
)

// DefaultForwardInFlight bounds the forwarded frames of one connection that
// wait for the application's answer at once.
const DefaultForwardInFlight = 8

// maxForwardInFlight is the largest ForwardInFlight New accepts (the count
// is a uint16 in every Conn).
const maxForwardInFlight = 1024

// forwarding is what the gateway needs to forward frames: the forwarder, the
// types it takes and the per-connection bound. The zero value forwards
// nothing.
type forwarding struct {
	f        forward.Forwarder
	types    scope.Set
	inFlight int
}

// newForwarding checks the forwarding part of cfg and fills its default.
func newForwarding(cfg Config) (forwarding, error) {
	if cfg.Forwarder == nil {
		if len(cfg.ForwardTypes) > 0 {
			return forwarding{}, errors.New("gateway: Config.ForwardTypes needs a Forwarder")
		}
		return forwarding{}, nil
	}
	types, err := scope.Compile(cfg.ForwardTypes...)
	if err != nil {
		return forwarding{}, fmt.Errorf("gateway: Config.ForwardTypes: %w", err)
	}
	n := cfg.ForwardInFlight
	if n == 0 {
		n = DefaultForwardInFlight
	}
	if n < 0 || n > maxForwardInFlight {
		return forwarding{}, fmt.Errorf("gateway: Config.ForwardInFlight %d: want 1 to %d", n, maxForwardInFlight)
	}
	return forwarding{f: cfg.Forwarder, types: types, inFlight: n}, nil
}

// forward takes a client frame that goes to the application: one of the
// forwarded types that is not built in and has no Handler (a registered
// Handler wins). It reports whether it took the frame; if so, the frame is
// answered, now (refused) or later by relay, and the read loop moves on at
// once, without waiting for the application.
// labelForwarded is the metrics label of every forwarded frame: forward
// patterns may match types without end, and a client must not grow the
// label set.
const labelForwarded = "forwarded"

func (c *Conn) forward(ctx context.Context, f inFrame) bool {
	g := c.g
	fw := &g.fwd
	if fw.f == nil || forward.Builtin(f.Type) || !fw.types.Allows(f.Type) {
		return false
	}
	g.hmu.RLock()
	_, handled := g.handlers[f.Type]
	g.hmu.RUnlock()
	if handled {
		return false
	}
	// The frame's type passed the connection's compiled scopes in the
	// dispatch before it got here, as every frame does.
	c.mu.Lock()
	full := int(c.inFlight) >= fw.inFlight
	if !full {
		c.inFlight++
	}
	p := c.p
	c.mu.Unlock()
	if full {
		g.metrics.Frame(labelForwarded, CodeRateLimited)
		c.sendError(f.ID, CodeRateLimited, fmt.Sprintf("too many frames waiting for the application on this connection (at most %d)", fw.inFlight))
		return true
	}
	req := forward.Request{
		Type: f.Type, ID: f.ID, Data: f.Data, ConnectionID: c.id,
		// Scopes is shared, not copied: a connection's scope slice is
		// replaced on auth.refresh, never changed in place.
		Principal: forward.Principal{Auth: p.Method, UserID: p.UserID, SessionID: p.SessionID, KeyID: p.KeyID, Scopes: p.Scopes},
	}
	// The read loop holds a count in wg, so this Add cannot race Shutdown's
	// Wait.
	g.wg.Add(1)
	go c.relay(ctx, req)
	return true
}

// relay waits for the application's answer to req and queues it as the
// reply. ctx is the read loop's: it ends when the connection does, which
// cancels the request and sends nothing.
func (c *Conn) relay(ctx context.Context, req forward.Request) {
	g := c.g
	defer g.wg.Done()
	defer func() {
		c.mu.Lock()
		c.inFlight--
		c.mu.Unlock()
	}()
	rep, err := g.fwd.f.Forward(ctx, req)
	if ctx.Err() != nil {
		// The connection is gone: nobody to answer.
		return
	}
	if err != nil {
		code, msg := CodeInternal, "internal error"
		if fe, ok := errors.AsType[*forward.Error](err); ok {
			code, msg = fe.Code, fe.Message
		} else {
			g.log.Error("gateway: forwarding failed", "connection_id", c.id, "type", req.Type, "err", err)
		}
		g.metrics.Frame(labelForwarded, code)
		c.sendError(req.ID, code, msg)
		return
	}
	var data any
	if len(rep.Data) > 0 {
		data = rep.Data
	}
	b, err := encodeFrame(rep.Type, req.ID, data)
	if err != nil {
		g.log.Error("gateway: encoding a relayed reply", "connection_id", c.id, "type", req.Type, "err", err)
		g.metrics.Frame(labelForwarded, CodeInternal)
		c.sendError(req.ID, CodeInternal, "internal error")
		return
	}
	g.metrics.Frame(labelForwarded, "ok")
	_ = c.reply(b)
}
