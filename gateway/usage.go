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

// connUsage is what one connection did since its counts were last handed to
// the Recorder. The read loop, the writer and forwarded replies add to it;
// the collector and the close take the counts with Swap, so that each one is
// handed over exactly once whoever runs first. It lives inside the Conn (40
// bytes); whom the connection counts for is read from its principal, and
// its connected time is the Recorder's (see usage.Recorder.Connected).
type connUsage struct {
	framesIn, bytesIn, framesOut, bytesOut atomic.Int64
	// errs is made on the first error frame: most connections never get one.
	errs atomic.Pointer[[len(usageCodes)]atomic.Int64]
}

// usageSubjects returns whom a connection of a principal with method, user
// and key counts for: its user, and its key for a connection opened with an
// API key.
func usageSubjects(method sb.AuthMethod, userID, keyID string) ([2]usage.Subject, int) {
	var out [2]usage.Subject
	n := 0
	if userID != "" {
		out[n] = usage.Subject{Kind: usage.KindUser, ID: userID}
		n++
	}
	if method == sb.AuthAPIKey && keyID != "" {
		out[n] = usage.Subject{Kind: usage.KindKey, ID: keyID}
		n++
	}
	return out, n
}

// subjects returns whom c counts for. The user, method and key of a
// connection's principal never change, so they are read without c.mu.
func (c *Conn) subjects() ([2]usage.Subject, int) {
	return usageSubjects(c.p.Method, c.p.UserID, c.p.KeyID)
}

// principalSubjects returns whom an upgrade of p counts for.
func principalSubjects(p *sb.Principal) []usage.Subject {
	s, n := usageSubjects(p.Method, p.UserID, p.KeyID)
	return s[:n]
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
	if !c.counting {
		return
	}
	s, n := c.subjects()
	rec := g.cfg.Usage
	rec.Add(usage.Connects, 1, s[:n]...)
	rec.Connected(1, s[:n]...)
}

// usageClosed hands over what a closing connection did since the last
// collection; the Recorder adds its connected time.
func (g *Gateway) usageClosed(c *Conn) {
	if !c.counting {
		return
	}
	var buf [len(usageCodes) + 8]usage.Delta
	deltas := c.use.take(buf[:0])
	s, n := c.subjects()
	rec := g.cfg.Usage
	rec.AddAll(deltas, s[:n]...)
	rec.Connected(-1, s[:n]...)
}

// take swaps the connection's counts to zero and appends them to deltas.
func (u *connUsage) take(deltas []usage.Delta) []usage.Delta {
	deltas = append(deltas,
		usage.Delta{Metric: usage.FramesIn, N: takeCount(&u.framesIn)},
		usage.Delta{Metric: usage.BytesIn, N: takeCount(&u.bytesIn)},
		usage.Delta{Metric: usage.FramesOut, N: takeCount(&u.framesOut)},
		usage.Delta{Metric: usage.BytesOut, N: takeCount(&u.bytesOut)},
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

// takeCount swaps a counter to zero and returns what it held. The collector
// visits every live connection each flush and most are idle: a load is
// much cheaper than a swap (a locked instruction), so a zero is only read.
func takeCount(a *atomic.Int64) int64 {
	if a.Load() == 0 {
		return 0
	}
	return a.Swap(0)
}

// countIn counts a frame read from the client.
func (c *Conn) countIn(n int) {
	if c.counting {
		c.use.framesIn.Add(1)
		c.use.bytesIn.Add(int64(n))
	}
}

// countOut counts a frame written to the client.
func (c *Conn) countOut(n int) {
	if c.counting {
		c.use.framesOut.Add(1)
		c.use.bytesOut.Add(int64(n))
	}
}

// countError counts an error frame sent to the client.
func (c *Conn) countError(code string) {
	if !c.counting {
		return
	}
	u := &c.use
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
	mu     sync.Mutex
	buf    []*Conn
	deltas []usage.Delta
}

// collectUsage is the Recorder's collector (see usage.Recorder.Collect). It
// visits every live connection, which costs a few atomic swaps each; only
// connections that did something reach the Recorder. Connected time is not
// collected here: the Recorder keeps it per subject from the opens and
// closes.
func (g *Gateway) collectUsage(time.Time) {
	uc := &g.usageColl
	uc.mu.Lock()
	defer uc.mu.Unlock()
	uc.buf = g.reg.snapshot(uc.buf[:0])
	rec := g.cfg.Usage
	for _, c := range uc.buf {
		if !c.counting {
			continue
		}
		deltas := c.use.take(uc.deltas[:0])
		uc.deltas = deltas
		busy := false
		for _, d := range deltas {
			if d.N != 0 {
				busy = true
				break
			}
		}
		if busy {
			s, n := c.subjects()
			rec.AddAll(deltas, s[:n]...)
		}
	}
	clear(uc.buf)
}
