package redis

import (
	"slices"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
)

func newID(t *testing.T) string {
	t.Helper()
	id, err := sessionbridge.NewSessionID("u")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestJournalKeyRoundTrips(t *testing.T) {
	for range 100 {
		id := newID(t)
		k, ok := keyOf(id)
		if !ok || k.id() != id {
			t.Fatalf("keyOf(%q) = %v, %v; back %q", id, k, ok, k.id())
		}
	}
	for _, bad := range []string{"", "zz", "0aAAAAAAAAAAAAAAA", "0gAAAAAAAAAAAAAAAA", "0aAAAAAAAAAAAAAAA+"} {
		if _, ok := keyOf(bad); ok {
			t.Errorf("keyOf(%q) accepted", bad)
		}
	}
}

func TestJournalRemembersUntilTheDeadline(t *testing.T) {
	j := newJournal(10)
	now := time.Now()
	a, b, c := newID(t), newID(t), newID(t)
	j.add(a, now.Add(time.Minute), now, false)
	j.add(b, now.Add(time.Hour), now, false)
	j.add(c, now.Add(-time.Second), now, false) // already dead: nothing to remember
	if !j.has(a) || !j.has(b) || j.has(c) || j.len() != 2 {
		t.Fatalf("has a %v b %v c %v, len %d", j.has(a), j.has(b), j.has(c), j.len())
	}
	got := j.ids(now.Add(2 * time.Minute))
	if !slices.Equal(got, []string{b}) || j.has(a) {
		t.Fatalf("ids after a's deadline = %v, has(a) %v; want only b", got, j.has(a))
	}
}

func TestJournalKeepsTheLaterTime(t *testing.T) {
	j := newJournal(10)
	now := time.Now()
	id := newID(t)
	j.add(id, now.Add(time.Minute), now, false)
	j.add(id, now.Add(time.Hour), now, true) // onlyIfAbsent: the minute stands
	if got := j.ids(now.Add(2 * time.Minute)); len(got) != 0 {
		t.Fatalf("onlyIfAbsent moved the time: %v", got)
	}
	j.add(id, now.Add(time.Minute), now, false)
	j.add(id, now.Add(time.Hour), now, false) // later wins
	j.add(id, now.Add(time.Second), now, false)
	if got := j.ids(now.Add(2 * time.Minute)); !slices.Equal(got, []string{id}) {
		t.Fatalf("ids = %v, want the later time to stand", got)
	}
	if len(j.byUntil) > 2*len(j.byKey)+64 {
		t.Fatalf("heap of %d for %d entries", len(j.byUntil), len(j.byKey))
	}
}

func TestJournalFullDropsTheEarliestDeadline(t *testing.T) {
	j := newJournal(3)
	now := time.Now()
	ids := []string{newID(t), newID(t), newID(t), newID(t)}
	j.add(ids[0], now.Add(3*time.Hour), now, false)
	j.add(ids[1], now.Add(time.Hour), now, false) // expires first
	j.add(ids[2], now.Add(2*time.Hour), now, false)
	if d := j.add(ids[3], now.Add(4*time.Hour), now, false); d != 1 {
		t.Fatalf("dropped = %d, want 1", d)
	}
	if j.has(ids[1]) || !j.has(ids[0]) || !j.has(ids[2]) || !j.has(ids[3]) || j.len() != 3 {
		t.Fatalf("after overflow: has %v %v %v %v, len %d; want the earliest deadline dropped",
			j.has(ids[0]), j.has(ids[1]), j.has(ids[2]), j.has(ids[3]), j.len())
	}
	// Entries whose time has passed make room before anything is dropped.
	later := now.Add(150 * time.Minute) // past ids[2]'s deadline
	if d := j.add(newID(t), later.Add(time.Hour), later, false); d != 1 || j.has(ids[2]) || !j.has(ids[0]) {
		t.Fatalf("dropped = %d, has ids[2] %v ids[0] %v: want the expired entry pruned, nothing more dropped", d, j.has(ids[2]), j.has(ids[0]))
	}
}

// BenchmarkJournalMemory reports the memory a full journal holds per entry.
func BenchmarkJournalMemory(b *testing.B) {
	const n = 100_000
	ids := make([]string, n)
	for i := range ids {
		id, err := sessionbridge.NewSessionID("u")
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = id
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		j := newJournal(n)
		for i, id := range ids {
			j.add(id, now.Add(time.Duration(i)*time.Millisecond+time.Hour), now, false)
		}
	}
}
