package gateway

import "time"

// clock tells time and schedules callbacks. The gateway makes every deadline
// decision through it, so that tests can move time by hand.
type clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) stopper
}

// stopper cancels a scheduled callback; Stop reports whether it prevented
// the call.
type stopper interface {
	Stop() bool
}

// realClock uses the configured Now (or time.Now) and runtime timers.
type realClock struct {
	now func() time.Time
}

func (c realClock) Now() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

func (c realClock) AfterFunc(d time.Duration, f func()) stopper {
	return time.AfterFunc(d, f)
}
