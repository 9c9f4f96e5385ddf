//go:build !linux

package gateway

import "syscall"

// waitReadable returns at once: off Linux the read loop parks inside the
// WebSocket reader.
func waitReadable(syscall.RawConn) error { return nil }

// idlePoller is Linux's; elsewhere a read loop parks in its own goroutine.
type idlePoller struct{}

func newIdlePoller() *idlePoller       { return nil }
func (*idlePoller) park(*Conn) bool    { return false }
func (*idlePoller) wake(*Conn)         {}
func (*idlePoller) stop()              {}
func descriptor(syscall.RawConn) int32 { return -1 }

// sendQueueEmpty cannot tell off Linux: closeNow leaves the close frame to
// the writer goroutine.
func sendQueueEmpty(syscall.RawConn) bool { return false }

func (g *Gateway) parkedSockets() int { return 0 }
