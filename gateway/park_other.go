//go:build !linux

package gateway

import "syscall"

// waitReadable returns at once: off Linux the read loop parks inside the
// WebSocket reader.
func waitReadable(syscall.RawConn) error { return nil }
