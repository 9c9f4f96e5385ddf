package limit

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Share divides a cluster-wide rate among n live nodes: N and Burst
// divided by n, at least 1 each, so that a node's share is never nothing.
func Share(r Rate, n int) Rate {
	n = max(n, 1)
	r.N = max(1, r.N/n)
	if r.Burst > 0 {
		r.Burst = max(1, r.Burst/n)
	}
	return r
}

// Fallback is a [Limiter] that decides with Shared (the cluster's) and,
// when Shared cannot answer, with this node's share of every rate: the
// rate divided by the live nodes, in memory. So a cluster whose store is
// away is held to about its limit, never unlimited, and never refuses
// everything.
type Fallback struct {
	// Shared is the cluster's limiter; required.
	Shared Limiter
	// Nodes returns how many nodes are live; nil means 1.
	Nodes func() int
	// OnFallback, if set, is called with each decision made locally
	// because Shared failed with err, with the rule of its first charge.
	OnFallback func(rule string, err error)
	// Now is the local limiter's clock; nil means time.Now.
	Now func() time.Time

	once  sync.Once
	local Memory
}

var _ Limiter = (*Fallback)(nil)

// Allow decides with Shared, or locally when Shared fails with anything
// but ErrInvalid.
func (f *Fallback) Allow(ctx context.Context, charges ...Charge) (Decision, error) {
	d, err := f.Shared.Allow(ctx, charges...)
	if err == nil || errors.Is(err, ErrInvalid) {
		return d, err
	}
	if f.OnFallback != nil && len(charges) > 0 {
		f.OnFallback(charges[0].Rule, err)
	}
	n := nodes(f.Nodes)
	local := make([]Charge, len(charges))
	for i, c := range charges {
		c.Rate = Share(c.Rate, n)
		c.Cost = min(c.cost(), burst(c.Rate))
		local[i] = c
	}
	f.once.Do(func() { f.local.Now = f.Now })
	return f.local.Allow(ctx, local...)
}

func nodes(f func() int) int {
	if f == nil {
		return 1
	}
	return max(f(), 1)
}

// FallbackCounter is a [Counter] that counts with Shared (the cluster's)
// and, when Shared cannot answer, holds each subject to its Max divided by
// the live nodes on this node alone. A Hold goes back where it was taken.
type FallbackCounter struct {
	// Shared is the cluster's counter; required.
	Shared Counter
	// Nodes returns how many nodes are live; nil means 1.
	Nodes func() int
	// OnFallback, if set, is called with each decision made locally
	// because Shared failed with err, with the rule of its first slot.
	OnFallback func(rule string, err error)

	local LocalCounter
}

var _ Counter = (*FallbackCounter)(nil)

// Acquire counts with Shared, or locally when Shared fails with anything
// but ErrInvalid.
func (f *FallbackCounter) Acquire(ctx context.Context, slots ...Slot) (Decision, Hold, error) {
	d, h, err := f.Shared.Acquire(ctx, slots...)
	if err == nil || errors.Is(err, ErrInvalid) {
		return d, h, err
	}
	if f.OnFallback != nil && len(slots) > 0 {
		f.OnFallback(slots[0].Rule, err)
	}
	n := nodes(f.Nodes)
	local := make([]Slot, len(slots))
	for i, s := range slots {
		s.Max = max(1, s.Max/n)
		local[i] = s
	}
	return f.local.Acquire(ctx, local...)
}
