package gateway

import (
	"runtime"
	"testing"
)

// serverConn returns the gateway's one socket of session id.
func serverConn(t *testing.T, e *env, id string) *Conn {
	t.Helper()
	var c *Conn
	waitFor(t, "the socket registered", func() bool {
		en := e.g.reg.session(id)
		if en == nil {
			return false
		}
		en.mu.Lock()
		en.forEachConnLocked(func(x *Conn) { c = x })
		en.mu.Unlock()
		return c != nil
	})
	return c
}

// writerIdle reports whether c has nothing queued or being written, and an
// empty send queue in the kernel: the state in which a frame is written at
// once.
func writerIdle(c *Conn) bool {
	c.mu.Lock()
	idle := !c.writing && !c.held && len(c.queue) == 0
	c.mu.Unlock()
	return idle && sendQueueEmpty(c.rc)
}

// An event's close of an idle socket is written by the event's own
// goroutine before closeSession returns: no writer goroutine has to be
// scheduled first.
func TestCloseNowWritesBeforeReturning(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	cl, _ := e.dial(bearer(tok), "")
	c := serverConn(t, e, s.ID)
	waitFor(t, "the writer idle and the welcome acknowledged", func() bool { return writerIdle(c) })

	// One P: a writer goroutine started by closeSession cannot have run
	// before it returns, so only a close written by the caller shows.
	procs := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(procs)
	if n := e.g.closeSession(s.ID, CloseReauthenticate, ReasonSessionRevoked, "revoked"); n != 1 {
		t.Fatalf("closed %d sockets, want 1", n)
	}
	c.mu.Lock()
	sent, writing := c.closeSent, c.writing
	c.mu.Unlock()
	runtime.GOMAXPROCS(procs)
	// Off Linux the send queue cannot be read, and the writer goroutine
	// writes the close frame as for any other close.
	if want := runtime.GOOS == "linux"; sent != want || writing {
		t.Fatalf("after closeSession: close frame sent %v, writer running %v; want sent %v, no writer", sent, writing, want)
	}
	cl.expectClose(CloseReauthenticate, ReasonSessionRevoked)
}

// A frame queued before the close reaches the client before the close
// frame, whichever goroutine writes the close.
func TestCloseNowAfterQueuedFrame(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	cl, _ := e.dial(bearer(tok), "")
	c := serverConn(t, e, s.ID)
	for i := range 20 {
		if err := c.enqueue([]byte(`{"type":"message","data":{"n":` + string(rune('0'+i%10)) + `}}`)); err != nil {
			t.Fatal(err)
		}
	}
	e.g.closeSession(s.ID, CloseReauthenticate, ReasonSessionRevoked, "revoked")
	for range 20 {
		if f := cl.read(); f.Type != "message" {
			t.Fatalf("frame %+v before the queued messages' end", f)
		}
	}
	cl.expectClose(CloseReauthenticate, ReasonSessionRevoked)
}

// An event's session.updated to an idle socket is written by the event's own
// goroutine before sendNow returns, and one sent behind queued frames keeps
// its place after them.
func TestSendNowWritesBeforeReturning(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	cl, _ := e.dial(bearer(tok), "")
	c := serverConn(t, e, s.ID)
	idle := func() bool { return writerIdle(c) }
	waitFor(t, "the writer idle and the welcome acknowledged", idle)

	// One P: a writer goroutine started by sendNow cannot have run before it
	// returns, so only a frame written by the caller leaves the queue empty.
	procs := runtime.GOMAXPROCS(1)
	err := c.sendNow([]byte(`{"type":"message","data":{"n":"now"}}`))
	c.mu.Lock()
	queued, writing := len(c.queue), c.writing
	c.mu.Unlock()
	runtime.GOMAXPROCS(procs)
	if err != nil {
		t.Fatal(err)
	}
	// Off Linux the send queue cannot be read, and the frame is enqueued.
	if wrote := queued == 0 && !writing; wrote != (runtime.GOOS == "linux") {
		t.Fatalf("after sendNow: %d queued, writer running %v", queued, writing)
	}
	if f := cl.read(); f.Type != "message" || string(f.Data) != `{"n":"now"}` {
		t.Fatalf("frame %+v, want the message sent now", f)
	}

	waitFor(t, "the writer idle again", idle)
	for i := range 20 {
		if err := c.enqueue([]byte(`{"type":"message","data":{"n":` + string(rune('0'+i%10)) + `}}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.sendNow([]byte(`{"type":"message","data":{"n":"last"}}`)); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if f := cl.read(); f.Type != "message" || string(f.Data) == `{"n":"last"}` {
			t.Fatalf("frame %d: %+v before the queued messages' end", i, f)
		}
	}
	if f := cl.read(); string(f.Data) != `{"n":"last"}` {
		t.Fatalf("frame %+v, want the one sent last", f)
	}
}
