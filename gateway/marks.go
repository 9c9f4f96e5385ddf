package gateway

import "sync/atomic"

// markBuckets is how many counters eventMarks spreads session IDs over; more
// buckets mean fewer upgrades that re-read their session because of another
// session's event.
const markBuckets = 256

// eventMarks lets an upgrade tell whether an event about its session may
// have reached this node while it was between reading the session and
// registering the socket. Such an event found no socket to apply to, so the
// upgrade must read the session once more; when none came, the read it
// authenticated with is still current and the second store round trip is
// saved. Counters only grow, so a changed sum means some event came.
type eventMarks struct {
	// all moves for a gap and for events that name no session: they may
	// concern any session.
	all     atomic.Uint64
	buckets [markBuckets]atomic.Uint64
}

func (m *eventMarks) bucket(sessionID string) *atomic.Uint64 {
	// FNV-1a: session IDs are random, any cheap mix spreads them.
	h := uint32(2166136261)
	for i := 0; i < len(sessionID); i++ {
		h ^= uint32(sessionID[i])
		h *= 16777619
	}
	return &m.buckets[h%markBuckets]
}

// note records that an event about sessionID ("" for any session) arrived.
// HandleEvent calls it before it looks the session up in the registry.
func (m *eventMarks) note(sessionID string) {
	if sessionID == "" {
		m.all.Add(1)
		return
	}
	m.bucket(sessionID).Add(1)
}

// gap records that events may have been lost.
func (m *eventMarks) gap() { m.all.Add(1) }

// mark returns the current mark of sessionID; compare two marks for
// equality only.
func (m *eventMarks) mark(sessionID string) uint64 {
	return m.all.Load() + m.bucket(sessionID).Load()
}
