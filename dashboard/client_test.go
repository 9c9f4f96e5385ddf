package dashboard_test

// Browser tests of the client library (clients/js, embedded under
// /sessionbridge/): in the dashboard, and in a page of an application that
// has its own origin in front of sessionbridge.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

// connectionID returns the connection the dashboard's status line names.
func (tb *tab) connectionID() string {
	tb.t.Helper()
	s := eval[string](tb, `document.getElementById('ws-status').textContent`)
	id, ok := strings.CutPrefix(s, "Live · connection ")
	if !ok || id == "" {
		tb.t.Fatalf("%s: status %q names no connection%s", tb.name, s, tb.dump())
	}
	return id
}

// waitConnections polls the server until the user's live connections are
// exactly want.
func waitConnections(t *testing.T, srv *testServer, want ...string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(stepTimeout)
	for {
		got := srv.connections(t, testUser)
		slices.Sort(got)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server connections of %s = %v, want %v", testUser, got, want)
		}
		tick := time.NewTimer(20 * time.Millisecond)
		<-tick.C
	}
}

// await evaluates a JavaScript expression whose value is a promise and
// returns what it resolves to.
func await[T any](tb *tab, expr string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("%s: evaluating %s: %v%s", tb.name, expr, err, tb.dump())
	}
	return v
}

func TestTabsShareOneSocket(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverTuning{})
	// Both tabs are children of a blank one, so that closing tab 1 leaves tab 2.
	device := newDevice(t, "blank tab")
	one := device.newTab("tab 1")
	one.signIn(srv.URL)
	two := device.newTab("tab 2")
	two.open(srv.URL)

	// Two tabs, one socket: the same connection in both, and the server
	// counts one.
	id := one.connectionID()
	if got := two.connectionID(); got != id {
		t.Errorf("tab 2 shows connection %s, tab 1 %s: not shared", got, id)
	}
	waitConnections(t, srv, id)
	// The socket lives in a SharedWorker: no tab holds the election lock.
	if held := await[int](one, `navigator.locks.query().then((s) => s.held.length)`); held != 0 {
		t.Errorf("%d Web Locks held: the tabs elected a leader instead of using the SharedWorker", held)
	}
	// The device list counts one live connection for this browser.
	one.do("refresh devices", stepTimeout, chromedp.Click(chromedp.ID("devices-refresh")))
	one.waitJS("one connection listed", stepTimeout,
		`document.querySelector('li[data-current="true"] [data-testid=device-conns]').dataset.count === '1'`)

	// Each tab gets its own replies ...
	one.do("ping", stepTimeout, chromedp.Click(chromedp.ID("ping")))
	one.waitJS("pong in tab 1", stepTimeout, `document.querySelector('#event-log li[data-type="pong"]') !== null`)
	// ... and every push. The publish is sent after the pong arrived, and
	// frames reach the tabs in order, so a pong that went to tab 2 as well
	// would be in its log before the message.
	if srv.admin(t, http.MethodPost, "/api/v1/publish", `{"user_id":"`+testUser+`","data":"to every tab"}`) != http.StatusAccepted {
		t.Fatal("publish refused")
	}
	for _, tb := range []*tab{one, two} {
		tb.waitJS("message in "+tb.name, liveTimeout, `(() => {
			const e = document.querySelector('#event-log li[data-type="message"] .log-body');
			return e && e.textContent.includes('to every tab'); })()`)
	}
	if eval[bool](two, `document.querySelector('#event-log li[data-type="pong"]') !== null`) {
		t.Errorf("tab 2 received the reply to tab 1's ping")
	}

	// Closing the first tab keeps the socket for the other.
	one.close()
	if srv.admin(t, http.MethodPost, "/api/v1/publish", `{"user_id":"`+testUser+`","data":"after the close"}`) != http.StatusAccepted {
		t.Fatal("publish refused")
	}
	two.waitJS("message after tab 1 closed", liveTimeout, `(() => {
		const e = document.querySelector('#event-log li[data-type="message"] .log-body');
		return e && e.textContent.includes('after the close'); })()`)
	waitConnections(t, srv, id)
	two.noProblems()
}

func TestReconnectAfterNodeRestart(t *testing.T) {
	t.Parallel()
	rds := redistest.Start(t)
	srv := startServer(t, serverTuning{redis: rds.URL()})
	a := newDevice(t, "device A")
	a.signIn(srv.URL)
	session, first := a.sessionID(), a.connectionID()

	srv.stop()
	a.waitJS("1001 server_shutdown logged", stepTimeout,
		`[...document.querySelectorAll('#event-log li[data-kind="close"] .log-body')].some(
			(e) => e.textContent.includes('"code":1001') && e.textContent.includes('server_shutdown'))`)
	a.waitJS("reconnecting", stepTimeout, `document.getElementById('ws-status').dataset.state === 'reconnecting'`)

	// The node comes back at the same address; the session lives in Redis,
	// so the page reconnects to it by itself.
	again := startServer(t, serverTuning{addr: strings.TrimPrefix(srv.URL, "http://"), redis: rds.URL()})
	a.waitJS("welcomed again", stepTimeout, fmt.Sprintf(`document.getElementById('ws-status').dataset.state === 'open' &&
		document.querySelectorAll('#event-log li[data-type="welcome"]').length === 2 &&
		!document.getElementById('ws-status').textContent.endsWith(%q)`, first))
	if id := a.sessionID(); id != session {
		t.Errorf("after the restart the page shows session %s, want %s", id, session)
	}
	if !eval[bool](a, `!document.getElementById('app').hidden`) {
		t.Errorf("the page left the signed-in view%s", a.dump())
	}
	waitConnections(t, again, a.connectionID())
	a.noProblems()
}

// appPage is a page of an application with its own origin; the test drives
// the client library from it.
const appPage = `<!doctype html><title>app</title><script type="module" src="/app-test.js"></script>`

// appScript makes the library reachable from the tests: make(name, options)
// creates and connects a client whose events are recorded in logs[name].
const appScript = `
import { Client } from '/sessionbridge/index.js';
window.logs = {};
window.clients = {};
window.make = (name, opts) => {
	const c = new Client(opts);
	const log = (logs[name] = []);
	for (const k of ['welcome', 'state', 'close', 'unauthenticated', 'problem', 'message'])
		c.on(k, (a) => log.push([k, a]));
	clients[name] = c;
	c.connect();
	return true;
};
window.signIn = (username, password) => fetch('/auth/login', {
	method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({username, password}),
}).then((r) => r.status);
window.ready = true;
`

// app is an application's origin in front of sessionbridge: it serves its
// own page and the client library, and passes /auth/ and /ws to the
// sessionbridge server, as an application's reverse proxy would.
type app struct {
	URL string
	// tickets counts the POST /auth/ws-ticket requests that went through.
	tickets atomic.Int32
}

func startApp(t *testing.T, srv *testServer) *app {
	t.Helper()
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	a := &app{}
	// The proxy keeps the request's Host, so that sessionbridge sees the
	// application's origin as its own.
	proxy := httputil.NewSingleHostReverseProxy(target)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, appPage)
	})
	mux.HandleFunc("GET /app-test.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		fmt.Fprint(w, appScript)
	})
	// The library as the dashboard embeds it.
	mux.Handle("GET /sessionbridge/", http.FileServer(http.Dir("static")))
	mux.Handle("/auth/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/auth/ws-ticket" {
			a.tickets.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	mux.Handle("/ws", proxy)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	a.URL = hs.URL
	return a
}

// load opens the application's page in tb and signs in through it.
func (a *app) load(tb *tab, signIn bool) {
	tb.t.Helper()
	tb.do("load the application's page", stepTimeout, chromedp.Navigate(a.URL+"/"))
	tb.waitJS("library loaded", stepTimeout, `window.ready === true`)
	if signIn {
		if st := await[int](tb, `signIn(`+strconv.Quote(testUser)+`, `+strconv.Quote(testPassword)+`)`); st != http.StatusOK {
			tb.t.Fatalf("%s: sign-in through the application answered %d", tb.name, st)
		}
	}
}

// welcomeOf waits for the nth welcome of client name in tb and returns its
// connection ID.
func welcomeOf(tb *tab, name string, n int) string {
	tb.t.Helper()
	cond := fmt.Sprintf(`(logs[%[1]q] || []).filter((e) => e[0] === 'welcome').length >= %[2]d`, name, n)
	tb.waitJS(name+" welcomed", stepTimeout, cond)
	return eval[string](tb, fmt.Sprintf(`logs[%q].filter((e) => e[0] === 'welcome')[%d][1].connection_id`, name, n-1))
}

func TestClientTicketConnectCrossOrigin(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverTuning{})
	a := startApp(t, srv)
	page := newDevice(t, "application page")
	a.load(page, true)
	session := await[string](page, `fetch('/auth/session').then((r) => r.json()).then((s) => s.id)`)

	// The socket goes to sessionbridge under another name (localhost, where
	// the browser holds no cookie): another origin, so the client fetches a
	// ticket from the application's origin and opens /ws?ticket=.
	ws := "ws://localhost:" + srv.URL[strings.LastIndexByte(srv.URL, ':')+1:] + "/ws"
	eval[bool](page, `make('c', {url: `+strconv.Quote(ws)+`})`)
	id := welcomeOf(page, "c", 1)
	w := eval[string](page, `JSON.stringify(logs.c.find((e) => e[0] === 'welcome')[1])`)
	if !strings.Contains(w, `"auth":"session"`) || !strings.Contains(w, `"id":"`+session+`"`) {
		t.Errorf("welcome %s, want session auth for session %s", w, session)
	}
	if n := a.tickets.Load(); n != 1 {
		t.Errorf("%d ticket requests, want 1", n)
	}
	cookies, err := chromedp.Call(page.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{"http://localhost/"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(cookies.Cookies) != 0 {
		t.Fatalf("the browser holds cookies for localhost; the ticket would prove nothing")
	}
	waitConnections(t, srv, id)
	if got := await[string](page, `clients.c.request('ping').then((f) => f.type)`); got != "pong" {
		t.Errorf("ping answered %q", got)
	}

	// 4401: the client reports why and stays closed.
	if srv.admin(t, http.MethodDelete, "/api/v1/sessions/"+session, "") != http.StatusNoContent {
		t.Fatal("revoking the session failed")
	}
	page.waitJS("unauthenticated", liveTimeout, `logs.c.some((e) => e[0] === 'unauthenticated')`)
	got := eval[string](page, `JSON.stringify(logs.c.find((e) => e[0] === 'unauthenticated')[1])`)
	if got != `{"reason":"session_revoked","code":4401}` {
		t.Errorf("unauthenticated event %s, want session_revoked 4401", got)
	}
	after := eval[[]string](page, `logs.c.slice(logs.c.findIndex((e) => e[0] === 'close')).map((e) => e[0] + ':' + (e[0] === 'state' ? e[1] : ''))`)
	if !slices.Equal(after, []string{"close:", "state:closed", "unauthenticated:"}) {
		t.Errorf("events from the close on = %v, want the close, closed and unauthenticated only", after)
	}
	if got := await[string](page, `clients.c.request('ping').then(() => 'sent', (e) => e.code)`); got != "not_connected" {
		t.Errorf("a request after the 4401: %q, want not_connected", got)
	}
	if n := a.tickets.Load(); n != 1 {
		t.Errorf("%d ticket requests after the 4401, want still 1 (no reconnect)", n)
	}
	page.noProblems()
}

func TestClientLeaderElectionHandsOver(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverTuning{})
	a := startApp(t, srv)
	device := newDevice(t, "blank tab")
	one := device.newTab("tab 1")
	a.load(one, true)
	two := device.newTab("tab 2")
	a.load(two, false)

	// Without the SharedWorker the tabs elect a leader, whose socket they share.
	opts := `{share: {worker: false}}`
	eval[bool](one, `make('c', `+opts+`)`)
	id := welcomeOf(one, "c", 1)
	eval[bool](two, `make('c', `+opts+`)`)
	if got := welcomeOf(two, "c", 1); got != id {
		t.Errorf("tab 2 welcomed on connection %s, tab 1 on %s: not shared", got, id)
	}
	waitConnections(t, srv, id)
	if held := await[int](one, `navigator.locks.query().then((s) => s.held.length)`); held != 1 {
		t.Errorf("%d Web Locks held, want 1 (the leader's)", held)
	}
	// The follower's requests are answered through the leader.
	if got := await[string](two, `clients.c.request('ping').then((f) => f.type)`); got != "pong" {
		t.Errorf("follower ping answered %q", got)
	}
	if got := await[string](two, `clients.c.request('nope').then(() => 'ok', (e) => e.code)`); got != "unknown_type" {
		t.Errorf("follower request of an unknown type: %q, want unknown_type", got)
	}
	if srv.admin(t, http.MethodPost, "/api/v1/publish", `{"user_id":"`+testUser+`","data":1}`) != http.StatusAccepted {
		t.Fatal("publish refused")
	}
	for _, tb := range []*tab{one, two} {
		tb.waitJS("message in "+tb.name, liveTimeout, `logs.c.some((e) => e[0] === 'message')`)
	}

	// The leader closes: the other tab takes the lock and the socket.
	one.close()
	next := welcomeOf(two, "c", 2)
	if next == id {
		t.Errorf("tab 2 welcomed again on the old connection %s", id)
	}
	waitConnections(t, srv, next)
	if got := await[string](two, `clients.c.request('ping').then((f) => f.type)`); got != "pong" {
		t.Errorf("ping of the new leader answered %q", got)
	}
	two.noProblems()
}
