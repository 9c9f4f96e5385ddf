//go:build !unix

package loadtest

import "time"

// selfCPU cannot tell on this platform.
func selfCPU() time.Duration { return -1 }
