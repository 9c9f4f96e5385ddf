// Package sessionbridge makes HTTP sessions and WebSocket connections one thing.
//
// The root package holds the domain: the [Session] and its public view, session
// tokens, the [Event]s every change emits, the [Store] and [Bus] interfaces that the
// memory and redis subpackages implement, the [Backend] that holds one node's
// store, bus, tickets, API keys and presence, and the [Manager] that owns a
// Backend and applies the session rules (idle and absolute timeouts, throttled
// touches, merge-patch updates with version checks, ID rotation, expiry claims)
// on top of its Store.
//
// Subpackages provide one implementation each: memory (in-process backend),
// redis (shared backend with a pub/sub bus for a cluster), httpapi (cookie middleware
// and the HTTP API), gateway (the WebSocket gateway, connection registry and
// synchronizer), jwt (JWT verification), and cmd/sessionbridge wires them into a
// server. Dependencies point from the subpackages to this one, never back.
package sessionbridge
