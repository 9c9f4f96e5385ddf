//go:build !linux

package loadtest

import "syscall"

// bindNoPort does nothing outside Linux.
func bindNoPort(network, address string, c syscall.RawConn) error { return nil }
