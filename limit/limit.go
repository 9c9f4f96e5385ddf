// Package limit decides rate limits with the generic cell rate algorithm
// (GCRA): each subject of a rule keeps one timestamp, its theoretical arrival
// time (TAT), so a decision is one read and one write whatever the rate.
//
// A decision charges several rules at once (the client IP, the user and the
// key of one connection attempt, say) all or nothing: if any rule refuses,
// none is charged, so a refused attempt never costs the client anything.
// State is keyed by rule and subject only, never by the rate, so changing a
// limit never resets what a subject has used: the new rate applies to the
// same TAT.
//
// [Memory] decides for one process; the redis package implements [Limiter]
// with one Lua script on Redis TIME, exact across the cluster.
package limit

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrInvalid is wrapped by the errors of a charge that cannot be decided: a
// rate that is not positive, an empty rule or subject.
var ErrInvalid = errors.New("limit: invalid charge")

// Rate is N events per Period, admitting a burst of Burst at once (N when
// zero). The sustained rate is N/Period whatever the burst.
type Rate struct {
	N      int
	Period time.Duration
	Burst  int
}

// PerSecond and PerMinute are shorthands for common rates.
func PerSecond(n int) Rate { return Rate{N: n, Period: time.Second} }

// PerMinute returns a rate of n per minute.
func PerMinute(n int) Rate { return Rate{N: n, Period: time.Minute} }

// interval is the time one event costs.
func (r Rate) interval() time.Duration { return r.Period / time.Duration(r.N) }

// capacity is how far ahead of now the TAT may run: the burst's worth.
func (r Rate) capacity() time.Duration {
	b := r.Burst
	if b <= 0 {
		b = r.N
	}
	return time.Duration(b) * r.interval()
}

// Charge asks for Cost events (1 when zero) of Rate for one subject of one
// rule.
type Charge struct {
	// Rule names the rule, for refusals and logs ("connects_per_minute").
	Rule string
	// Subject is who is limited ("ip:192.0.2.1", "user:alice", "key:…").
	Subject string
	Rate    Rate
	Cost    int
	// DryRun charges the rule when it admits and reports, without
	// enforcing, when it would have refused.
	DryRun bool
}

func (c Charge) cost() int {
	if c.Cost <= 0 {
		return 1
	}
	return c.Cost
}

// Check reports whether c can be decided.
func (c Charge) Check() error {
	switch {
	case c.Rule == "" || c.Subject == "":
		return fmt.Errorf("%w: rule and subject are required", ErrInvalid)
	case c.Rate.N <= 0 || c.Rate.Period <= 0 || c.Rate.Burst < 0:
		return fmt.Errorf("%w: rule %s: rate must be positive", ErrInvalid, c.Rule)
	case c.Rate.interval() <= 0:
		return fmt.Errorf("%w: rule %s: more than one event per nanosecond", ErrInvalid, c.Rule)
	case time.Duration(c.cost())*c.Rate.interval() > c.Rate.capacity():
		return fmt.Errorf("%w: rule %s: a cost of %d exceeds its burst", ErrInvalid, c.Rule, c.cost())
	}
	return nil
}

// Decision is the outcome of one Allow.
type Decision struct {
	// Allowed is false when an enforced rule refused; nothing was charged.
	Allowed bool
	// Rule is the refusing rule, or, when allowed, the rule with the fewest
	// events left (for RateLimit headers).
	Rule string
	// Limit is that rule's burst, Remaining what it has left after this
	// decision, Reset when it is whole again.
	Limit     int
	Remaining int
	Reset     time.Duration
	// RetryAfter is how long to wait before the same charges can pass.
	RetryAfter time.Duration
	// DryRefused names the dry-run rules that would have refused.
	DryRefused []string
}

// Limiter decides charges. Implementations are safe for concurrent use.
type Limiter interface {
	// Allow charges every rule of charges if all enforced ones admit, and
	// none otherwise. It returns an error wrapping ErrInvalid for a charge
	// that cannot be decided, and the implementation's error (for Redis,
	// one wrapping sessionbridge.ErrUnavailable) when it cannot decide now.
	Allow(ctx context.Context, charges ...Charge) (Decision, error)
}

// Step is one rule's part of a decision, computed by [Evaluate].
type Step struct {
	// NewTAT is the TAT after charging, if the decision is allowed.
	NewTAT time.Duration
	// Admit reports whether this rule admits.
	Admit bool
	// RetryAfter is how long until it would admit, if it does not.
	RetryAfter time.Duration
	// Remaining and Reset describe the rule after charging.
	Remaining int
	Reset     time.Duration
}

// Evaluate is GCRA for one charge: given the stored TAT (as time since an
// epoch shared with now; zero for none), it says whether the charge admits
// and what the TAT becomes. Implementations share it, so memory and Redis
// decide alike.
func Evaluate(c Charge, tat, now time.Duration) Step {
	t, capacity := c.Rate.interval(), c.Rate.capacity()
	tat = max(tat, now)
	next := tat + time.Duration(c.cost())*t
	if next-now > capacity {
		return Step{RetryAfter: next - now - capacity, Remaining: int((capacity - (tat - now)) / t), Reset: tat - now}
	}
	return Step{NewTAT: next, Admit: true, Remaining: int((capacity - (next - now)) / t), Reset: next - now}
}

// Combine turns the steps of one decision into its Decision.
func Combine(charges []Charge, steps []Step) Decision {
	d := Decision{Allowed: true, Remaining: -1}
	for i, s := range steps {
		c := charges[i]
		if !s.Admit {
			if c.DryRun {
				d.DryRefused = append(d.DryRefused, c.Rule)
				continue
			}
			if d.Allowed || s.RetryAfter > d.RetryAfter {
				d.Allowed, d.Rule, d.RetryAfter = false, c.Rule, s.RetryAfter
				d.Limit, d.Remaining, d.Reset = burst(c.Rate), s.Remaining, s.Reset
			}
			continue
		}
		if d.Allowed && (d.Remaining < 0 || s.Remaining < d.Remaining) {
			d.Rule, d.Limit, d.Remaining, d.Reset = c.Rule, burst(c.Rate), s.Remaining, s.Reset
		}
	}
	if d.Remaining < 0 {
		d.Remaining = 0
	}
	return d
}

func burst(r Rate) int {
	if r.Burst > 0 {
		return r.Burst
	}
	return r.N
}

// charged reports whether step i is to be written: every admitting step of
// an allowed decision (dry-run ones included, so that they count as they
// would if enforced).
func charged(d Decision, s Step) bool { return d.Allowed && s.Admit }

// Charged reports which steps of a decision are written to the store.
func Charged(d Decision, steps []Step) []bool {
	out := make([]bool, len(steps))
	for i, s := range steps {
		out[i] = charged(d, s)
	}
	return out
}
