package clustertest

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/gateway"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
	"github.com/sessionbridge/sessionbridge/keys"
)

// refusedWith dials n with token and checks a 429 with code.
func refusedWith(t *testing.T, n *node, token, code string) {
	t.Helper()
	c, resp, err := tryDial(n.srv.URL, token)
	if err == nil {
		_ = c.conn.Close()
		t.Fatalf("%s admitted, want 429 %s", n.name, code)
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("%s: %v %v, want 429 %s", n.name, err, resp, code)
	}
	defer resp.Body.Close()
	var body struct{ Error, Rule string }
	if json.NewDecoder(resp.Body).Decode(&body) != nil || body.Error != code {
		t.Fatalf("%s: body %+v, want %s", n.name, body, code)
	}
}

// A user spread over both nodes is held to one max_connections.
func TestMaxConnectionsAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, nodeOpts{limits: &sb.Limits{MaxConnections: 3}})
	_, tok := create(t, a, "alice")
	first := dial(t, a, tok)
	dial(t, b, tok)
	dial(t, a, tok)
	refusedWith(t, b, tok, "too_many_connections")
	refusedWith(t, a, tok, "too_many_connections")
	// Another user is not held.
	_, bob := create(t, b, "bob")
	dial(t, b, bob)
	// A socket closed on node a frees a slot for node b.
	_ = first.conn.Close()
	eventually(t, 10*time.Second, "the slot freed on node a taken on node b", func() bool {
		c, _, err := tryDial(b.srv.URL, tok)
		if err != nil {
			return false
		}
		c.t = t
		t.Cleanup(func() { _ = c.conn.Close(); <-c.closed })
		return true
	})
	refusedWith(t, a, tok, "too_many_connections")
}

// Connection attempts spread over both nodes share one allowance, exactly.
func TestConnectsPerMinuteAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, nodeOpts{limits: &sb.Limits{ConnectsPerMinute: 4}})
	_, tok := create(t, a, "alice")
	admitted := 0
	for i := range 10 {
		n := a
		if i%2 == 1 {
			n = b
		}
		c, resp, err := tryDial(n.srv.URL, tok)
		switch {
		case err == nil:
			admitted++
			_ = c.conn.Close()
			<-c.closed
		case resp == nil || resp.StatusCode != http.StatusTooManyRequests:
			t.Fatalf("attempt %d on %s: %v", i+1, n.name, err)
		}
	}
	if admitted != 4 {
		t.Fatalf("two nodes admitted %d attempts of a limit of 4 a minute", admitted)
	}
}

// Two nodes spending one key's frame rule from leased tokens, each flooded
// at once, admit no more than the shared bucket allows: its burst, its rate
// over the time the flood took, and nothing for the leases, which are
// charged when taken. Both floods end closed with 4429.
func TestKeyFramesAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	a, b := twoNodes(t, srv, nodeOpts{limits: &sb.Limits{}})
	key, _, err := a.keys.Create(bg, keys.NewKey{UserID: "alice", Name: "flood", Scopes: []string{"**"}, Limits: sb.Limits{KeyFramesPerSecond: 100}})
	if err != nil {
		t.Fatal(err)
	}
	const rate, burst, perNode = 100, 200, 400
	clients := []*client{dialKey(t, a, key), dialKey(t, b, key)}
	start := time.Now()
	done := make(chan int, len(clients))
	for _, c := range clients {
		go func() {
			ping := []byte(`{"type":"ping"}`)
			for range perNode {
				if c.conn.WriteMessage(websocket.TextMessage, ping) != nil {
					break
				}
			}
			pongs := 0
			for {
				select {
				case f := <-c.frames:
					if f.Type == gateway.TypePong {
						pongs++
					}
				case <-c.closed:
					for len(c.frames) > 0 {
						if f := <-c.frames; f.Type == gateway.TypePong {
							pongs++
						}
					}
					done <- pongs
					return
				}
			}
		}()
	}
	admitted := 0
	for range clients {
		admitted += <-done
	}
	elapsed := time.Since(start)
	bound := burst + int(float64(rate)*elapsed.Seconds()) + 1
	t.Logf("admitted %d of %d frames sent in %v; bound %d", admitted, 2*perNode, elapsed, bound)
	if admitted > bound {
		t.Fatalf("two nodes admitted %d frames, over the bound of %d", admitted, bound)
	}
	if admitted < burst/2 {
		t.Fatalf("two nodes admitted only %d frames of a burst of %d", admitted, burst)
	}
	for _, c := range clients {
		c.expectClose(gateway.CloseRateLimited, gateway.ReasonRateLimited, 10*time.Second)
	}
}
