package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/audit"
	"github.com/sessionbridge/sessionbridge/memory"
	"github.com/sessionbridge/sessionbridge/metrics"
	"github.com/sessionbridge/sessionbridge/usage"
)

func benchConns(n int) []*Conn {
	conns := make([]*Conn, n)
	for i := range conns {
		conns[i] = &Conn{id: newConnID(), p: connPrincipal{
			Method: sb.AuthSession, UserID: fmt.Sprintf("user-%d", i%(n/4+1)),
			SessionID: fmt.Sprintf("sess-%d", i%(n/2+1)),
		}}
	}
	return conns
}

var benchSession = &sb.Session{ID: "s", UserID: "u", Data: json.RawMessage(`{}`), Version: 1}

func BenchmarkRegistryRegister(b *testing.B) {
	r := newRegistry()
	conns := benchConns(4096)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c := conns[i%len(conns)]
		r.add(c, benchSession)
		r.remove(c)
		i++
	}
}

func BenchmarkRegistryRegisterParallel(b *testing.B) {
	r := newRegistry()
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		conns := benchConns(1024)
		// Give each goroutine its own sessions and users.
		base := next.Add(1)
		for _, c := range conns {
			c.p.UserID += fmt.Sprint("-", base)
			c.p.SessionID += fmt.Sprint("-", base)
		}
		i := 0
		for pb.Next() {
			c := conns[i%len(conns)]
			r.add(c, benchSession)
			r.remove(c)
			i++
		}
	})
}

func BenchmarkRegistryLookupSession(b *testing.B) {
	r := newRegistry()
	conns := benchConns(10000)
	for _, c := range conns {
		r.add(c, benchSession)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if r.session(conns[i%len(conns)].p.SessionID) == nil {
			b.Fatal("missing")
		}
		i++
	}
}

func BenchmarkRegistryLookupSessionParallel(b *testing.B) {
	r := newRegistry()
	conns := benchConns(10000)
	for _, c := range conns {
		r.add(c, benchSession)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if r.session(conns[i%len(conns)].p.SessionID) == nil {
				b.Fatal("missing")
			}
			i++
		}
	})
}

func benchPublic() sb.PublicSession {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s := &sb.Session{
		ID: "3fAAAAAAAAAAAAAAAA", UserID: "user-1234", Data: json.RawMessage(`{"theme":"dark","cart":{"items":3}}`),
		Device:    sb.Device{UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0", Browser: "Firefox 140", OS: "Linux", DeviceType: "desktop", IP: "203.0.113.9"},
		CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(30 * time.Minute), AbsoluteExpiresAt: now.Add(24 * time.Hour), Version: 7,
	}
	return s.Public()
}

func BenchmarkEncodeWelcome(b *testing.B) {
	ps := benchPublic()
	w := welcomeData{ConnectionID: newConnID(), Auth: sb.AuthSession, UserID: ps.UserID, Session: &ps, Scopes: []string{"*"}, ExpiresAt: timePtr(ps.ExpiresAt)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeFrame(TypeWelcome, "", w); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeSessionUpdated(b *testing.B) {
	d := sessionUpdatedData{Session: benchPublic(), Source: sb.SourceHTTP}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeFrame(TypeSessionUpdated, "", d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeFrame(b *testing.B) {
	in := []byte(`{"type":"session.update","id":"42","data":{"data":{"cart":{"items":4}}}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeFrame(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIdleSockets opens idleSockets authenticated sockets, each of its
// own session, against a gateway on loopback and reports the gateway's heap
// and stack bytes per idle socket. The clients are raw TCP connections that
// did the handshake by hand and hold no goroutine or buffer; their own cost
// (a socket on each end) is measured separately against a bare listener and
// subtracted. One iteration takes seconds, so the benchmark runs once.
func BenchmarkIdleSockets(b *testing.B) {
	const idleSockets = 2000
	for range b.N {
		perSocket, raw, tcp := measureIdleSockets(b, idleSockets, func(*Config) {})
		b.ReportMetric(perSocket, "B/socket")
		b.ReportMetric(raw, "B/socket-incl-clients")
		b.ReportMetric(tcp, "B/tcp-pair")
	}
}

// BenchmarkIdleSocketsServer is BenchmarkIdleSockets with the gateway set up
// as the server sets it up by default: usage recorded, the default frame
// rate limits, audit and logs at info, metrics. With IDLE_HEAP_PROFILE set
// to a file name, it writes a heap profile (every allocation sampled) there
// while the sockets are open.
func BenchmarkIdleSocketsServer(b *testing.B) {
	const idleSockets = 2000
	for range b.N {
		perSocket, raw, tcp := measureIdleSockets(b, idleSockets, func(cfg *Config) {
			logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
			cfg.Logger, cfg.Audit = logger, audit.New(logger)
			cfg.Metrics = metrics.New(prometheus.NewRegistry())
			cfg.Usage = usage.NewRecorder(discardSink{}, usage.RecorderOptions{FlushInterval: time.Hour})
			cfg.Limits.Defaults = sb.Limits{FramesPerSecond: 100, BytesPerSecond: 1 << 20}
		})
		b.ReportMetric(perSocket, "B/socket")
		b.ReportMetric(raw, "B/socket-incl-clients")
		b.ReportMetric(tcp, "B/tcp-pair")
	}
}

// discardSink is a usage sink that stores nothing: what the store keeps is
// not the node's memory.
type discardSink struct{}

func (discardSink) Write(context.Context, time.Time, []usage.Entry) error { return nil }

func heapStack() uint64 {
	h, s := heapAndStack()
	return h + s
}

func heapAndStack() (heap, stack uint64) {
	var ms runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.StackInuse
}

func measureIdleSockets(b *testing.B, n int, configure func(*Config)) (perSocket, raw, tcpPair float64) {
	ctx := context.Background()

	// Cost of the TCP connections alone: a client and an accepted socket.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	accepted := make(chan net.Conn, n)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	base := heapStack()
	clients := make([]net.Conn, 0, n)
	servers := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		clients = append(clients, c)
		servers = append(servers, <-accepted)
	}
	tcpPair = float64(heapStack()-base) / float64(n)
	for i := range clients {
		clients[i].Close()
		servers[i].Close()
	}
	ln.Close()
	for range accepted {
	}
	clients, servers = nil, nil

	bus := memory.NewBus()
	mgr := newManager(b, sb.Backend{Store: memory.NewStore(bus), Bus: bus})
	cfg := Config{Manager: mgr, SweepInterval: time.Hour}
	configure(&cfg)
	g, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	profile := os.Getenv("IDLE_HEAP_PROFILE")
	if profile != "" {
		runtime.MemProfileRate = 1
	}
	srv := httptest.NewServer(g)
	runCtx, cancel := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- g.Run(runCtx) }()
	tokens := make([]string, n)
	for i := range tokens {
		_, tokens[i], err = mgr.Create(ctx, sb.NewSession{UserID: fmt.Sprint("user-", i), Data: json.RawMessage(`{"theme":"dark"}`)}, sb.Change{})
		if err != nil {
			b.Fatal(err)
		}
	}
	addr := strings.TrimPrefix(srv.URL, "http://")
	// One warm-up socket so that one-off allocations (pools, the pinger)
	// are in the baseline.
	warm := rawDial(b, addr, tokens[0])
	h0, s0 := heapAndStack()
	base = h0 + s0
	conns := make([]net.Conn, 0, n)
	for _, tok := range tokens[1:] {
		conns = append(conns, rawDial(b, addr, tok))
	}
	if g.Len() != n {
		b.Fatalf("%d live connections, want %d", g.Len(), n)
	}
	// An idle socket is one whose read loop has handed it to the idle
	// poller (where there is one), which a new socket's does at once.
	deadline := time.Now().Add(idleLinger + 10*time.Second)
	for g.parkedSockets() < n && g.idle.Load() != nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if cfg.Usage != nil {
		// Connects and peaks wait in the Recorder until its next flush (a
		// second in a server); an idle socket's cost is what stays after.
		if err := cfg.Usage.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
	h1, s1 := heapAndStack()
	total := float64(h1+s1-base) / float64(n-1)
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	b.Logf("per socket: heap %d B, stack %d B (clients included)", (h1-h0)/uint64(n-1), (s1-s0)/uint64(n-1))
	runtime.KeepAlive(conns)

	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	if err := g.Shutdown(sctx); err != nil {
		b.Fatal(err)
	}
	for _, c := range conns {
		c.Close()
	}
	warm.Close()
	cancel()
	<-runDone
	srv.Close()
	// The client side of a pair is about half of tcpPair.
	return total - tcpPair/2, total, tcpPair
}

// rawDial upgrades a plain TCP connection by hand and reads up to the end
// of the welcome frame, leaving nothing buffered on the client side.
func rawDial(b *testing.B, addr, token string) net.Conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	req := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"Authorization: Bearer " + token + "\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		b.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, 4096)
	var seen []byte
	for !bytes.Contains(seen, []byte(`"welcome"`)) || !bytes.HasSuffix(seen, []byte("}")) {
		chunk := make([]byte, 4096)
		k, err := br.Read(chunk)
		if err != nil {
			b.Fatalf("handshake: %v after %q", err, seen)
		}
		seen = append(seen, chunk[:k]...)
	}
	if !bytes.HasPrefix(seen, []byte("HTTP/1.1 101")) {
		b.Fatalf("handshake answer %q", seen)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c
}

// BenchmarkApplyUpdate measures the synchronizer's work for one updated
// event: apply the patch to the held data, encode session.updated once and
// queue it on every socket of the session (the network writes are not
// included).
func BenchmarkApplyUpdate(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprint("conns=", n), func(b *testing.B) {
			bus := memory.NewBus()
			g, err := New(Config{Manager: newManager(b, sb.Backend{Store: memory.NewStore(bus), Bus: bus}), SendQueue: 1 << 20})
			if err != nil {
				b.Fatal(err)
			}
			g.clock = newFakeClock()
			pub := benchPublic()
			sess := &sb.Session{ID: pub.ID, UserID: pub.UserID, Data: pub.Data, Device: pub.Device,
				CreatedAt: pub.CreatedAt, LastSeenAt: pub.LastSeenAt, ExpiresAt: pub.ExpiresAt,
				AbsoluteExpiresAt: pub.AbsoluteExpiresAt, Version: 1}
			conns := make([]*Conn, n)
			for i := range conns {
				// held: the frames stay queued, no writer runs.
				conns[i] = &Conn{g: g, id: newConnID(), held: true, p: connPrincipal{UserID: sess.UserID, SessionID: sess.ID}}
				g.reg.add(conns[i], sess)
			}
			ev := sb.Event{Type: sb.EventUpdated, SessionID: sess.ID, UserID: sess.UserID,
				Updates: json.RawMessage(`{"cart":{"items":5}}`), Source: sb.SourceHTTP}
			b.ReportAllocs()
			v := uint64(1)
			for b.Loop() {
				v++
				ev.Version = v
				g.HandleEvent(ev)
				for _, c := range conns {
					c.queue, c.pushed = c.queue[:0], queueLoad{}
				}
			}
			if e := g.reg.session(sess.ID); e.sess.Version != v {
				b.Fatalf("version %d, want %d", e.sess.Version, v)
			}
		})
	}
}
