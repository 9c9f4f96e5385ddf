//go:build unix

package loadtest

import (
	"syscall"
	"time"
)

// selfCPU returns the CPU time (user plus system) this process has used, or
// -1 if it cannot tell.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
