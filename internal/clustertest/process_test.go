package clustertest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/gateway"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

const adminToken = "test-admin-token-0123456789abcdef"

// httpc keeps no idle connections, so that no transport goroutine outlives
// a test.
var httpc = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// buildServer compiles cmd/sessionbridge into a temporary directory.
func buildServer(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go toolchain not on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "sessionbridge")
	cmd := exec.Command(gobin, "build", "-o", bin, "github.com/sessionbridge/sessionbridge/cmd/sessionbridge")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/sessionbridge: %v\n%s", err, out)
	}
	return bin
}

// process is a running `sessionbridge serve`.
type process struct {
	url string
	cmd *exec.Cmd
	log *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var listening = regexp.MustCompile(`listening on (http://\S+)`)

// serve starts `sessionbridge serve` on a free loopback port against
// redisURL, waits until /readyz answers 200 and kills it when the test ends.
func serve(t *testing.T, bin, redisURL, nodeID string) *process {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(bin, "serve",
		"--addr", "127.0.0.1:0", "--redis-url", redisURL, "--node-id", nodeID,
		"--admin-token", adminToken, "--users", filepath.Join(dir, "users.json"),
		"--sweep-interval", "1h", "--log-level", "warn")
	cmd.Dir = dir
	// The environment must not configure the server behind the flags' back.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SESSIONBRIDGE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, log: &syncBuffer{}}
	cmd.Stdout = p.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", nodeID, err)
	}
	urls := make(chan string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(p.log, line)
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(p.log, stderr)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-copied
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", nodeID, p.log.String())
		}
	})
	select {
	case p.url = <-urls:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not say where it listens; output:\n%s", nodeID, p.log.String())
	}
	eventually(t, 30*time.Second, nodeID+" /readyz", func() bool {
		resp, err := httpc.Get(p.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// admin sends an admin API request and decodes the JSON answer into out.
func (p *process) admin(t *testing.T, method, path, body string, wantStatus int, out any) {
	t.Helper()
	req, err := http.NewRequest(method, p.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("%s %s = %d %s; want %d", method, path, resp.StatusCode, b, wantStatus)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decoding %s: %v", method, path, b, err)
		}
	}
}

// TestTwoProcessesShareSessions runs two real servers on one private Redis:
// a session created through A's admin API opens a socket on B, and revoking
// it on A closes that socket with 4401 session_revoked.
func TestTwoProcessesShareSessions(t *testing.T) {
	bin := buildServer(t)
	srv := redistest.Start(t)
	a := serve(t, bin, srv.URL(), "proc-a")
	b := serve(t, bin, srv.URL(), "proc-b")

	var created struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	a.admin(t, "POST", "/api/v1/sessions", `{"user_id":"zoe","data":{"plan":"pro"}}`, http.StatusCreated, &created)
	if created.ID == "" || created.Token == "" {
		t.Fatalf("create answered %+v", created)
	}
	c := dialURL(t, b.url, created.Token)

	// B reads the session A wrote.
	var got struct {
		Data map[string]any `json:"data"`
	}
	b.admin(t, "GET", "/api/v1/sessions/"+created.ID, "", http.StatusOK, &got)
	if got.Data["plan"] != "pro" {
		t.Fatalf("session on B = %+v", got)
	}

	// A change over A's HTTP API reaches the socket on B.
	a.admin(t, "PATCH", "/api/v1/sessions/"+created.ID, `{"data":{"plan":"team"}}`, http.StatusOK, nil)
	if f := c.expect(gateway.TypeSessionUpdated, eventWait); !strings.Contains(string(f.Data), `"plan":"team"`) {
		t.Fatalf("session.updated on B = %s", f.Data)
	}
	// So does a message published through A.
	a.admin(t, "POST", "/api/v1/publish", `{"user_id":"zoe","data":{"hello":"from A"}}`, http.StatusAccepted, nil)
	if f := c.expect(gateway.TypeMessage, eventWait); !strings.Contains(string(f.Data), `"hello":"from A"`) {
		t.Fatalf("message on B = %s", f.Data)
	}

	// A lists the connection held by B: presence crosses processes within
	// its interval (5s).
	eventually(t, 30*time.Second, "A to see B's connection", func() bool {
		var list struct {
			Connections []struct {
				SessionID string `json:"session_id"`
				NodeID    string `json:"node_id"`
			} `json:"connections"`
		}
		a.admin(t, "GET", "/api/v1/connections?user_id=zoe", "", http.StatusOK, &list)
		return len(list.Connections) == 1 && list.Connections[0].SessionID == created.ID && list.Connections[0].NodeID == "proc-b"
	})

	a.admin(t, "DELETE", "/api/v1/sessions/"+created.ID, "", http.StatusNoContent, nil)
	c.expectClose(gateway.CloseReauthenticate, gateway.ReasonSessionRevoked, eventWait)
	b.admin(t, "GET", "/api/v1/sessions/"+created.ID, "", http.StatusNotFound, nil)
}

// TestProcessesRideOutRedisOutage stops Redis under two running servers:
// readiness fails and new upgrades get 503 while established sockets stay;
// when Redis returns empty, readiness recovers by itself and the socket of
// the vanished session closes with 4401 session_revoked.
func TestProcessesRideOutRedisOutage(t *testing.T) {
	bin := buildServer(t)
	srv := redistest.Start(t)
	a := serve(t, bin, srv.URL(), "proc-a")
	b := serve(t, bin, srv.URL(), "proc-b")
	var created struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	a.admin(t, "POST", "/api/v1/sessions", `{"user_id":"yuri"}`, http.StatusCreated, &created)
	c := dialURL(t, b.url, created.Token)

	srv.Stop()
	readyz := func(p *process) int {
		resp, err := httpc.Get(p.url + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	eventually(t, 30*time.Second, "/readyz to fail on both", func() bool {
		return readyz(a) == http.StatusServiceUnavailable && readyz(b) == http.StatusServiceUnavailable
	})
	if _, resp, err := tryDial(b.url, created.Token); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("upgrade with Redis down: %v, %v; want 503", err, resp)
	}
	if !c.isOpen(eventWait) {
		t.Fatal("an established socket closed while Redis was down")
	}

	srv.Restart()
	c.expectClose(gateway.CloseReauthenticate, gateway.ReasonSessionRevoked, 30*time.Second)
	eventually(t, 30*time.Second, "/readyz to recover on both", func() bool {
		return readyz(a) == http.StatusOK && readyz(b) == http.StatusOK
	})
	a.admin(t, "POST", "/api/v1/sessions", `{"user_id":"yuri"}`, http.StatusCreated, &created)
	dialURL(t, b.url, created.Token)
}
