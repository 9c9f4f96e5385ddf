package gateway

import (
	"context"
	"fmt"
	"slices"
	"strings"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/scope"
)

// Permissions. Every connection holds its principal's scopes compiled once,
// at the upgrade, into a scope.Set; each client frame is checked against it
// before anything else looks at the frame, with no allocation and no lock.
// ping is always allowed; every other type, built-in or the application's,
// needs a pattern that allows it. ws:connect is needed to open the socket,
// and losing it closes the socket 4403 forbidden.

// TypeScopesUpdated is the frame the server pushes when a connection's scopes
// change while it is open: {"scopes": [...]}, the patterns it now holds.
const TypeScopesUpdated = "scopes.updated"

// maxTypeInMessage bounds how much of a refused frame type an error message
// repeats.
const maxTypeInMessage = 128

type scopesUpdatedData struct {
	Scopes []string `json:"scopes"`
}

// defaultSessionScopes is what Config.SessionScopes means when nil.
func defaultSessionScopes() []string { return []string{"**"} }

// compileSessionDefault compiles the configured default scopes of sessions
// once, so that the connections of every session without scopes of its own
// share one Set.
func (g *Gateway) compileSessionDefault() error {
	g.sessionDefault = slices.Clone(g.cfg.SessionScopes)
	if g.sessionDefault == nil {
		g.sessionDefault = defaultSessionScopes()
	}
	set, err := sb.CompileScopes(g.sessionDefault)
	if err != nil {
		return fmt.Errorf("gateway: SessionScopes: %w", err)
	}
	g.sessionDefaultSet = &set
	return nil
}

// sessionScopeSet returns the scopes of the connections of session s: its
// own, or the configured default when it has none stored. The returned
// slice must not be modified.
func (g *Gateway) sessionScopeSet(s *sb.Session) ([]string, *scope.Set, error) {
	if s.Scopes == nil {
		return g.sessionDefault, g.sessionDefaultSet, nil
	}
	set, err := sb.CompileScopes(s.Scopes)
	if err != nil {
		return nil, nil, err
	}
	return slices.Clone(s.Scopes), &set, nil
}

// allows reports whether the connection may send a frame of type typ. It
// takes no lock and does not allocate: it runs on every frame.
func (c *Conn) allows(typ string) bool {
	return typ == TypePing || c.holds(typ)
}

// holds reports whether the connection's scopes allow name, a right such as
// a handler's required scope.
func (c *Conn) holds(name string) bool {
	set := c.scopes.Load()
	return set != nil && set.Allows(name)
}

// replaceScopes gives the connection new scopes while it is open: patterns
// become what Principal, Context and scopes.updated show, and set, their
// compiled form, what every later frame is checked against (nil: compile
// patterns here; patterns that do not compile hold no scope at all, failing
// closed). replaceScopes keeps patterns: the caller must not modify it
// afterwards. When the patterns differ from the current ones, the client gets
// scopes.updated {scopes}; when they no longer allow ws:connect, the
// connection is closed 4403 forbidden after that frame. It reports whether
// the connection keeps ws:connect.
//
// It is the one place where an open connection's rights change: a session's
// scopes set by an administrator, a JWT's on auth.refresh, an API key's.
func (c *Conn) replaceScopes(patterns []string, set *scope.Set) bool {
	g := c.g
	if set == nil {
		s, err := sb.CompileScopes(patterns)
		if err != nil {
			g.log.Warn("gateway: new scopes do not compile; the connection holds none", "connection_id", c.id, "err", err)
		}
		set = &s
	}
	if patterns == nil {
		patterns = []string{}
	}
	c.mu.Lock()
	changed := !sameScopes(c.p.Scopes, patterns)
	if changed {
		c.p.Scopes = patterns
		c.scopes.Store(set)
	}
	p := c.p
	c.mu.Unlock()
	if !changed {
		return c.holds(sb.ScopeConnect)
	}
	if b, err := encodeFrame(TypeScopesUpdated, "", scopesUpdatedData{Scopes: patterns}); err == nil {
		_ = c.enqueue(b)
	}
	if set.Allows(sb.ScopeConnect) {
		return true
	}
	g.audit.Log(context.Background(), auditAuthzFail, auditFields{
		SessionID: p.SessionID, UserID: p.UserID, ConnectionID: c.id, Method: string(p.Method),
		Reason: "lost_ws_connect", Detail: fmt.Sprintf("closed with %d %s", CloseForbidden, ReasonForbidden),
	})
	c.closeWith(CloseForbidden, ReasonForbidden)
	return false
}

// sameScopes reports whether a and b are the same patterns in the same
// order, telling "none" (nil, the default) from "empty".
func sameScopes(a, b []string) bool {
	return (a == nil) == (b == nil) && slices.Equal(a, b)
}

// applySessionScopesLocked gives the session's own connections (those of a
// session principal, whose scopes are the session's) the scopes of e.sess,
// when they differ from prev, the scopes the entry had before. The caller
// holds e.mu.
func (g *Gateway) applySessionScopesLocked(e *sessionEntry, prev []string) {
	if sameScopes(prev, e.sess.Scopes) {
		return
	}
	patterns, set, err := g.sessionScopeSet(e.sess)
	if err != nil {
		// The store holds patterns that do not compile (written by hand):
		// fail closed.
		g.log.Warn("gateway: session scopes do not compile; its connections hold none", "session_id", e.id, "err", err)
		patterns, set = []string{}, &scope.Set{}
	}
	e.forEachConnLocked(func(c *Conn) {
		if c.sessionScopes {
			c.replaceScopes(patterns, set)
		}
	})
}

// adoptSessionScopesLocked gives c, a session principal's connection that
// is not welcomed yet, the scopes of its entry's session, without a
// scopes.updated (the welcome frame carries them), and closes it 4403 when
// they lack ws:connect. The caller holds e.mu.
func (g *Gateway) adoptSessionScopesLocked(c *Conn, e *sessionEntry) {
	patterns, set, err := g.sessionScopeSet(e.sess)
	if err != nil {
		patterns, set = []string{}, &scope.Set{}
	}
	c.mu.Lock()
	c.p.Scopes = slices.Clone(patterns)
	c.scopes.Store(set)
	c.mu.Unlock()
	if !set.Allows(sb.ScopeConnect) {
		c.closeWith(CloseForbidden, ReasonForbidden)
	}
}

// refuseFrame answers a frame whose type the connection's scopes do not
// allow: error forbidden naming the type, and an authz_fail audit.
func (c *Conn) refuseFrame(ctx context.Context, f inFrame) {
	g := c.g
	g.metrics.Frame(g.frameLabel(f.Type), CodeForbidden)
	typ := f.Type
	if len(typ) > maxTypeInMessage {
		typ = typ[:maxTypeInMessage] + "…"
	}
	c.mu.Lock()
	p := c.p
	c.mu.Unlock()
	g.audit.Log(ctx, auditAuthzFail, auditFields{
		SessionID: p.SessionID, UserID: p.UserID, ConnectionID: c.id, Method: string(p.Method),
		Reason: "frame_type_not_allowed", Detail: typ,
	})
	c.sendError(f.ID, CodeForbidden, "frame type "+typ+" is not allowed")
}

// frameLabel is the metrics label of a frame type: the type itself when it
// is a built-in or registered one, "forwarded" for the application's
// forwarded types, else "unknown", so that clients cannot grow the label
// set.
func (g *Gateway) frameLabel(typ string) string {
	switch typ {
	case TypePing, TypeSessionGet, TypeSessionUpdate, TypeAuthRefresh:
		return typ
	}
	g.hmu.RLock()
	_, ok := g.handlers[typ]
	g.hmu.RUnlock()
	switch {
	case ok:
		return typ
	case g.fwd.f != nil && g.fwd.types.Allows(typ):
		return labelForwarded
	}
	return "unknown"
}

// literalName reports whether name is a name a scope pattern can spell out
// exactly: a valid pattern without wildcards or deny.
func literalName(name string) bool {
	if strings.ContainsAny(name, "*!") {
		return false
	}
	_, err := scope.Compile(name)
	return err == nil
}
