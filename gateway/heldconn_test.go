package gateway

import (
	"bytes"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// recordingConn is a net.Conn that records what is written to it.
type recordingConn struct {
	net.Conn
	buf    bytes.Buffer
	writes int
	err    error
}

func (c *recordingConn) Write(b []byte) (int, error) {
	c.writes++
	if c.err != nil {
		return 0, c.err
	}
	return c.buf.Write(b)
}

// TestHeldConnSendsAnswerWithFirstFrame: the handshake answer is held back,
// leaves in front of the first frame, and every later write passes through;
// each Write reports the caller's own bytes.
func TestHeldConnSendsAnswerWithFirstFrame(t *testing.T) {
	rc := &recordingConn{}
	c := &heldConn{Conn: rc}
	answer := []byte("HTTP/1.1 101 Switching Protocols\r\n\r\n")
	if n, err := c.Write(answer); n != len(answer) || err != nil {
		t.Fatalf("Write(answer) = %d, %v; want %d, nil", n, err, len(answer))
	}
	if rc.writes != 0 {
		t.Fatalf("the answer was written at once (%d writes), want it held", rc.writes)
	}
	frame := []byte("\x81\x07welcome")
	if n, err := c.Write(frame); n != len(frame) || err != nil {
		t.Fatalf("Write(frame) = %d, %v; want %d, nil", n, err, len(frame))
	}
	later := []byte("\x89\x00")
	if n, err := c.Write(later); n != len(later) || err != nil {
		t.Fatalf("Write(later) = %d, %v; want %d, nil", n, err, len(later))
	}
	want := string(answer) + string(frame) + string(later)
	if got := rc.buf.String(); got != want {
		t.Fatalf("peer got %q, want %q", got, want)
	}
	if c.held != nil {
		t.Fatal("the answer is still referenced after it was sent")
	}
}

// TestHeldConnLargeFirstFrame: a first frame larger than the room left in
// the answer's buffer goes out behind the answer all the same, and the
// buffer is not written past its length.
func TestHeldConnLargeFirstFrame(t *testing.T) {
	for _, room := range []int{0, 10, 4096} {
		rc := &recordingConn{}
		c := &heldConn{Conn: rc}
		answer := make([]byte, 0, 40+room)
		answer = append(answer, "HTTP/1.1 101 Switching Protocols\r\n\r\n"...)
		frame := bytes.Repeat([]byte("x"), 100)
		if _, err := c.Write(answer); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Write(frame); n != len(frame) || err != nil {
			t.Fatalf("room %d: Write(frame) = %d, %v; want %d, nil", room, n, err, len(frame))
		}
		if got, want := rc.buf.String(), string(answer)+string(frame); got != want {
			t.Fatalf("room %d: peer got %q, want %q", room, got, want)
		}
	}
}

// TestHeldConnReportsFailedFirstFrame: when the write of the answer and the
// first frame fails, the frame's Write fails, so that the connection is
// dropped.
func TestHeldConnReportsFailedFirstFrame(t *testing.T) {
	broken := errors.New("broken pipe")
	c := &heldConn{Conn: &recordingConn{err: broken}}
	if _, err := c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Write([]byte("frame")); n != 0 || !errors.Is(err, broken) {
		t.Fatalf("Write(frame) = %d, %v; want 0, %v", n, err, broken)
	}
}

// TestHeldConnOnTCP: over a real socket the answer and the first frame
// arrive in order, and SyscallConn reaches the socket for the idle poller.
func TestHeldConnOnTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- conn
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer server.Close()
	c := &heldConn{Conn: server}
	if _, ok := net.Conn(c).(syscall.Conn); !ok {
		t.Fatal("heldConn does not implement syscall.Conn")
	}
	rc, err := c.SyscallConn()
	if err != nil || rc == nil {
		t.Fatalf("SyscallConn = %v, %v; want the socket", rc, err)
	}
	answer, frame := []byte("HTTP/1.1 101 Switching Protocols\r\n\r\n"), []byte("\x81\x07welcome")
	if _, err := c.Write(answer); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(frame); err != nil {
		t.Fatal(err)
	}
	if err := client.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(answer)+len(frame))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(answer)+string(frame) {
		t.Fatalf("peer got %q", got)
	}
}
