package dashboard_test

// The server half of the end-to-end tests: a whole sessionbridge server built
// with internal/server (memory backend, a users file with one user, cookies
// without Secure so that they work on http://127.0.0.1) on a loopback port.

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/internal/server"
	"github.com/sessionbridge/sessionbridge/users"
)

// serverTuning is what a test changes in the server's configuration.
type serverTuning struct {
	absolute     time.Duration
	expiringLead time.Duration
	// addr is where to listen; empty means a free loopback port.
	addr string
	// redis is the URL of a Redis backend; empty means the memory backend.
	redis string
}

// adminToken enables the admin API of test servers.
const adminToken = "dashboard-test-admin-token"

type testServer struct {
	URL  string
	logs *recorder
	// client talks to the server from the test (health, metrics, admin
	// API); its own transport, so that no idle connection outlives the test.
	client *http.Client
	// stop drains and stops the server; the test's cleanup calls it too.
	stop func()
}

// startServer runs a server until the test ends.
func startServer(t *testing.T, tune serverTuning) *testServer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users.json")
	f, err := users.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// Cheap hashes: the tests are about the page, and every sign-in pays
	// for one verification.
	f.Params = users.Argon2Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	if err := f.Add(testUser, testPassword, users.Argon2id); err != nil {
		t.Fatal(err)
	}
	if err := f.Save(); err != nil {
		t.Fatal(err)
	}
	logs := &recorder{}
	srv, err := server.New(context.Background(), server.Config{
		UsersFile:       path,
		AdminToken:      adminToken,
		InsecureCookies: true,
		AbsoluteTimeout: tune.absolute,
		ExpiryWarning:   tune.expiringLead,
		ShutdownGrace:   5 * time.Second,
		RedisURL:        tune.redis,
	}, slog.New(logs.handler()))
	if err != nil {
		t.Fatal(err)
	}
	addr := tune.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	ts := &testServer{
		URL: "http://" + ln.Addr().String(), logs: logs,
		client: &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second},
	}
	ts.stop = sync.OnceFunc(func() {
		// Run drains: sockets close with 1001 server_shutdown.
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("server did not stop within 20 s")
		}
		srv.Close()
		ts.client.CloseIdleConnections()
	})
	t.Cleanup(ts.stop)
	ts.waitHealthy(t)
	return ts
}

func (s *testServer) waitHealthy(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := s.client.Get(s.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not healthy within 10 s: %v", err)
		}
		tick := time.NewTimer(20 * time.Millisecond)
		<-tick.C
	}
}

// connections returns the IDs of the user's live WebSocket connections, as
// the server counts them (GET /api/v1/connections).
func (s *testServer) connections(t *testing.T, user string) []string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.URL+"/api/v1/connections?user_id="+url.QueryEscape(user), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("listing connections: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Connections []struct {
			ID string `json:"connection_id"`
		} `json:"connections"`
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("listing connections: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("listing connections: %v", err)
	}
	ids := make([]string, 0, len(body.Connections))
	for _, c := range body.Connections {
		ids = append(ids, c.ID)
	}
	return ids
}

// admin calls the admin API with a JSON body ("" for none) and returns the status.
func (s *testServer) admin(t *testing.T, method, path, body string) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// refusedUpgrades returns how many WebSocket upgrades the server refused
// with result (its sessionbridge_connects_total counter, as /metrics shows).
func (s *testServer) refusedUpgrades(t *testing.T, result string) int {
	t.Helper()
	resp, err := s.client.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatalf("reading metrics: %v", err)
	}
	defer resp.Body.Close()
	want := `sessionbridge_connects_total{result="` + result + `"} `
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", sc.Text(), err)
			}
			return int(n)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading metrics: %v", err)
	}
	return 0
}

// recorder keeps every log record of a server as a line of text, so that
// tests can look for a log line or make sure a secret never appears in one.
type recorder struct {
	mu    sync.Mutex
	lines []string
}

// handler returns the slog.Handler that records into r.
func (r *recorder) handler() slog.Handler { return &recordHandler{rec: r} }

type recordHandler struct {
	rec    *recorder
	prefix string // attributes and groups added with WithAttrs, WithGroup
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordHandler) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Level.String() + " " + rec.Message + h.prefix)
	rec.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	h.rec.mu.Lock()
	h.rec.lines = append(h.rec.lines, b.String())
	h.rec.mu.Unlock()
	return nil
}

func (h *recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	p := h.prefix
	for _, a := range as {
		p += " " + a.String()
	}
	return &recordHandler{rec: h.rec, prefix: p}
}

func (h *recordHandler) WithGroup(name string) slog.Handler {
	return &recordHandler{rec: h.rec, prefix: h.prefix + " " + name + ":"}
}

// matching returns the recorded lines that contain every one of parts.
func (r *recorder) matching(parts ...string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
next:
	for _, l := range r.lines {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}
