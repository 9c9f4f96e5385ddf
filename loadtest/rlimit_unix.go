//go:build unix

package loadtest

import (
	"fmt"
	"syscall"
)

// RaiseFileLimit raises the soft limit on open files (RLIMIT_NOFILE) to the
// hard limit, since every socket is a file, and returns the limits in force
// afterwards.
func RaiseFileLimit() (FileLimit, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return FileLimit{}, fmt.Errorf("loadtest: reading RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur < lim.Max {
		want := lim
		want.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			return FileLimit{Soft: uint64(lim.Cur), Hard: uint64(lim.Max)}, fmt.Errorf("loadtest: raising RLIMIT_NOFILE: %w", err)
		}
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return FileLimit{}, fmt.Errorf("loadtest: reading RLIMIT_NOFILE: %w", err)
		}
	}
	return FileLimit{Soft: uint64(lim.Cur), Hard: uint64(lim.Max)}, nil
}
