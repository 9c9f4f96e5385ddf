package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/sessionbridge/sessionbridge/users"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer safe for the server's concurrent writes.
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

// cli runs the program to completion.
func cli(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUserCommands(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.json")
	code, out, errOut := cli(t, "correct horse battery\n", "user", "add", "alice", "--password-stdin", "--users", path)
	if code != 0 || !strings.Contains(out, "added user alice") {
		t.Fatalf("add: %d %q %q", code, out, errOut)
	}
	if code, _, _ := cli(t, "bcrypt-password\n", "user", "add", "--users", path, "--bcrypt", "--password-stdin", "bob"); code != 0 {
		t.Fatalf("add with flags first: %d", code)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("users file mode %v, %v", fi.Mode(), err)
	}
	f, err := users.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Verify("alice", "correct horse battery"); !ok {
		t.Error("alice's password does not verify")
	}
	if _, ok := f.Verify("bob", "bcrypt-password"); !ok {
		t.Error("bob's password does not verify")
	}
	if b, _ := os.ReadFile(path); bytes.Contains(b, []byte("correct horse")) || !bytes.Contains(b, []byte("$2")) || !bytes.Contains(b, []byte("$argon2id$")) {
		t.Errorf("users file content %s", b)
	}

	code, out, _ = cli(t, "", "user", "list", "--users", path)
	if code != 0 || !strings.Contains(out, "alice") || !strings.Contains(out, "bob") || strings.Contains(out, "$") {
		t.Errorf("list: %d %q", code, out)
	}

	for _, c := range []struct {
		stdin string
		args  []string
		code  int
	}{
		{"another-password\n", []string{"user", "add", "alice", "--password-stdin", "--users", path}, 1}, // duplicate
		{"short\n", []string{"user", "add", "carol", "--password-stdin", "--users", path}, 1},
		{"", []string{"user", "add", "carol", "--password-stdin", "--users", path}, 1},
		{"password123\n", []string{"user", "add", "carol", "--users", path}, 1}, // stdin is no terminal
		{"password123\n", []string{"user", "add", "bad name!", "--password-stdin", "--users", path}, 1},
		{"", []string{"user", "add", "--users", path}, 2},
		{"", []string{"user", "remove", "nobody", "--users", path}, 1},
		{"", []string{"user", "rename", "x"}, 2},
		{"", []string{"user"}, 2},
	} {
		if code, _, errOut := cli(t, c.stdin, c.args...); code != c.code {
			t.Errorf("%v: exit %d, want %d (%s)", c.args, code, c.code, errOut)
		}
	}

	if code, out, _ := cli(t, "", "user", "remove", "alice", "--users", path); code != 0 || !strings.Contains(out, "removed") {
		t.Fatalf("remove: %d %q", code, out)
	}
	_, out, _ = cli(t, "", "user", "list", "--users", path)
	if strings.Contains(out, "alice") || !strings.Contains(out, "bob") {
		t.Errorf("list after remove: %q", out)
	}
}

func TestVersionAndUsage(t *testing.T) {
	code, out, _ := cli(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "sessionbridge ") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("version: %d %q", code, out)
	}
	if code, _, errOut := cli(t, ""); code != 2 || !strings.Contains(errOut, "Usage") {
		t.Errorf("no args: %d %q", code, errOut)
	}
	if code, _, _ := cli(t, "", "frobnicate"); code != 2 {
		t.Errorf("unknown command: %d", code)
	}
	if code, _, _ := cli(t, "", "serve", "--no-such-flag"); code != 2 {
		t.Errorf("unknown flag: %d", code)
	}
	if code, _, _ := cli(t, "", "serve", "--log-format", "xml"); code != 2 {
		t.Errorf("bad log format: %d", code)
	}
	if code, _, _ := cli(t, "", "serve", "-h"); code != 0 {
		t.Errorf("help: %d", code)
	}
}

func TestFlagWinsOverEnvironment(t *testing.T) {
	t.Setenv("SESSIONBRIDGE_ADDR", "127.0.0.1:9999")
	t.Setenv("SESSIONBRIDGE_ADMIN_TOKEN", "from-env")
	t.Setenv("SESSIONBRIDGE_JWT_PUBLIC_KEY", "a.pem, b.pem")
	t.Setenv("SESSIONBRIDGE_IDLE_TIMEOUT", "5m")
	t.Setenv("SESSIONBRIDGE_DEV", "true")
	t.Setenv("SESSIONBRIDGE_MAX_CONNS_PER_USER", "7")
	fs, f := newServeFlags(io.Discard)
	if _, err := parse(fs, []string{"--addr", "127.0.0.1:1234", "--max-conns-per-session", "3"}); err != nil {
		t.Fatal(err)
	}
	if f.addr != "127.0.0.1:1234" || f.cfg.AdminToken != "from-env" || f.cfg.IdleTimeout != 5*time.Minute || !f.cfg.InsecureCookies ||
		f.cfg.MaxConnsPerSession != 3 || f.cfg.MaxConnsPerUser != 7 {
		t.Errorf("parsed %+v", f)
	}
	if strings.Join(f.jwtKeys, "|") != "a.pem|b.pem" {
		t.Errorf("list from env %q", f.jwtKeys)
	}

	// An alias on the command line wins over the other name's variable.
	t.Setenv("SESSIONBRIDGE_INSECURE_COOKIES", "false")
	fs, f = newServeFlags(io.Discard)
	if _, err := parse(fs, []string{"--dev"}); err != nil || !f.cfg.InsecureCookies {
		t.Errorf("--dev with SESSIONBRIDGE_INSECURE_COOKIES=false: %v %v", f.cfg.InsecureCookies, err)
	}

	t.Setenv("SESSIONBRIDGE_IDLE_TIMEOUT", "soon")
	t.Setenv("SESSIONBRIDGE_ADMIN_TOKEN", "")
	fs, _ = newServeFlags(io.Discard)
	_, err := parse(fs, nil)
	if err == nil || !strings.Contains(err.Error(), "SESSIONBRIDGE_IDLE_TIMEOUT") || strings.Contains(err.Error(), "soon") {
		t.Errorf("bad env value: %v", err)
	}
	if errors.Is(err, flag.ErrHelp) {
		t.Error("bad env value reported as help")
	}
}

var listening = regexp.MustCompile(`listening on (http://\S+)`)

// waitForMatch waits until re matches what out holds and returns the first
// submatch; it fails the test if serve exits first or nothing matches
// within 15 s.
func waitForMatch(t *testing.T, re *regexp.Regexp, out *syncBuffer, exited <-chan int) string {
	t.Helper()
	deadline := time.After(15 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
		select {
		case code := <-exited:
			t.Fatalf("serve exited with %d before %q showed: %s", code, re, out.String())
		case <-deadline:
			t.Fatalf("no %q within 15s: %s", re, out.String())
		case <-tick.C:
		}
	}
}

func TestServe(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users.json")
	if code, _, errOut := cli(t, "alice-password\n", "user", "add", "alice", "--password-stdin", "--users", path); code != 0 {
		t.Fatalf("user add: %s", errOut)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--users", path, "--log-level", "debug"}, strings.NewReader(""), &stdout, &stderr)
	}()

	base := waitForMatch(t, listening, &stderr, exited)
	deadline := time.After(15 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-deadline:
			t.Fatalf("not healthy: %v", err)
		case <-tick.C:
		}
	}
	if !strings.Contains(stderr.String(), "no admin token") || !strings.Contains(stderr.String(), "sign in at") {
		t.Errorf("start-up hints missing: %s", stderr.String())
	}

	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Post(base+"/auth/login", "application/json", strings.NewReader(`{"username":"alice","password":"alice-password"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "sb_session" {
			cookie = c
		}
	}
	if resp.StatusCode != http.StatusOK || cookie == nil || !cookie.Secure {
		t.Fatalf("login: %d, cookie %v", resp.StatusCode, cookie)
	}

	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws",
		http.Header{"Cookie": {"sb_session=" + cookie.Value}, "Origin": {base}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var welcome struct {
		Type string `json:"type"`
		Data struct {
			UserID string `json:"user_id"`
		} `json:"data"`
	}
	if err := ws.ReadJSON(&welcome); err != nil || welcome.Type != "welcome" || welcome.Data.UserID != "alice" {
		t.Fatalf("welcome: %+v %v", welcome, err)
	}

	cancel()
	_, _, err = ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway || ce.Text != "server_shutdown" {
		t.Errorf("socket end on shutdown: %v", err)
	}
	select {
	case code := <-exited:
		if code != 0 {
			t.Errorf("exit code %d after a clean drain: %s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
	if strings.Contains(stderr.String(), cookie.Value) || strings.Contains(stderr.String(), "alice-password") {
		t.Error("a secret reached the log")
	}
	// Log records wait in a buffer (--log-flush-interval): a clean stop
	// writes out every one, the last records of the shutdown included.
	for _, want := range []string{"event=ws_connected", "event=ws_disconnected", "msg=drained"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("after a clean stop the log lacks %q: %s", want, stderr.String())
		}
	}
}

func TestServeRefusesNegativeLogFlushInterval(t *testing.T) {
	if code, _, errOut := cli(t, "", "serve", "--log-flush-interval", "-1s"); code != 2 || !strings.Contains(errOut, "--log-flush-interval") {
		t.Fatalf("serve --log-flush-interval -1s: exit %d, %q; want 2 and a message naming the flag", code, errOut)
	}
}

// TestServeDemo: --demo adds a throw-away user, and so does a plain serve
// that has no users, no admin token and the memory backend, so that
// `sessionbridge serve` alone can be signed in to.
func TestServeDemo(t *testing.T) {
	for name, extra := range map[string][]string{"explicit": {"--demo"}, "no flags": nil} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users.json")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stdout, stderr syncBuffer
			exited := make(chan int, 1)
			args := append([]string{"serve", "--addr", "127.0.0.1:0", "--users", path}, extra...)
			go func() {
				exited <- run(ctx, args, strings.NewReader(""), &stdout, &stderr)
			}()
			demo := regexp.MustCompile(`password: (\S+)`)
			var pw, base string
			deadline := time.After(15 * time.Second)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for pw == "" || base == "" {
				if m := demo.FindStringSubmatch(stdout.String()); m != nil {
					pw = m[1]
				}
				if m := listening.FindStringSubmatch(stderr.String()); m != nil {
					base = m[1]
				}
				select {
				case code := <-exited:
					t.Fatalf("exited %d: %s", code, stderr.String())
				case <-deadline:
					t.Fatalf("no demo password: %q %q", stdout.String(), stderr.String())
				case <-tick.C:
				}
			}
			client := &http.Client{Timeout: 10 * time.Second}
			defer client.CloseIdleConnections()
			resp, err := client.Post(base+"/auth/login", "application/json", strings.NewReader(`{"username":"demo","password":"`+pw+`"}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("demo login: %d", resp.StatusCode)
			}
			if strings.Contains(stderr.String(), pw) {
				t.Error("demo password in the log")
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Error("the demo user was written to the users file")
			}
			cancel()
			if code := <-exited; code != 0 {
				t.Errorf("exit %d", code)
			}
		})
	}
}

// TestServeNoUsersHint: without users and without a demo user (refused
// explicitly, or not added because the admin API or JWT keys mark a real
// deployment),
// serve says how to add a user.
func TestServeNoUsersHint(t *testing.T) {
	for name, extra := range map[string][]string{
		"demo refused": {"--demo=false"},
		"admin token":  {"--admin-token", "an-admin-token-long-enough"},
		"jwt secret":   {"--jwt-secret", "a-jwt-secret-of-at-least-32-bytes-long"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users.json")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stdout, stderr syncBuffer
			exited := make(chan int, 1)
			args := append([]string{"serve", "--addr", "127.0.0.1:0", "--users", path}, extra...)
			go func() {
				exited <- run(ctx, args, strings.NewReader(""), &stdout, &stderr)
			}()
			deadline := time.After(15 * time.Second)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for !strings.Contains(stderr.String(), "sessionbridge user add <name> --users "+path) {
				select {
				case code := <-exited:
					t.Fatalf("exited %d: %s", code, stderr.String())
				case <-deadline:
					t.Fatalf("no user-add hint: %s", stderr.String())
				case <-tick.C:
				}
			}
			cancel()
			if code := <-exited; code != 0 {
				t.Errorf("exit %d", code)
			}
			if strings.Contains(stdout.String(), "password:") {
				t.Errorf("a demo user was added: %q", stdout.String())
			}
		})
	}
}

func TestServeStartFailures(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.json")
	if code, _, errOut := cli(t, "", "serve", "--addr", "256.0.0.1:0", "--users", path); code != 1 {
		t.Errorf("bad address: exit %d %s", code, errOut)
	}
	if code, _, errOut := cli(t, "", "serve", "--addr", "127.0.0.1:0", "--users", path, "--trusted-proxies", "nope"); code != 1 {
		t.Errorf("bad proxies: exit %d %s", code, errOut)
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := cli(t, "", "serve", "--addr", "127.0.0.1:0", "--users", path); code != 1 {
		t.Errorf("malformed users file: exit %d %s", code, errOut)
	}
}

// TestServeDebugAddr: --debug-addr serves the runtime profiles on a
// loopback address, and refuses any other address before starting.
func TestServeDebugAddr(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.json")
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:6060", ":6060", "example.com:6060", "nonsense"} {
		if code, _, errOut := cli(t, "", "serve", "--addr", "127.0.0.1:0", "--users", path, "--debug-addr", addr); code != exitUsage || !strings.Contains(errOut, "--debug-addr") {
			t.Errorf("--debug-addr %s: exit %d %s", addr, code, errOut)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--users", path, "--debug-addr", "127.0.0.1:0"}, strings.NewReader(""), &stdout, &stderr)
	}()
	url := waitForMatch(t, regexp.MustCompile(`runtime profiles on (http://\S+/debug/pprof/)`), &stderr, exited)
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get(url + "goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
		t.Fatalf("goroutine profile: %d %.200s", resp.StatusCode, body)
	}
	cancel()
	select {
	case code := <-exited:
		if code != 0 {
			t.Errorf("exit code %d: %s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
	if _, err := client.Get(url); err == nil {
		t.Error("the debug listener still answers after the server stopped")
	}
}

func TestBaseURL(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:8080": "http://127.0.0.1:8080",
		"[::]:8080":      "http://localhost:8080",
		"0.0.0.0:80":     "http://localhost:80",
		"[::1]:9000":     "http://[::1]:9000",
	} {
		if got := baseURL(fakeAddr(addr), false); got != want {
			t.Errorf("baseURL(%s) = %s, want %s", addr, got, want)
		}
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// TestEveryFlagDocumented keeps docs/configuration.md in step with the flags.
func TestEveryFlagDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	fs, _ := newServeFlags(io.Discard)
	fs.VisitAll(func(f *flag.Flag) {
		if !bytes.Contains(doc, []byte("`--"+f.Name+"`")) || !bytes.Contains(doc, []byte("`"+envName(f.Name)+"`")) {
			t.Errorf("--%s or %s missing from docs/configuration.md", f.Name, envName(f.Name))
		}
	})
}
