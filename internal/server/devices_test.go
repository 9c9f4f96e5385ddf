package server

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// myConnections returns the connection count GET /auth/sessions shows for
// the requester's own session.
func (r *running) myConnections() int {
	r.t.Helper()
	resp, body := r.do("GET", "/auth/sessions", "", nil)
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("device list: %d %s", resp.StatusCode, body)
	}
	var list struct {
		Sessions []struct {
			Current     bool `json:"current"`
			Connections int  `json:"connections"`
		} `json:"sessions"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		r.t.Fatalf("device list %s: %v", body, err)
	}
	for _, s := range list.Sessions {
		if s.Current {
			return s.Connections
		}
	}
	r.t.Fatalf("device list without the current session: %s", body)
	return 0
}

// The device list counts a socket as soon as its welcome has arrived: a page
// that asks for the list on its welcome sees its own socket.
func TestDeviceListCountsSocketsFromTheWelcome(t *testing.T) {
	r := start(t, Config{})
	cookie := r.loginDemo()
	if n := r.myConnections(); n != 0 {
		t.Fatalf("%d connections before any socket", n)
	}
	h := http.Header{"Cookie": {cookie.String()}, "Origin": {r.url}}
	first := r.dial(h)
	if n := r.myConnections(); n != 1 {
		t.Fatalf("%d connections right after the welcome, want 1", n)
	}
	r.dial(h)
	if n := r.myConnections(); n != 2 {
		t.Fatalf("%d connections with two sockets, want 2", n)
	}
	first.Close()
	eventually(t, 10*time.Second, "closed socket no longer counted", func() bool { return r.myConnections() == 1 })
}
