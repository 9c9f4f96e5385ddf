package gateway

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/usage"
)

// Usage recording (see docs/usage.md). A socket counts for its user, and a
// socket opened with an API key also for the key. Connects, refusals, peaks
// and closes go to the Recorder as they happen (a lock per connect, not per
// frame); frames, bytes and error frames are counted in the connection
// itself with a few atomic adds and no allocation, and handed to the
// Recorder in bulk at the start of each of its flushes (collectUsage), so
// that they ride in that flush.

// usageCodes are the error codes counted by name; any other code an
// application's handler or endpoint returns is counted as "other", so that
// the metrics of a subject stay a bounded set.
var usageCodes = [...]string{CodeBadRequest, CodeForbidden, CodeRateLimited, CodeUnknownType, CodeInternal, CodeUnavailable, "other"}

// usageCodeIndex returns the index of code in usageCodes.
func usageCodeIndex(code string) int {
	for i, c := range usageCodes[:len(usageCodes)-1] {
		if c == code {
			return i
		}
	}
	return len(usageCodes) - 1
}

// creditDone marks a connection whose connected seconds were all credited
// when it closed.
const creditDone = -1

// connUsage is what one connection did since its counts were last handed to
// the Recorder. The read loop, the writer and forwarded replies add to it;
// the collector and the close take the counts with Swap, so that each one is
// handed over exactly once whoever runs first.
type connUsage struct {
	framesIn, bytesIn, framesOut, bytesOut atomic.Int64
	// credited is the time (Unix nanoseconds) up to which the connection's
	// connected seconds were handed over, or creditDone.
	credited atomic.Int64
	// errs is made on the first error frame: most connections never get one.
	errs atomic.Pointer[[len(usageCodes)]atomic.Int64]
	// subjects are whom the connection counts for: its user, and its key.
	subjects [2]usage.Subject
	n        int
}

// credit takes the whole seconds from the last credit to now (all that is
// left, once final). It returns 0 once the connection closed.
func (u *connUsage) credit(now time.Time, final bool) int64 {
	for {
		old := u.credited.Load()
		if old == creditDone {
			return 0
		}
		secs := max(now.UnixNano()-old, 0) / int64(time.Second)
		next := old + secs*int64(time.Second)
		if final {
			next = creditDone
		} else if secs == 0 {
			return 0
		}
		if u.credited.CompareAndSwap(old, next) {
			return secs
		}
	}
}

// usageOf returns the counters a new connection of p starts with, or nil
// when usage is not recorded.
func (g *Gateway) usageOf(p *sb.Principal, connectedAt time.Time) *connUsage {
	if g.cfg.Usage == nil {
		return nil
	}
	u := &connUsage{}
	u.credited.Store(connectedAt.UnixNano())
	if p.UserID != "" {
		u.subjects[u.n] = usage.Subject{Kind: usage.KindUser, ID: p.UserID}
		u.n++
	}
	if p.Method == sb.AuthAPIKey && p.KeyID != "" {
		u.subjects[u.n] = usage.Subject{Kind: usage.KindKey, ID: p.KeyID}
		u.n++
	}
	return u
}

// principalSubjects returns whom an upgrade of p counts for.
func principalSubjects(p *sb.Principal) []usage.Subject {
	out := make([]usage.Subject, 0, 2)
	if p.UserID != "" {
		out = append(out, usage.Subject{Kind: usage.KindUser, ID: p.UserID})
	}
	if p.Method == sb.AuthAPIKey && p.KeyID != "" {
		out = append(out, usage.Subject{Kind: usage.KindKey, ID: p.KeyID})
	}
	return out
}

// refuseFor answers an upgrade of an authenticated principal that is not
// accepted, and counts the refusal for the principal's user and key. An
// upgrade refused before its credential was verified counts for nobody:
// counting it under the ID it claims would let anyone write usage for any
// ID (it is in the Prometheus connect counter all the same).
func (g *Gateway) refuseFor(w http.ResponseWriter, r *http.Request, ip, method string, p *sb.Principal, rf refusal) {
	if rec := g.cfg.Usage; rec != nil {
		subjects := principalSubjects(p)
		reason := refusalReason(rf)
		deltas := []usage.Delta{{Metric: usage.Refused(reason), N: 1}}
		switch reason {
		case CodeRateLimited:
			deltas = append(deltas, usage.Delta{Metric: usage.RateLimited, N: 1})
		case CodeForbidden:
			deltas = append(deltas, usage.Delta{Metric: usage.Forbidden, N: 1})
		}
		rec.AddAll(deltas, subjects...)
	}
	g.refuse(w, r, ip, method, rf)
}

// refusalReason is the usage reason of a refusal: its error code, with the
// origin refusal named "origin" and a conflict counted as unauthorized.
func refusalReason(rf refusal) string {
	switch rf.code {
	case refuseOrigin.code:
		return "origin"
	case "conflicting_credentials":
		return "unauthorized"
	}
	return rf.code
}

// usageOpened counts an accepted connection.
func (g *Gateway) usageOpened(c *Conn) {
	u := c.use
	if u == nil {
		return
	}
	rec := g.cfg.Usage
	rec.Add(usage.Connects, 1, u.subjects[:u.n]...)
	rec.Connected(1, u.subjects[:u.n]...)
}

// usageClosed hands over what a closing connection did since the last
// collection, and its last connected seconds.
func (g *Gateway) usageClosed(c *Conn) {
	u := c.use
	if u == nil {
		return
	}
	var buf [len(usageCodes) + 8]usage.Delta
	deltas := u.take(buf[:0])
	deltas = append(deltas, usage.Delta{Metric: usage.ConnectedSeconds, N: u.credit(g.clock.Now(), true)})
	rec := g.cfg.Usage
	rec.AddAll(deltas, u.subjects[:u.n]...)
	rec.Connected(-1, u.subjects[:u.n]...)
}

// take swaps the connection's counts to zero and appends them to deltas.
func (u *connUsage) take(deltas []usage.Delta) []usage.Delta {
	deltas = append(deltas,
		usage.Delta{Metric: usage.FramesIn, N: u.framesIn.Swap(0)},
		usage.Delta{Metric: usage.BytesIn, N: u.bytesIn.Swap(0)},
		usage.Delta{Metric: usage.FramesOut, N: u.framesOut.Swap(0)},
		usage.Delta{Metric: usage.BytesOut, N: u.bytesOut.Swap(0)},
	)
	if errs := u.errs.Load(); errs != nil {
		for i := range errs {
			if n := errs[i].Swap(0); n > 0 {
				deltas = append(deltas, usage.Delta{Metric: usage.Error(usageCodes[i]), N: n})
				switch usageCodes[i] {
				case CodeRateLimited:
					deltas = append(deltas, usage.Delta{Metric: usage.RateLimited, N: n})
				case CodeForbidden:
					deltas = append(deltas, usage.Delta{Metric: usage.Forbidden, N: n})
				}
			}
		}
	}
	return deltas
}

// countIn counts a frame read from the client.
func (c *Conn) countIn(n int) {
	if u := c.use; u != nil {
		u.framesIn.Add(1)
		u.bytesIn.Add(int64(n))
	}
}

// countOut counts a frame written to the client.
func (c *Conn) countOut(n int) {
	if u := c.use; u != nil {
		u.framesOut.Add(1)
		u.bytesOut.Add(int64(n))
	}
}

// countError counts an error frame sent to the client.
func (c *Conn) countError(code string) {
	u := c.use
	if u == nil {
		return
	}
	errs := u.errs.Load()
	if errs == nil {
		u.errs.CompareAndSwap(nil, new([len(usageCodes)]atomic.Int64))
		errs = u.errs.Load()
	}
	errs[usageCodeIndex(code)].Add(1)
}

// usageCollector hands the live connections' counts to the Recorder at the
// start of each of its flushes.
type usageCollector struct {
	mu         sync.Mutex
	buf        []*Conn
	deltas     []usage.Delta
	lastMinute time.Time
}

// collectUsage is the Recorder's collector (see usage.Recorder.Collect). It
// visits every live connection, which costs a few atomic swaps each; only
// connections that did something reach the Recorder. On the first flush of
// each minute every live connection also hands over its connected seconds
// so far, so that a long-lived socket shows in the minute buckets while it
// lives, not only when it closes: one write a minute per connected subject,
// which the Recorder makes anyway for the subject's steady peak.
func (g *Gateway) collectUsage(now time.Time) {
	uc := &g.usageColl
	uc.mu.Lock()
	defer uc.mu.Unlock()
	minute := now.UTC().Truncate(time.Minute)
	newMinute := !minute.Equal(uc.lastMinute)
	uc.lastMinute = minute
	uc.buf = g.reg.snapshot(uc.buf[:0])
	rec := g.cfg.Usage
	for _, c := range uc.buf {
		u := c.use
		if u == nil {
			continue
		}
		deltas := u.take(uc.deltas[:0])
		if newMinute {
			deltas = append(deltas, usage.Delta{Metric: usage.ConnectedSeconds, N: u.credit(now, false)})
		}
		uc.deltas = deltas
		busy := false
		for _, d := range deltas {
			if d.N != 0 {
				busy = true
				break
			}
		}
		if busy {
			rec.AddAll(deltas, u.subjects[:u.n]...)
		}
	}
	clear(uc.buf)
}
