//go:build !unix

package loadtest

// RaiseFileLimit does nothing where there is no RLIMIT_NOFILE and reports no
// limits.
func RaiseFileLimit() (FileLimit, error) { return FileLimit{}, nil }
