// Package memory is the embedded default backend of sessionbridge: a session
// [Store], an event [Bus], a [Tickets] store and an API [KeyStore] that live
// in one process. [New] returns them as one sessionbridge.Backend.
//
// It is what a server without Redis runs on, and what tests of the other
// packages use. Everything is safe for concurrent use and has a working zero
// value; nothing in this package starts a goroutine of its own (the only
// goroutine is the caller's, blocked in [Bus.Subscribe]).
package memory
