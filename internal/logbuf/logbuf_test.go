package logbuf

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is an output that counts its writes; safe for concurrent use.
type syncBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	err    error
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writes++
	if b.err != nil {
		return 0, b.err
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.writes
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func record(i int) string { return fmt.Sprintf("level=INFO msg=audit n=%d\n", i) }

// TestHeldUntilCloseThenAllInOrder: with an interval longer than the test,
// records wait in the buffer (no write at all), and Close writes every one
// of them, in order, in one write.
func TestHeldUntilCloseThenAllInOrder(t *testing.T) {
	out := &syncBuffer{}
	w := New(out, time.Hour, 0)
	var want strings.Builder
	for i := range 100 {
		if _, err := w.Write([]byte(record(i))); err != nil {
			t.Fatal(err)
		}
		want.WriteString(record(i))
	}
	if n := out.count(); n != 0 {
		t.Fatalf("%d writes before the interval passed, want 0", n)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != want.String() {
		t.Fatalf("after Close the output holds %d bytes, want the %d written, in order", len(got), want.Len())
	}
	if n := out.count(); n != 1 {
		t.Fatalf("Close wrote %d times, want 1", n)
	}
}

// TestWrittenWithinInterval: a record reaches the output without Flush or
// Close once the interval has passed.
func TestWrittenWithinInterval(t *testing.T) {
	out := &syncBuffer{}
	w := New(out, 5*time.Millisecond, 0)
	defer w.Close()
	for i := range 3 {
		if _, err := w.Write([]byte(record(i))); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the record to be written", func() bool { return strings.HasSuffix(out.String(), record(i)) })
	}
}

// TestFullBufferWrittenEarly: a record that does not fit any more writes
// out what waits first; one larger than the buffer goes straight through;
// the order is kept.
func TestFullBufferWrittenEarly(t *testing.T) {
	out := &syncBuffer{}
	w := New(out, time.Hour, 64)
	a, b := strings.Repeat("a", 40)+"\n", strings.Repeat("b", 40)+"\n"
	big := strings.Repeat("c", 100) + "\n"
	for _, s := range []string{a, b, big} {
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := out.String(), a+b+big; got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestWriteAfterCloseGoesThrough: records logged after Close (the last
// lines of a shutdown) are written at once, after what was buffered.
func TestWriteAfterCloseGoesThrough(t *testing.T) {
	out := &syncBuffer{}
	w := New(out, time.Hour, 0)
	_, _ = w.Write([]byte(record(1)))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, _ = w.Write([]byte(record(2)))
	if got, want := out.String(), record(1)+record(2); got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
}

// TestConcurrentRecordsStayWhole: records written from many goroutines at
// once each arrive whole, none lost.
func TestConcurrentRecordsStayWhole(t *testing.T) {
	out := &syncBuffer{}
	w := New(out, time.Millisecond, 256)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				_, _ = w.Write([]byte(record(g*1000 + i)))
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 8*200 {
		t.Fatalf("%d records in the output, want %d", len(lines), 8*200)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		if !strings.HasPrefix(l, "level=INFO msg=audit n=") || seen[l] {
			t.Fatalf("record %q torn or repeated", l)
		}
		seen[l] = true
	}
}

// TestCloseLeavesNoGoroutine: the Writer's goroutine ends with Close.
func TestCloseLeavesNoGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	w := New(&syncBuffer{}, time.Millisecond, 0)
	_, _ = w.Write([]byte(record(1)))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the goroutine to end", func() bool { return runtime.NumGoroutine() <= before })
}

// TestFailedWriteIsReported: an output error reaches Flush, and the Writer
// keeps working once the output recovers.
func TestFailedWriteIsReported(t *testing.T) {
	broken := errors.New("broken pipe")
	out := &syncBuffer{err: broken}
	w := New(out, time.Hour, 0)
	defer w.Close()
	_, _ = w.Write([]byte(record(1)))
	if err := w.(*Writer).Flush(); !errors.Is(err, broken) {
		t.Fatalf("Flush = %v, want %v", err, broken)
	}
	out.mu.Lock()
	out.err = nil
	out.mu.Unlock()
	_, _ = w.Write([]byte(record(2)))
	if err := w.(*Writer).Flush(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != record(2) {
		t.Fatalf("output %q, want %q", got, record(2))
	}
}

// TestZeroIntervalIsUnbuffered: interval 0 writes every record at once.
func TestZeroIntervalIsUnbuffered(t *testing.T) {
	out := &syncBuffer{}
	w := New(out, 0, 0)
	_, _ = w.Write([]byte(record(1)))
	if got := out.String(); got != record(1) {
		t.Fatalf("output %q, want the record at once", got)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
