package dashboard_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"
)

// issueKey creates an API key for user through the admin API and returns
// the key and its ID.
func (s *testServer) issueKey(t *testing.T, user string, scopes ...string) (string, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"user_id": user, "name": "usage bot", "scopes": scopes})
	req, err := http.NewRequest(http.MethodPost, s.URL+"/api/v1/keys", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var k struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	if resp.StatusCode != http.StatusCreated || json.NewDecoder(resp.Body).Decode(&k) != nil {
		t.Fatalf("creating a key: status %d", resp.StatusCode)
	}
	return k.Key, k.ID
}

// chartTotal is a JS expression: the data-total of the chart of metric in
// the panel under root, or -1 while there is none.
func chartTotal(root, metric string) string {
	return fmt.Sprintf(`(() => { const s = document.querySelector(%q + ' svg[data-metric=%s]'); return s ? Number(s.dataset.total) : -1; })()`, root, metric)
}

// TestUsageCharts: the user's own panel and a key's panel chart the
// traffic the test made, once the server has flushed it, and switch
// between the last hour, day and month.
func TestUsageCharts(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverTuning{})
	key, keyID := srv.issueKey(t, testUser, "ws:connect", "ping")
	a := newDevice(t, "device A")
	a.signIn(srv.URL)

	// Traffic with the key: 3 pings, 3 pongs besides the welcome.
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", http.Header{"Authorization": {"Bearer " + key}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var f struct{ Type string }
	if err := ws.ReadJSON(&f); err != nil || f.Type != "welcome" {
		t.Fatalf("welcome: %v %q", err, f.Type)
	}
	for i := range 3 {
		if err := ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"ping","id":"%d"}`, i)); err != nil {
			t.Fatal(err)
		}
		if err := ws.ReadJSON(&f); err != nil || f.Type != "pong" {
			t.Fatalf("pong: %v %q", err, f.Type)
		}
	}
	// Traffic on the page's own socket.
	a.do("ping from the page", stepTimeout, chromedp.Click(chromedp.ID("ping")))
	a.waitJS("the pong", stepTimeout, `!!document.querySelector('#event-log li[data-type=pong]')`)

	// The user's panel: the key's frames and the page's, once flushed (the
	// predicate asks again each time it is polled).
	a.waitJS("my frames charted", stepTimeout, `(document.getElementById('usage-refresh').click(), `+chartTotal("#usage-me", "frames")+` >= 4 + 5)`)
	if n := eval[int](a, `document.querySelectorAll('#usage-me svg[data-metric=frames] g[data-value]').length`); n < 1 {
		t.Fatalf("the frames chart has %d bars", n)
	}
	if got := eval[float64](a, chartTotal("#usage-me", "bytes")); got <= 0 {
		t.Fatalf("bytes charted %v", got)
	}
	if got := eval[float64](a, chartTotal("#usage-me", "connections")); got < 2 {
		t.Fatalf("most sockets at once %v, want the page's and the key's", got)
	}
	a.waitJS("my live connections", stepTimeout, `(document.getElementById('usage-refresh').click(),
		document.querySelector('#usage-me [data-testid=usage-live]').dataset.count === '2')`)

	// The key's panel, opened from its row.
	row := fmt.Sprintf(`#keys-list li[data-key-id=%q]`, keyID)
	a.do("refresh the keys", stepTimeout, chromedp.Click(chromedp.ID("keys-refresh")))
	a.waitJS("the key listed", stepTimeout, `!!document.querySelector('`+row+`')`)
	a.do("open the key's usage", stepTimeout, chromedp.Click(chromedp.CSS(row+` [data-testid=key-usage-toggle]`)))
	a.waitJS("the key's frames charted", stepTimeout, chartTotal(row, "frames")+` === 3 + 4`)
	if got := eval[string](a, `document.querySelector('`+row+` [data-testid=usage-live]').dataset.count`); got != "1" {
		t.Fatalf("the key's live connections: %s", got)
	}

	// The last day by hour, and the last month by day.
	a.do("show the last day", stepTimeout, chromedp.Click(chromedp.CSS(`#usage-me [data-range=day]`)))
	a.waitJS("the day chart", stepTimeout, `document.querySelector('#usage-me svg[data-metric=frames]').dataset.points === '24' && `+chartTotal("#usage-me", "frames")+` >= 9`)
	a.do("show the last month", stepTimeout, chromedp.Click(chromedp.CSS(`#usage-me [data-range=month]`)))
	a.waitJS("the month chart", stepTimeout, `document.querySelector('#usage-me svg[data-metric=frames]').dataset.points === '30' && `+chartTotal("#usage-me", "frames")+` >= 9`)
	if p := a.problems(); len(p) > 0 {
		t.Fatalf("the page reported problems: %v", p)
	}
}
