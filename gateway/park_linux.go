package gateway

import (
	"errors"
	"syscall"
)

// waitReadable blocks until the socket has data (or EOF, or an error) without
// consuming any of it. The read loop parks here, a few frames deep, instead
// of deep inside the WebSocket reader: the runtime then shrinks an idle
// socket's goroutine stack to its minimum.
func waitReadable(rc syscall.RawConn) error {
	var b [1]byte
	return rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if errors.Is(err, syscall.EAGAIN) {
			return false
		}
		_ = n // data, EOF (0) or an error: the WebSocket reader will see it
		return true
	})
}
