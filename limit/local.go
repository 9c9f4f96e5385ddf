package limit

import "time"

// Pace is a rate prepared for [Local]: the time one unit costs and how far
// ahead of now the schedule may run, in nanoseconds. The zero Pace is off:
// it admits everything.
type Pace struct {
	interval int64
	capacity int64
}

// NewPace prepares a rate of n units per period with a burst of burst units
// (n when burst is not positive). It returns the zero Pace, which admits
// everything, when n or period is not positive.
func NewPace(n int, period time.Duration, burst int) Pace {
	if n <= 0 || period <= 0 {
		return Pace{}
	}
	if burst <= 0 {
		burst = n
	}
	interval := max(int64(period)/int64(n), 1)
	return Pace{interval: interval, capacity: interval * int64(burst)}
}

// On reports whether p limits anything.
func (p Pace) On() bool { return p.interval > 0 }

// Local is GCRA for one subject held by one goroutine, such as a
// connection's read loop: a decision is a few integer operations, with no
// lock, no map and no allocation. The zero value has its whole burst. It is
// not safe for concurrent use.
type Local struct {
	tat int64 // theoretical arrival time, ns on the caller's clock
}

// Check reports whether cost units of p pass at now (ns on any clock that
// only moves forward for this Local); if not, how long until they would.
// It charges nothing: call Commit with the returned TAT to charge, so that
// several rules can be decided together. A cost larger than the whole
// burst passes when the burst is whole, and empties it.
func (l *Local) Check(p Pace, now int64, cost int) (next int64, ok bool, retry time.Duration) {
	if !p.On() {
		return l.tat, true, 0
	}
	tat := max(l.tat, now)
	need := min(int64(max(cost, 1))*p.interval, p.capacity)
	next = tat + need
	if over := next - now - p.capacity; over > 0 {
		return l.tat, false, time.Duration(over)
	}
	return next, true, 0
}

// Commit stores the TAT Check returned for an admitted charge.
func (l *Local) Commit(next int64) { l.tat = next }

// Take is Check and, if it passes, Commit.
func (l *Local) Take(p Pace, now int64, cost int) (bool, time.Duration) {
	next, ok, retry := l.Check(p, now, cost)
	if ok {
		l.tat = next
	}
	return ok, retry
}
