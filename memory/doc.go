// Package memory is the embedded default backend of sessionbridge: a session
// [Store], an event [Bus] and a [Tickets] store that live in one process.
//
// It is what a server without Redis runs on, and what tests of the other
// packages use. Everything is safe for concurrent use and has a working zero
// value; nothing in this package starts a goroutine of its own (the only
// goroutine is the caller's, blocked in [Bus.Subscribe]).
package memory
