package loadtest

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// progress prints one line per interval about the current phase, so that a
// long run shows it is alive.
type progress struct {
	w     io.Writer
	start time.Time

	mu    sync.Mutex
	phase string
	total int64
	since time.Time

	done atomic.Int64
	errs atomic.Int64

	stop chan struct{}
	wg   sync.WaitGroup
}

func startProgress(w io.Writer, every time.Duration) *progress {
	p := &progress{w: w, start: time.Now(), stop: make(chan struct{})}
	if w == nil || every <= 0 {
		return p
	}
	p.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.print()
			}
		}
	})
	return p
}

// set starts a new phase with total steps (0 for open-ended phases).
func (p *progress) set(phase string, total int) {
	p.mu.Lock()
	p.phase, p.total, p.since = phase, int64(total), time.Now()
	p.done.Store(0)
	p.errs.Store(0)
	p.mu.Unlock()
	if p.w != nil {
		fmt.Fprintf(p.w, "[%6.1fs] %s ...\n", time.Since(p.start).Seconds(), phase)
	}
}

func (p *progress) step(err error) {
	p.done.Add(1)
	if err != nil {
		p.errs.Add(1)
	}
}

func (p *progress) print() {
	p.mu.Lock()
	phase, total, since := p.phase, p.total, p.since
	p.mu.Unlock()
	if phase == "" {
		return
	}
	done, errs := p.done.Load(), p.errs.Load()
	el := time.Since(since).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(done) / el
	}
	if total == 0 && done == 0 && errs == 0 {
		fmt.Fprintf(p.w, "[%6.1fs] %s: %.1f s so far\n", time.Since(p.start).Seconds(), phase, el)
		return
	}
	if total > 0 {
		fmt.Fprintf(p.w, "[%6.1fs] %s: %d/%d (%.0f/s, %d errors)\n", time.Since(p.start).Seconds(), phase, done, total, rate, errs)
	} else {
		fmt.Fprintf(p.w, "[%6.1fs] %s: %d (%.0f/s, %d errors)\n", time.Since(p.start).Seconds(), phase, done, rate, errs)
	}
}

func (p *progress) close() {
	close(p.stop)
	p.wg.Wait()
}
