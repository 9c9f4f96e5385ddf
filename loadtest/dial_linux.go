package loadtest

import (
	"syscall"
)

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT from linux/in.h.
const ipBindAddressNoPort = 24

// bindNoPort lets a socket bound to a chosen source address pick its ephemeral
// port at connect time, by the full four-tuple, instead of at bind time, where
// ports still in TIME_WAIT would otherwise run the range dry long before the
// four-tuples are exhausted.
func bindNoPort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	// Not every kernel knows the option; binding still works without it.
	_ = serr
	return nil
}
