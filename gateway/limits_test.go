package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// A client that sends its requests back to back and reads all the time gets
// every answer: its answers slow its own reading down instead of counting as
// a slow consumer.
func TestPipelinedRequestsAreNotSlowConsumers(t *testing.T) {
	for _, queue := range []int{0, 2} {
		t.Run(fmt.Sprintf("queue=%d", queue), func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.SendQueue = queue })
			_, tok := e.session("alice")
			c, _ := e.dial(bearer(tok), "")
			const n = 300
			sent := make(chan error, 1)
			go func() {
				for i := range n {
					typ := TypePing
					if i%2 == 1 {
						typ = TypeSessionGet
					}
					b := fmt.Appendf(nil, `{"type":%q,"id":"r%d"}`, typ, i)
					if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
						sent <- err
						return
					}
				}
				sent <- nil
			}()
			for i := range n {
				f, err := c.tryRead()
				if err != nil {
					t.Fatalf("reply %d: %v", i, err)
				}
				want := TypePong
				if i%2 == 1 {
					want = TypeSession
				}
				if f.Type != want || f.ID != fmt.Sprintf("r%d", i) {
					t.Fatalf("reply %d: %s %q, want %s r%d", i, f.Type, f.ID, want, i)
				}
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			if e.g.Len() != 1 {
				t.Fatal("connection dropped")
			}
		})
	}
}

// A client that does not read what the server pushes is still cut with 1008
// slow_consumer, also while its own requests hold its read loop back.
func TestNonReaderIsCutOnPushes(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SendQueue = 8; c.WriteTimeout = 2 * time.Second })
	_, tok := e.session("alice")
	c, w := e.dial(bearer(tok), "")
	sc := e.g.reg.conn(w.ConnectionID)
	// Requests the client never reads the answers of.
	for i := range 200 {
		c.send(TypeSessionGet, fmt.Sprint(i), nil)
	}
	// Pushes, until the kernel buffers are full and the queue overflows.
	payload := map[string]string{"blob": strings.Repeat("z", 32<<10)}
	var err error
	for i := 0; i < 100000 && err == nil; i++ {
		err = sc.Send(context.Background(), TypeMessage, payload)
	}
	if !errors.Is(err, ErrSlowConsumer) {
		t.Fatalf("pushing ended with %v, want ErrSlowConsumer", err)
	}
	// The connection ends (its parked read loop included) and is counted as
	// a slow consumer.
	waitFor(t, "slow_consumer disconnect counted", func() bool {
		return e.counter("sessionbridge_disconnects_total", map[string]string{"code": "1008", "reason": ReasonSlowConsumer}) == 1
	})
	if e.g.Len() != 0 {
		t.Fatal("non-reading client still registered")
	}
}

// A text frame that is not UTF-8 closes the connection with 1007 (RFC 6455
// §8.1), before any handler sees it.
func TestInvalidUTF8ClosesWith1007(t *testing.T) {
	for name, frame := range map[string]string{
		"in a string": "{\"type\":\"ping\",\"id\":\"\xff\"}",
		"bare byte":   "{\"type\":\"ping\"}\xc3",
		"surrogate":   "{\"type\":\"session.get\",\"id\":\"\xed\xa0\x80\"}",
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, nil)
			_, tok := e.session("alice")
			c, _ := e.dial(bearer(tok), "")
			c.send(TypePing, "ok", nil)
			if f := c.read(); f.Type != TypePong {
				t.Fatalf("valid frame: %+v", f)
			}
			c.sendRaw([]byte(frame))
			c.expectClose(CloseInvalidData, ReasonInvalidUTF8)
			waitFor(t, "connection unregistered", func() bool { return e.g.Len() == 0 })
		})
	}
}

// refusedWith checks that an upgrade was refused with 429 too_many_connections
// and a Retry-After.
func refusedWith(t *testing.T, resp *http.Response, err error) {
	t.Helper()
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("upgrade over the cap: %v %+v", err, resp)
	}
	var body struct{ Error string }
	if json.NewDecoder(resp.Body).Decode(&body) != nil || body.Error != "too_many_connections" {
		t.Fatalf("body %+v", body)
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 1 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
}

func TestConnectionCapPerSession(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxConnsPerSession = 3 })
	s, tok := e.session("alice")
	var conns []*client
	for range 3 {
		c, _ := e.dial(bearer(tok), "")
		conns = append(conns, c)
	}
	_, resp, err := e.tryDial(bearer(tok), "")
	refusedWith(t, resp, err)
	if got := e.counter("sessionbridge_connects_total", map[string]string{"result": "too_many_connections"}); got != 1 {
		t.Fatalf("refusals counted: %v", got)
	}
	// Another session of the same user is not affected.
	_, tok2 := e.session("alice")
	e.dial(bearer(tok2), "")
	// A socket that closes frees its slot.
	_ = conns[0].ws.Close()
	waitFor(t, "closed socket unregistered", func() bool {
		n, _ := e.g.SessionCounts(context.Background(), []string{s.ID})
		return n[s.ID] == 2
	})
	e.dial(bearer(tok), "")
	_, resp, err = e.tryDial(bearer(tok), "")
	refusedWith(t, resp, err)
}

func TestConnectionCapPerUser(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxConnsPerUser = 2; c.MaxConnsPerSession = -1 })
	_, tok1 := e.session("alice")
	_, tok2 := e.session("alice")
	_, tokBob := e.session("bob")
	first, _ := e.dial(bearer(tok1), "")
	e.dial(bearer(tok2), "")
	_, resp, err := e.tryDial(bearer(tok1), "")
	refusedWith(t, resp, err)
	e.dial(bearer(tokBob), "")
	_ = first.ws.Close()
	waitFor(t, "closed socket unregistered", func() bool { return e.g.Len() == 2 })
	e.dial(bearer(tok1), "")
}

// Concurrent upgrades cannot pass the cap together: slots are taken before
// the upgrade, not counted after it.
func TestConnectionCapUnderConcurrentUpgrades(t *testing.T) {
	const limit, tries = 4, 24
	e := newEnv(t, func(c *Config) { c.MaxConnsPerSession = limit })
	_, tok := e.session("alice")
	var wg sync.WaitGroup
	var ok, refused atomic.Int32
	for range tries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, resp, err := e.tryDial(bearer(tok), "")
			switch {
			case err == nil:
				ok.Add(1)
			case resp != nil && resp.StatusCode == http.StatusTooManyRequests:
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != limit || refused.Load() != tries-limit {
		t.Fatalf("%d upgrades went through and %d were refused, want %d and %d", ok.Load(), refused.Load(), limit, tries-limit)
	}
	waitFor(t, "reserved slots filled", func() bool {
		r := e.g.reg
		r.mu.RLock()
		defer r.mu.RUnlock()
		return len(r.pendingSessions) == 0 && len(r.pendingUsers) == 0 && len(r.conns) == limit
	})
}
