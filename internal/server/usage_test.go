package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sessionbridge/sessionbridge/internal/redistest"
	"github.com/sessionbridge/sessionbridge/usage"
)

// usageAnswer is the part of a usage answer the tests read.
type usageAnswer struct {
	Totals          map[string]int64 `json:"totals"`
	LiveConnections int              `json:"live_connections"`
}

func (r *running) usageOf(path string) usageAnswer {
	r.t.Helper()
	resp, body := r.doBare("GET", path, "", adminAuth())
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	var a usageAnswer
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		r.t.Fatal(err)
	}
	return a
}

// pings sends n pings on c and reads their pongs.
func pings(t *testing.T, c *websocket.Conn, n int) {
	t.Helper()
	for i := range n {
		if err := c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"ping","id":"%d"}`, i)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			var f struct{ Type string }
			if err := c.ReadJSON(&f); err != nil {
				t.Fatal(err)
			}
			if f.Type == "pong" {
				break
			}
		}
	}
}

// TestUsageAcrossTwoNodes: two nodes on one Redis count one key's sockets
// into the same buckets; either node answers the sum, the key's live
// sockets on both nodes, and the ranking.
func TestUsageAcrossTwoNodes(t *testing.T) {
	rs := redistest.Start(t)
	cfg := Config{AdminToken: keysAdminToken, RedisURL: rs.URL(), UsageFlushInterval: 50 * time.Millisecond}
	a := start(t, withNode(cfg, "node-a"))
	b := start(t, withNode(cfg, "node-b"))
	k := a.issue("POST", "/api/v1/keys", `{"user_id":"carol","name":"ci","scopes":["ws:connect","ping"]}`, adminAuth())
	h := http.Header{"Authorization": {"Bearer " + k.Key}}
	pings(t, a.dial(h), 3)
	pings(t, b.dial(h), 2)

	var got usageAnswer
	eventually(t, 20*time.Second, "both nodes' usage in the key's buckets", func() bool {
		got = b.usageOf("/api/v1/keys/" + k.ID + "/usage")
		return got.Totals[usage.FramesIn] == 5 && got.Totals[usage.Connects] == 2 && got.Totals[usage.FramesOut] == 7
	})
	if got.Totals[usage.PeakConnections] != 1 {
		// Each node counts its own sockets' peak: one each.
		t.Fatalf("peak %d, want 1 per node", got.Totals[usage.PeakConnections])
	}
	eventually(t, 20*time.Second, "the key's sockets on both nodes", func() bool {
		return a.usageOf("/api/v1/keys/"+k.ID+"/usage").LiveConnections == 2
	})
	resp, body := a.doBare("GET", "/api/v1/connections?key_id="+k.ID, "", adminAuth())
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"node_id":"node-a"`) || !strings.Contains(body, `"node_id":"node-b"`) {
		t.Fatalf("key connections: %d %s", resp.StatusCode, body)
	}
	if u := a.usageOf("/api/v1/users/carol/usage?step=1h"); u.Totals[usage.FramesIn] != 5 {
		t.Fatalf("the owner's usage %v, want the key's 5 frames", u.Totals)
	}
	resp, body = a.doBare("GET", "/api/v1/usage/top?kind=key&metric=frames_in", "", adminAuth())
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `{"id":"`+k.ID+`","value":5}`) {
		t.Fatalf("top: %d %s", resp.StatusCode, body)
	}
	// Prometheus: the node's own totals, no key label.
	_, metrics := a.doBare("GET", "/metrics", "", nil)
	if !strings.Contains(metrics, `sessionbridge_usage_total{metric="frames_in"} 3`) || strings.Contains(metrics, k.ID) {
		t.Fatalf("metrics:\n%s", grep(metrics, "sessionbridge_usage"))
	}
}

func grep(text, word string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestUsageFinalFlushOnDrain: with a flush interval far longer than the
// test, what the sockets did reaches the store in the drain's last flush,
// connected seconds of the sockets the drain closed included.
func TestUsageFinalFlushOnDrain(t *testing.T) {
	r := start(t, Config{UsageFlushInterval: time.Hour})
	cookie := r.loginDemo()
	c := r.dial(http.Header{"Cookie": {cookie.String()}, "Origin": {r.url}})
	pings(t, c, 4)
	store := r.srv.backend.Usage
	demo := usage.Subject{Kind: usage.KindUser, ID: "demo"}
	now := time.Now()
	pts, err := store.Series(context.Background(), demo, now, now, usage.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if pts[0].Counts[usage.FramesIn] != 0 {
		// The first flush of the Recorder's Run is an hour away.
		t.Fatalf("usage written before the drain: %v", pts[0].Counts)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	pts, err = store.Series(context.Background(), demo, now, time.Now(), usage.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sum := map[string]int64{}
	for _, p := range pts {
		for m, n := range p.Counts {
			sum[m] += n
		}
	}
	if sum[usage.FramesIn] != 4 || sum[usage.Connects] != 1 || sum[usage.FramesOut] != 5 {
		t.Fatalf("after the drain the store holds %v; want the 4 frames in, 5 out and the connect", sum)
	}
	if _, ok := sum[usage.ConnectedSeconds]; !ok {
		t.Fatalf("the closed socket's connected seconds were not handed over: %v", sum)
	}
}

// TestUsageRedisAway: while Redis is away the counts wait in the Recorder;
// when it is back they are written. The test Redis comes back empty (no
// persistence), so what was written before is gone: a Redis restart loses
// what it did not persist.
func TestUsageRedisAway(t *testing.T) {
	rs := redistest.Start(t)
	r := start(t, Config{AdminToken: keysAdminToken, RedisURL: rs.URL(), UsageFlushInterval: 50 * time.Millisecond})
	k := r.issue("POST", "/api/v1/keys", `{"user_id":"carol","name":"ci","scopes":["ws:connect","ping"]}`, adminAuth())
	c := r.dial(http.Header{"Authorization": {"Bearer " + k.Key}})
	pings(t, c, 2)
	path := "/api/v1/keys/" + k.ID + "/usage"
	eventually(t, 20*time.Second, "the first frames written", func() bool {
		return r.usageOf(path).Totals[usage.FramesIn] == 2
	})

	rs.Stop()
	pings(t, c, 5)
	key := usage.Subject{Kind: usage.KindKey, ID: k.ID}
	eventually(t, 20*time.Second, "the frames kept while Redis is away", func() bool {
		return r.srv.Usage().Pending(key)[usage.FramesIn] == 5
	})
	rs.Restart()
	eventually(t, 20*time.Second, "the kept frames written once Redis is back", func() bool {
		resp, body := r.doBare("GET", path, "", adminAuth())
		if resp.StatusCode != http.StatusOK {
			return false
		}
		var a usageAnswer
		return json.Unmarshal([]byte(body), &a) == nil && a.Totals[usage.FramesIn] == 5
	})
}

func TestUsageFlushIntervalChecked(t *testing.T) {
	_, err := New(context.Background(), Config{UsageFlushInterval: -time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		t.Fatal("a negative usage flush interval was accepted")
	}
}
