//go:build linux

package gateway

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	sb "github.com/sessionbridge/sessionbridge"
)

// Idle sockets hold no goroutine: their read loops wait in the idle poller.
// A frame still wakes its socket, which answers and parks again.
func TestIdleSocketsHoldNoGoroutine(t *testing.T) {
	e := newEnv(t, nil)
	_, tok := e.session("alice")
	first, _ := e.dial(bearer(tok), "")
	first.send(TypePing, "warm", nil)
	first.readType(TypePong)
	parked := e.g.parkedSockets
	const n = 50
	clients := make([]*client, n)
	for i := range clients {
		clients[i], _ = e.dial(bearer(tok), "")
	}
	waitFor(t, "every socket parked", func() bool { return parked() == n+1 })
	before := runtime.NumGoroutine()
	for i, c := range clients {
		c.send(TypePing, string(rune('a'+i%26)), nil)
		c.readType(TypePong)
	}
	waitFor(t, "every socket parked again", func() bool { return parked() == n+1 })
	// Each woken read loop ends once its socket parks again: the count of
	// goroutines does not grow with the sockets that took a frame.
	if after := runtime.NumGoroutine(); after > before+5 {
		t.Fatalf("%d goroutines after the frames, %d before: woken read loops did not end", after, before)
	}
}

// A new socket is parked by the upgrade's goroutine at once: it does not
// wait idleLinger in a goroutine of its own first, as a socket that just
// served a data frame does.
func TestNewSocketParksAtOnce(t *testing.T) {
	e := newEnv(t, nil)
	_, tok := e.session("alice")
	_, w := e.dial(bearer(tok), "")
	c := e.g.reg.conn(w.ConnectionID)
	deadline := time.Now().Add(idleLinger / 2)
	for !c.parked.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("the new socket not parked within %v", idleLinger/2)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A parked socket whose peer never answers the close frame is dropped when
// the close handshake's grace ends, though no goroutine waits on its read
// deadline.
func TestParkedSocketCloseGrace(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	_, w := e.dial(bearer(tok), "") // its client never reads
	c := e.g.reg.conn(w.ConnectionID)
	waitFor(t, "the socket parked", func() bool { return c.parked.Load() })
	if _, err := e.mgr.Delete(context.Background(), s.ID, sb.ReasonRevoked, sb.Change{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "the silent socket dropped", func() bool { return e.g.Len() == 0 })
	if d := time.Since(start); d < closeGrace-200*time.Millisecond {
		t.Fatalf("dropped after %v, before the close grace of %v", d, closeGrace)
	}
}

// Sockets whose clients answer the server's pings park again after each
// pong: a keepalive round wakes every socket for a moment, and none keeps a
// goroutine afterwards.
func TestPongsLeaveSocketsParked(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PingInterval = 100 * time.Millisecond; c.PongTimeout = 10 * time.Second })
	_, tok := e.session("alice")
	const n = 20
	var pings [n]atomic.Int32
	for i := range n {
		c, _ := e.dial(bearer(tok), "")
		c.ws.SetPingHandler(func(data string) error {
			pings[i].Add(1)
			return c.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		})
		// The client's reader answers pings; it ends when the socket closes.
		go func() {
			for {
				if _, _, err := c.ws.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}
	parked := e.g.parkedSockets
	waitFor(t, "every socket parked", func() bool { return parked() == n })
	base := runtime.NumGoroutine()
	answered := func(rounds int32) bool {
		for i := range pings {
			if pings[i].Load() < rounds {
				return false
			}
		}
		return true
	}
	for rounds := int32(1); rounds <= 3; rounds++ {
		waitFor(t, fmt.Sprintf("ping round %d answered", rounds), func() bool { return answered(rounds) })
		waitFor(t, fmt.Sprintf("every socket parked after round %d", rounds), func() bool {
			return parked() == n && runtime.NumGoroutine() <= base+2
		})
	}
}

// A ping round that takes longer than the ping's write deadline drops only
// the sockets whose own ping could not be written in time: here two peers
// that stopped reading with their sockets' buffers full make a round last
// two write deadlines, and every other socket, whenever its turn comes,
// stays connected.
func TestSlowPingRoundDropsOnlySlowSockets(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.PingInterval = 100 * time.Millisecond
		c.PongTimeout = time.Minute
		c.WriteTimeout = 300 * time.Millisecond
	})
	_, tok := e.session("alice")
	const good = 20
	clients := make([]*client, good)
	for i := range clients {
		clients[i], _ = e.dial(bearer(tok), "")
	}
	var slow []string
	for range 2 {
		// A peer that reads nothing, with the server's side of its socket
		// filled: a ping to it waits for the whole write deadline.
		c, w := e.dial(bearer(tok), "")
		if err := c.ws.NetConn().(*net.TCPConn).SetReadBuffer(1); err != nil {
			t.Fatal(err)
		}
		nc := e.g.reg.conn(w.ConnectionID).ws.NetConn().(*heldConn).Conn.(*net.TCPConn)
		if err := nc.SetWriteBuffer(1); err != nil {
			t.Fatal(err)
		}
		_ = nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := nc.Write(make([]byte, 1<<20)); err == nil {
			t.Fatal("1 MiB fit into a socket nobody reads")
		}
		slow = append(slow, w.ConnectionID)
	}
	waitFor(t, "the slow sockets dropped", func() bool {
		return e.g.reg.conn(slow[0]) == nil && e.g.reg.conn(slow[1]) == nil
	})
	for i, c := range clients {
		c.send(TypePing, fmt.Sprint(i), nil)
		if f := c.readType(TypePong); f.ID != fmt.Sprint(i) {
			t.Fatalf("pong %q, want %d", f.ID, i)
		}
	}
	if n := e.g.Len(); n != good {
		t.Fatalf("%d sockets left, want the %d that read", n, good)
	}
}
