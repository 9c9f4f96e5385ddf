package loadtest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/internal/redistest"
	"github.com/sessionbridge/sessionbridge/internal/server"
)

const e2eAdminToken = "bench-e2e-admin-token"

// startNode runs a real server in-process on a loopback port until the test
// ends, and returns its base URL.
func startNode(t testing.TB, cfg server.Config) string {
	t.Helper()
	cfg.AdminToken = e2eAdminToken
	cfg.UsersFile = filepath.Join(t.TempDir(), "users.json")
	cfg.InsecureCookies = true
	srv, err := server.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server drain: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("server did not stop within 30s")
		}
		srv.Close()
	})
	base := "http://" + ln.Addr().String()
	waitHealthy(t, base)
	return base
}

// waitHealthy polls /readyz until the node answers 200, failing after 10s.
func waitHealthy(t testing.TB, base string) {
	t.Helper()
	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := hc.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 10s: %v", base, errors.Join(err))
		}
		<-tick.C
	}
}

// TestEndToEndSingleNode runs every scenario against one real node on the
// memory backend, given as both A and B.
func TestEndToEndSingleNode(t *testing.T) {
	base := startNode(t, server.Config{NodeID: "solo"})
	rep, err := Run(context.Background(), tinyConfig([]string{base, base}, e2eAdminToken))
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep, 1, 20, 10, 12)
	checkLimits(t, rep, 1)
}

// TestEndToEndRedisCluster runs every scenario against two real nodes that
// share a private Redis: admin calls go to A, idle sockets sit on B, so
// updates and revocations cross nodes through Redis pub/sub.
func TestEndToEndRedisCluster(t *testing.T) {
	rs := redistest.Start(t)
	a := startNode(t, server.Config{NodeID: "a", RedisURL: rs.URL()})
	b := startNode(t, server.Config{NodeID: "b", RedisURL: rs.URL()})
	rep, err := Run(context.Background(), tinyConfig([]string{a, b}, e2eAdminToken))
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep, 1, 20, 10, 12)
	checkLimits(t, rep, 2)
	if rep.NodeA != a || len(rep.NodesB) != 1 || rep.NodesB[0] != b {
		t.Fatalf("nodes: A %s, B %v; want A %s, B [%s]", rep.NodeA, rep.NodesB, a, b)
	}
}
