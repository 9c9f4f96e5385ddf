package loadtest

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/internal/server"
)

var heapProfile = flag.String("loadtest.heapprofile", "", "write a heap profile to this file while BenchmarkIdleSockets holds its sockets open")

// BenchmarkIdleSockets opens b.N authenticated sockets to an in-process node
// on the memory backend and keeps them open. ns/op is the in-process cost of
// one connect+auth (client and server on the same CPUs); heap-B/socket is the
// live heap per open socket after a GC, client and server side together (the
// heap profile written with -loadtest.heapprofile tells them apart by
// allocation site).
func BenchmarkIdleSockets(b *testing.B) {
	if *heapProfile != "" {
		// Record every allocation, so that the profile is exact per site.
		runtime.MemProfileRate = 1
	}
	base := startNode(b, server.Config{NodeID: "bench"})
	ctx := context.Background()
	hc := newHTTPClient(8, 10*time.Second)
	defer hc.CloseIdleConnections()
	admin := &adminClient{hc: hc, token: e2eAdminToken}
	ws := newWSDialers(nil, 10*time.Second)
	tokens := make([]string, b.N)
	for i := range tokens {
		cs, err := admin.createSession(ctx, base, fmt.Sprint("bench-user-", i), nil, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		tokens[i] = cs.Token
	}
	conns := make([]*wsConn, 0, b.N)
	defer func() {
		for _, c := range conns {
			c.Close(5 * time.Second)
		}
	}()
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range b.N {
		c, err := ws.dial(ctx, i, wsURL(base), tokens[i], 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	b.StopTimer()
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	live := func(m runtime.MemStats) float64 { return float64(m.HeapInuse + m.StackInuse) }
	b.ReportMetric((live(after)-live(before))/float64(b.N), "heap+stack-B/socket")
	if *heapProfile != "" {
		f, err := os.Create(*heapProfile)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
	}
}
