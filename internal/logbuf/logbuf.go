// Package logbuf gathers log records in memory and writes them out together,
// so that a burst of records (an audit record for every socket of a connect
// storm) costs one write system call per interval instead of one per record.
//
// A record reaches the output at most one interval after it was written, at
// once when the buffer is full, and at Flush and Close; nothing is written
// while nothing was logged. What a process loses when it is killed without a
// clean stop is the last interval's records at most.
package logbuf

import (
	"io"
	"sync"
	"time"
)

// DefaultInterval is the server's default flush interval: short enough that
// a record is in the log before anyone looks, long enough that a burst of
// records is written together.
const DefaultInterval = 100 * time.Millisecond

// DefaultSize is the buffer a Writer gathers records in before it writes
// them out early.
const DefaultSize = 64 << 10

// Writer is an io.Writer that buffers what is written to it and writes it to
// the underlying writer at most one interval later, in order. It is safe for
// concurrent use; each Write lands whole and in one piece, as slog's handlers
// need. Create it with New and Close it when done.
type Writer struct {
	out      io.Writer
	interval time.Duration
	size     int

	mu     sync.Mutex
	buf    []byte
	closed bool

	kick chan struct{} // capacity 1: the buffer went from empty to not
	stop chan struct{}
	done chan struct{}
}

// New returns a Writer that writes to out at most interval after each Write,
// or as soon as size bytes wait (size <= 0 means DefaultSize). An interval
// <= 0 is not buffering: New then returns out itself, wrapped so that Close
// is a no-op.
func New(out io.Writer, interval time.Duration, size int) io.WriteCloser {
	if interval <= 0 {
		return nopCloser{out}
	}
	if size <= 0 {
		size = DefaultSize
	}
	w := &Writer{
		out: out, interval: interval, size: size,
		buf:  make([]byte, 0, size),
		kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go w.run()
	return w
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// Write queues p for the underlying writer. It fails only when it had to
// write out the full buffer first and that failed (what waited is then
// lost, as it would have been unbuffered); p is queued all the same. After
// Close it writes p through at once.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.out.Write(p)
	}
	var err error
	if len(w.buf)+len(p) > w.size {
		err = w.flushLocked()
		if len(p) > w.size {
			return w.out.Write(p)
		}
	}
	if len(w.buf) == 0 {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	w.buf = append(w.buf, p...)
	return len(p), err
}

// Flush writes out what waits.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushLocked()
}

func (w *Writer) flushLocked() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.out.Write(w.buf)
	w.buf = w.buf[:0]
	return err
}

// Close writes out what waits and stops the Writer's goroutine; later Writes
// go to the underlying writer directly. It does not close that writer.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	// Flushed under the same lock, so that a Write after Close cannot
	// overtake what waits.
	err := w.flushLocked()
	w.mu.Unlock()
	close(w.stop)
	<-w.done
	return err
}

// run writes out the buffer one interval after it went from empty to not.
func (w *Writer) run() {
	defer close(w.done)
	t := time.NewTimer(w.interval)
	t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-w.kick:
		}
		t.Reset(w.interval)
		select {
		case <-w.stop:
			t.Stop()
			return
		case <-t.C:
		}
		_ = w.Flush()
	}
}
