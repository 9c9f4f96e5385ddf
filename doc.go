// Package sessionbridge makes HTTP sessions and WebSocket connections one thing.
//
// The root package holds the domain: the [Session] and its public view, session
// tokens, the [Event]s every change emits, the [Store] and [Bus] interfaces that the
// memory and redis subpackages implement, and the [Manager] that applies the
// session rules (idle and absolute timeouts, throttled touches, merge-patch
// updates with version checks, ID rotation) on top of a Store.
//
// Subpackages provide one implementation each: memory (in-process store and bus),
// redis (shared store and pub/sub bus for a cluster), httpapi (cookie middleware
// and the HTTP API), gateway (the WebSocket gateway, connection registry and
// synchronizer), jwt (JWT verification), and cmd/sessionbridge wires them into a
// server. Dependencies point from the subpackages to this one, never back.
package sessionbridge
