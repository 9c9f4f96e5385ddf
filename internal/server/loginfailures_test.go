package server

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

// TestLoginFailuresSharedAcrossNodes: two nodes on one Redis keep one
// failure count, exactly, under any concurrency: 40 bad sign-ins at once for
// one user from one address, spread over both nodes, get the documented 10
// password checks (401) and 30 refusals (429), not 10 per node.
func TestLoginFailuresSharedAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	// Enough password checks per node that none waits its turn out.
	cfg := Config{RedisURL: srv.URL(), RedisPrefix: "lf-shared:", LoginConcurrency: 10}
	nodes := []*running{start(t, cfg), start(t, cfg)}
	client := &http.Client{Timeout: 30 * time.Second}
	var (
		mu     sync.Mutex
		status = map[int]int{}
		wg     sync.WaitGroup
	)
	for i := range 40 {
		node := nodes[i%2]
		wg.Go(func() {
			resp, err := client.Post(node.url+"/auth/login", "application/json",
				strings.NewReader(`{"username":"demo","password":"wrong-password"}`))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			status[resp.StatusCode]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if status[http.StatusUnauthorized] != 10 || status[http.StatusTooManyRequests] != 30 || len(status) != 2 {
		t.Fatalf("40 concurrent bad sign-ins over two nodes: %v; want 10 × 401 and 30 × 429", status)
	}
	// The right password waits too, on either node.
	for _, n := range nodes {
		if resp, body := n.doBare("POST", "/auth/login", `{"username":"demo","password":"`+demoPassword+`"}`, nil); resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("right password after the limit: %d %s", resp.StatusCode, body)
		}
	}
}

// TestLoginFailsClosedWithoutRedis: a sign-in whose attempt cannot be
// counted in Redis is refused 503, not checked without a limit.
func TestLoginFailsClosedWithoutRedis(t *testing.T) {
	srv := redistest.Start(t)
	r := start(t, Config{RedisURL: srv.URL(), RedisPrefix: "lf-away:"})
	srv.Stop()
	resp, body := r.doBare("POST", "/auth/login", `{"username":"demo","password":"`+demoPassword+`"}`, nil)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"unavailable"`) || !strings.Contains(body, "sign-in") {
		t.Fatalf("sign-in with Redis away: %d %s; want 503 unavailable", resp.StatusCode, body)
	}
}
