package redis

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/internal/redistest"
	"github.com/sessionbridge/sessionbridge/usage"
)

// redisCost reads Redis's CPU time and the calls it has run (those inside
// scripts included) from INFO.
func redisCost(b *testing.B, srv *redistest.Server) (cpu time.Duration, calls int64) {
	b.Helper()
	info, ok := srv.MustDo("INFO", "all").(string)
	if !ok {
		b.Fatal("INFO is not a string")
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		switch {
		case k == "used_cpu_sys" || k == "used_cpu_user":
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			cpu += time.Duration(f * float64(time.Second))
		case strings.HasPrefix(k, "cmdstat_"):
			// calls=N,usec=...
			n, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
			c, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			calls += c
		}
	}
	return cpu, calls
}

// processCPU returns the CPU time this process (the node's side) has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// usageBench is a Recorder on a fake clock writing to Redis.
type usageBench struct {
	mu  sync.Mutex
	now time.Time
	rec *usage.Recorder
}

// newUsageBench starts the clock at 30 s past the hour, two hours ago, or
// 30 s before the hour with lastMinute.
func newUsageBench(b *testing.B, srv *redistest.Server, interval time.Duration, lastMinute bool) *usageBench {
	ub := &usageBench{now: time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour).Add(30 * time.Second)}
	if lastMinute {
		ub.now = ub.now.Add(59 * time.Minute)
	}
	u := newBackend(b, srv).Usage()
	ub.rec = usage.NewRecorder(u, usage.RecorderOptions{Now: ub.clock, FlushInterval: interval})
	return ub
}

func (ub *usageBench) clock() time.Time {
	ub.mu.Lock()
	defer ub.mu.Unlock()
	return ub.now
}

func (ub *usageBench) advance(d time.Duration) {
	ub.mu.Lock()
	ub.now = ub.now.Add(d)
	ub.mu.Unlock()
}

// connect opens one socket for each of n new users, as a gateway records
// it: a connect, the welcome frame out, the peak.
func (ub *usageBench) connect(b *testing.B, from, n int) {
	for i := from; i < from+n; i++ {
		s := usage.Subject{Kind: usage.KindUser, ID: fmt.Sprintf("user-%07d", i)}
		ub.rec.AddAll([]usage.Delta{{Metric: usage.Connects, N: 1}, {Metric: usage.FramesOut, N: 1}, {Metric: usage.BytesOut, N: 380}}, s)
		ub.rec.Connected(1, s)
	}
	if err := ub.rec.Flush(bg); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkUsageQuietHour: subjects users with a socket each and nothing
// else happening, for an hour of flushes a second on a fake clock, from 30 s
// before an hour begins (so that the hour holds every subject's hourly
// writes once). It reports what Redis spends per subject and minute of
// quiet (its CPU time from INFO, the calls it ran, scripts' calls
// included).
func BenchmarkUsageQuietHour(b *testing.B) {
	b.Run("flush=1s", func(b *testing.B) { benchQuietHour(b, time.Second) })
	// A flush a minute: no spreading, one round trip a minute.
	b.Run("flush=1m", func(b *testing.B) { benchQuietHour(b, time.Minute) })
}

func benchQuietHour(b *testing.B, interval time.Duration) {
	const subjects = 1000
	for range b.N {
		srv := redistest.Start(b)
		ub := newUsageBench(b, srv, interval, true)
		ub.connect(b, 0, subjects)
		cpu0, calls0 := redisCost(b, srv)
		for range time.Hour / interval {
			ub.advance(interval)
			if err := ub.rec.Flush(bg); err != nil {
				b.Fatal(err)
			}
		}
		cpu1, calls1 := redisCost(b, srv)
		perMinute := float64(subjects * 60)
		b.ReportMetric(float64(cpu1-cpu0)/perMinute, "redis-cpu-ns/subject-minute")
		b.ReportMetric(float64(calls1-calls0)/perMinute, "redis-calls/subject-minute")
		srv.Stop()
	}
}

// BenchmarkUsageConnect: the usage written for the connect of a new user
// (one socket each), flushed every 100 connects as a second's flush at 100
// connects a second would.
func BenchmarkUsageConnect(b *testing.B) {
	srv := redistest.Start(b)
	ub := newUsageBench(b, srv, time.Second, false)
	cpu0, calls0 := redisCost(b, srv)
	node0 := processCPU()
	n := 0
	for b.Loop() {
		ub.connect(b, n*100, 100)
		ub.advance(time.Second)
		n++
	}
	node1 := processCPU()
	cpu1, calls1 := redisCost(b, srv)
	b.ReportMetric(float64(node1-node0)/float64(n*100), "node-cpu-ns/connect")
	b.ReportMetric(float64(cpu1-cpu0)/float64(n*100), "redis-cpu-ns/connect")
	b.ReportMetric(float64(calls1-calls0)/float64(n*100), "redis-calls/connect")
}
