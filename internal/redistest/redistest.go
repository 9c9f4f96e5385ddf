// Package redistest starts private redis-server processes for tests.
//
// Every test that needs Redis starts its own server on a free loopback port
// with persistence off, so that tests never share state, never touch a Redis
// somebody else runs, and can stop, restart or disturb the server at will.
// Tests of durability turn persistence on with Start's extra arguments
// (RDBSnapshots, AOF), kill the server as a crash would and start it again
// from what it left on disk (RestartKeepingData, CopyDisk and
// RestartFromDisk). The redis-server binary must be on PATH; scripts/test
// installs it.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// startTimeout bounds how long Start and Restart wait for the server to answer
// PING.
const startTimeout = 20 * time.Second

// Server is a private redis-server process. Its methods are safe for
// concurrent use.
type Server struct {
	t     testing.TB
	bin   string
	dir   string
	port  int
	extra []string
	// sentinel, if set, is the sentinel.conf text to start a Sentinel with
	// instead of a server.
	sentinel string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	out  *lockedWriter // the server's output, for error messages
}

// Start starts a redis-server from PATH on a free 127.0.0.1 port, without
// persistence, and waits until it answers PING. The server is stopped when
// the test ends. extraArgs are passed on its command line, e.g.
// "--maxmemory", "10mb". A missing redis-server fails the test with an
// install hint.
func Start(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: redis-server not found on PATH (%v); install it, e.g. apt-get install -y redis-server, or run scripts/test which does", err)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), extra: extraArgs}
	t.Cleanup(s.Stop)
	// Another process may grab the free port between our probe and the
	// server's bind; retry with a fresh port a few times.
	var lastErr error
	for range 5 {
		s.port, err = freePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("redistest: %v", lastErr)
	return nil
}

// StartCluster starts a one-node Redis Cluster: a cluster-enabled server
// that owns all 16384 slots. It enforces what a real cluster does (a script
// or multi-key command must keep to one slot) and speaks the cluster
// protocol to clients, so tests can check that key layouts are cluster-ready.
func StartCluster(t testing.TB) *Server {
	t.Helper()
	s := Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	s.MustDo("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		v, err := s.Do("CLUSTER", "INFO")
		if info, ok := v.(string); err == nil && ok && strings.Contains(info, "cluster_state:ok") {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: cluster not ok within %v: %v, %v", startTimeout, v, err)
		}
		<-tick.C
	}
}

// StartSentinel starts a Redis Sentinel from PATH on a free 127.0.0.1 port
// that monitors master under the name masterName (quorum 1), waits until it
// reports the master's address, and stops it when the test ends.
func StartSentinel(t testing.TB, master *Server, masterName string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: redis-server not found on PATH (%v); install it, e.g. apt-get install -y redis-server, or run scripts/test which does", err)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), sentinel: fmt.Sprintf(
		"sentinel monitor %s 127.0.0.1 %d 1\nsentinel down-after-milliseconds %s 1000\n", masterName, master.port, masterName)}
	t.Cleanup(s.Stop)
	var lastErr error
	for range 5 {
		if s.port, err = freePort(); err != nil {
			t.Fatalf("redistest: %v", err)
		}
		if lastErr = s.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("redistest: sentinel: %v", lastErr)
	}
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		v, err := s.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", masterName)
		if a, ok := v.([]any); err == nil && ok && len(a) == 2 && a[1] == strconv.Itoa(master.port) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: sentinel does not report master %s (last answer %v, %v)", masterName, v, err)
		}
		<-tick.C
	}
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL returns a redis:// URL of the server's database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Stop kills the server with SIGKILL, as a crash would (nothing is saved on
// the way out), and waits for it to exit. It is a no-op on a stopped server.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

// Restart stops the server if it runs and starts a new one on the same port.
// The new server is empty: its data files are removed first, so nothing
// comes back whatever the persistence (a Sentinel restarts with the
// configuration it started with).
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.removeData(); err != nil {
		s.t.Fatalf("redistest: restart: %v", err)
	}
	if err := s.start(); err != nil {
		s.t.Fatalf("redistest: restart: %v", err)
	}
}

// RestartKeepingData kills the server (SIGKILL: no save on the way out) and
// starts it again on the same port from the same data directory, so that it
// loads whatever its persistence had put on disk, as after a crash. It
// returns once the server has loaded its data and answers PING.
func (s *Server) RestartKeepingData() {
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("redistest: restart keeping data: %v", err)
	}
}

// Disk is a copy of a server's data files (RDB snapshot and AOF directory)
// taken by CopyDisk.
type Disk struct {
	dir string
}

// CopyDisk copies the server's data files as they are on disk now, for
// RestartFromDisk. With the server running, the copy holds what Redis has
// written to its files so far: what a machine crash would leave behind if
// nothing later reached the disk. Take it right after a SAVE, or after a
// write whose AOF entry is in the file, to know what it contains.
func (s *Server) CopyDisk() Disk {
	s.t.Helper()
	d := Disk{dir: s.t.TempDir()}
	if err := copyData(s.dir, d.dir); err != nil {
		s.t.Fatalf("redistest: copy disk: %v", err)
	}
	return d
}

// RestartFromDisk kills the server (SIGKILL), replaces its data files by the
// copy d and starts it again on the same port, as a restart after a crash
// that lost every write made after the copy.
func (s *Server) RestartFromDisk(d Disk) {
	s.t.Helper()
	s.Stop()
	if err := s.removeData(); err != nil {
		s.t.Fatalf("redistest: restart from disk: %v", err)
	}
	if err := copyData(d.dir, s.dir); err != nil {
		s.t.Fatalf("redistest: restart from disk: %v", err)
	}
	if err := s.start(); err != nil {
		s.t.Fatalf("redistest: restart from disk: %v", err)
	}
}

// Data files of a server in its directory.
const (
	rdbFile = "dump.rdb"
	aofDir  = "appendonlydir"
)

// removeData deletes the server's data files.
func (s *Server) removeData() error {
	if err := os.Remove(filepath.Join(s.dir, rdbFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.RemoveAll(filepath.Join(s.dir, aofDir))
}

// copyData copies the RDB file and the AOF directory of src, where they
// exist, into dst.
func copyData(src, dst string) error {
	if err := copyFile(filepath.Join(src, rdbFile), filepath.Join(dst, rdbFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	entries, err := os.ReadDir(filepath.Join(src, aofDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dst, aofDir), 0o700); err != nil {
		return err
	}
	for _, e := range entries {
		if err := copyFile(filepath.Join(src, aofDir, e.Name()), filepath.Join(dst, aofDir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o600)
}

// Dir returns the server's data directory (its --dir).
func (s *Server) Dir() string { return s.dir }

// RDBSnapshots returns Start's extra arguments for RDB persistence: the
// server writes a snapshot on SAVE and BGSAVE (its automatic schedule never
// fires within a test, so the test decides when the snapshot is taken) and
// loads it at start.
func RDBSnapshots() []string {
	return []string{"--save", "3600 1000000"}
}

// AOF returns Start's extra arguments for an append-only file with the given
// appendfsync policy ("always", "everysec" or "no"), loaded at start.
func AOF(fsync string) []string {
	return []string{"--appendonly", "yes", "--appendfsync", fsync}
}

// Do sends one command on a fresh connection and returns its reply: a
// string for simple and bulk strings, int64 for integers, []any for arrays,
// nil for a null reply. A Redis error reply is returned as an error. It is
// meant for administration in tests: CLIENT KILL, CONFIG SET, DEBUG SLEEP.
func (s *Server) Do(args ...string) (any, error) {
	c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("redistest: dial %s: %w", s.Addr(), err)
	}
	defer c.Close()
	// DEBUG SLEEP and the like may take a while; bound it all the same.
	if err := c.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		return nil, err
	}
	if _, err := c.Write(encode(args)); err != nil {
		return nil, fmt.Errorf("redistest: write: %w", err)
	}
	return readReply(bufio.NewReader(c))
}

// MustDo is Do that fails the test on an error.
func (s *Server) MustDo(args ...string) any {
	s.t.Helper()
	v, err := s.Do(args...)
	if err != nil {
		s.t.Fatalf("redistest: %s: %v", strings.Join(args, " "), err)
	}
	return v
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("already running")
	}
	var args []string
	if s.sentinel != "" {
		conf := filepath.Join(s.dir, "sentinel.conf")
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nloglevel warning\n%s", s.port, s.dir, s.sentinel)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return fmt.Errorf("write sentinel.conf: %w", err)
		}
		args = []string{conf, "--sentinel"}
	} else {
		args = []string{
			"--port", strconv.Itoa(s.port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--dir", s.dir,
			"--daemonize", "no",
			"--enable-debug-command", "local",
			"--loglevel", "warning",
		}
	}
	args = append(args, s.extra...)
	cmd := exec.Command(s.bin, args...)
	out := &lockedWriter{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done, s.out = cmd, done, out

	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if v, err := s.Do("PING"); err == nil && v == "PONG" {
			return nil
		}
		select {
		case <-done:
			s.cmd = nil
			return fmt.Errorf("redis-server on port %d exited at start: %s", s.port, strings.TrimSpace(out.String()))
		case <-deadline.C:
			s.stopLocked()
			return fmt.Errorf("redis-server on port %d did not answer PING within %v", s.port, startTimeout)
		case <-tick.C:
		}
	}
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func encode(args []string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.Bytes()
}

// readReply reads one RESP2 reply.
func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("redistest: read: %w", err)
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("redistest: empty reply line")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return nil, fmt.Errorf("redistest: redis: %s", line[1:])
	case ':':
		return strconv.ParseInt(line[1:], 10, 64)
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return nil, fmt.Errorf("redistest: bad bulk length %q", line)
		}
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, fmt.Errorf("redistest: read: %w", err)
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return nil, fmt.Errorf("redistest: bad array length %q", line)
		}
		if n < 0 {
			return nil, nil
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readReply(r); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("redistest: unexpected reply %q", line)
}
