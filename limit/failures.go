package limit

import (
	"context"
	"time"
)

// Failures counts failed attempts per key in fixed windows and refuses new
// attempts under a key whose count reached the limit until its window has
// passed; the API counts failed sign-ins per client IP and per username with
// it. An attempt counts from the moment it starts (Reserve), so attempts made
// at once cannot pass the limit together: at most the limit of attempts per
// key and window is ever evaluated.
//
// httpapi.FailureLimiter counts in one process; the redis package counts
// for every node on one Redis, exactly under any concurrency.
type Failures interface {
	// Reserve starts an attempt under keys: if none of them reached the
	// limit it counts one failure under each and returns the reservation,
	// ok; otherwise it counts nothing (once it returns) and reports how long
	// until the earliest block ends. err is set, and ok false, when the
	// count cannot be read or written: the caller must not evaluate the
	// attempt then.
	Reserve(ctx context.Context, keys ...string) (r Reservation, retryAfter time.Duration, ok bool, err error)
	// Reset forgets the failures under key.
	Reset(ctx context.Context, key string) error
}

// Reservation is one attempt counted by [Failures.Reserve]. It stays counted
// as a failure unless Refund gives it back.
type Reservation interface {
	// Refund gives back the failure counted under each key, unless the
	// key's window has passed or its count was reset meanwhile. It is
	// idempotent and best effort: a refund that fails leaves the attempt
	// counted, which never admits more than the limit.
	Refund(ctx context.Context)
}
