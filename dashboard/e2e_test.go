package dashboard_test

// End-to-end tests of the dashboard: a whole server in-process, the page in
// a real Chromium, and only the browser's own cookie and WebSocket handling
// between them.

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

const (
	testUser     = "alice"
	testPassword = "pw-4-tests"
	// stepTimeout bounds one ordinary step (navigate, sign in, wait for a
	// frame) on a loaded machine.
	stepTimeout = 15 * time.Second
	// liveTimeout is how fast a change must reach another page: the product
	// promises milliseconds; a second leaves room for a busy test machine.
	liveTimeout = time.Second
)

// signIn loads the dashboard, signs in through the form and waits until the
// page's WebSocket was welcomed.
func (tb *tab) signIn(url string) {
	tb.t.Helper()
	tb.do("sign in", stepTimeout,
		chromedp.Navigate(url+"/"),
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), testUser),
		chromedp.SendKeys(chromedp.ID("password"), testPassword),
		chromedp.Click(chromedp.ID("signin-submit")),
		chromedp.WaitVisible(chromedp.ID("app")),
	)
	tb.waitWelcome()
}

// open loads the dashboard in a tab whose browser context already holds a
// session cookie, and waits for the welcome.
func (tb *tab) open(url string) {
	tb.t.Helper()
	tb.do("open dashboard", stepTimeout,
		chromedp.Navigate(url+"/"),
		chromedp.WaitVisible(chromedp.ID("app")),
	)
	tb.waitWelcome()
}

func (tb *tab) waitWelcome() {
	tb.t.Helper()
	tb.waitJS("welcome frame in the event log", stepTimeout,
		`document.querySelector('#event-log li[data-type="welcome"]') !== null && document.getElementById('ws-status').dataset.state === 'open'`)
}

func (tb *tab) sessionID() string {
	tb.t.Helper()
	id := eval[string](tb, `document.getElementById('s-id').textContent`)
	if id == "" {
		tb.t.Fatalf("%s: no session id shown%s", tb.name, tb.dump())
	}
	return id
}

func (tb *tab) noProblems() {
	tb.t.Helper()
	if p := tb.problems(); len(p) > 0 {
		tb.t.Errorf("%s: the page reported problems: %s", tb.name, strings.Join(p, "; "))
	}
}

// waitEnded waits until the page shows that its session ended, with title.
func (tb *tab) waitEnded(timeout time.Duration, title string) {
	tb.t.Helper()
	tb.waitJS("ended: "+title, timeout, fmt.Sprintf(
		`!document.getElementById('ended').hidden && document.getElementById('ended-title').textContent === %q`, title))
	// The page must not try to reconnect after a 4401.
	if st := eval[string](tb, `document.getElementById('ws-status').dataset.state`); st != "closed" {
		tb.t.Errorf("%s: socket state after the session ended = %q, want closed", tb.name, st)
	}
	if !eval[bool](tb, `document.getElementById('signin-again') !== null && !document.getElementById('signin-again').hidden`) {
		tb.t.Errorf("%s: no Sign in again button", tb.name)
	}
}

func TestSignInCookieIsHttpOnlyAndAuthenticatesSocket(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverTuning{})
	a := newDevice(t, "device A")
	a.signIn(srv.URL)

	if c := eval[string](a, `document.cookie`); strings.Contains(c, "sb_session") {
		t.Errorf("document.cookie exposes the session cookie to scripts: %q", c)
	}
	cookies, err := chromedp.Call(a.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{srv.URL + "/"}})
	if err != nil {
		t.Fatalf("reading the browser's cookies: %v", err)
	}
	var found *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == "sb_session" {
			found = c
		}
	}
	if found == nil {
		t.Fatalf("the browser holds no sb_session cookie after sign-in")
	}
	if !found.HTTPOnly {
		t.Errorf("sb_session cookie is not HttpOnly")
	}
	if found.SameSite != network.CookieSameSiteLax && found.SameSite != network.CookieSameSiteStrict {
		t.Errorf("sb_session cookie SameSite = %q, want Lax or Strict", found.SameSite)
	}
	// The cookie holds the token "<id>.<secret>"; the page shows the id only.
	id := a.sessionID()
	if !strings.HasPrefix(found.Value, id+".") {
		t.Errorf("the page shows session %s, but the cookie belongs to another session", id)
	}
	secret := found.Value[len(id)+1:]
	if strings.Contains(eval[string](a, `document.documentElement.outerHTML`), secret) {
		t.Errorf("the page holds the session secret")
	}
	if l := srv.logs.matching(secret); len(l) > 0 {
		t.Errorf("the server logged the session secret: %q", l)
	}

	// The welcome frame names the same session, over a socket that only the
	// cookie could have authenticated: the page never sees the token.
	welcome := eval[string](a, `document.querySelector('#event-log li[data-type="welcome"] .log-body').textContent`)
	if !strings.Contains(welcome, `"auth":"session"`) || !strings.Contains(welcome, id) {
		t.Errorf("welcome frame %s does not name session auth and session %s", welcome, id)
	}
	if got := eval[string](a, `document.getElementById('s-user').textContent`); !strings.Contains(got, testUser) {
		t.Errorf("signed in as %q, want %q", got, testUser)
	}
	// The device list shows this device with its live connection.
	a.waitJS("this device listed with its connection", stepTimeout, fmt.Sprintf(
		`(() => { const li = document.querySelector('li[data-session-id=%q]');
			return li && li.dataset.current === 'true' && li.querySelector('[data-testid=device-conns]').dataset.count === '1'; })()`, id))

	// A message from the backend (the admin API's publish) shows in the log.
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/publish",
		strings.NewReader(`{"user_id":"`+testUser+`","data":{"text":"hello from the backend"}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("publish: status %d", resp.StatusCode)
	}
	a.waitJS("message in the log", liveTimeout, `(() => {
		const e = document.querySelector('#event-log li[data-type="message"] .log-body');
		return e && e.textContent.includes('hello from the backend'); })()`)
	a.noProblems()
}

// TestSignInPage checks the page a visitor sees first: keyboard-only sign-in
// with an announced error, and a Content-Security-Policy that is really
// enforced (the page's own socket works under it, as every other test shows;
// here connections to another origin and inline scripts are refused, and the
// collector of page problems sees that).
func TestSignInPage(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverTuning{})
	a := newDevice(t, "device A")

	// Keyboard only: the name field has the focus on load, Tab moves to the
	// password, Enter submits.
	a.do("load", stepTimeout,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("username")),
	)
	a.waitJS("focus on the name field", stepTimeout, `document.activeElement.id === 'username'`)
	a.do("type a name", stepTimeout, chromedp.KeyEvent(testUser+"\t"))
	if id := eval[string](a, `document.activeElement.id`); id != "password" {
		t.Fatalf("Tab from the name field focused %q, want password", id)
	}
	a.do("type a wrong password", stepTimeout, chromedp.KeyEvent("not the password\r"))
	a.waitJS("error shown", stepTimeout, `document.getElementById('signin-error').textContent === 'Wrong username or password.'`)
	if role := eval[string](a, `document.getElementById('signin-error').getAttribute('role')`); role != "alert" {
		t.Errorf("sign-in error role = %q, want alert (announced)", role)
	}
	if !eval[bool](a, `document.getElementById('app').hidden && document.getElementById('password').value === ''`) {
		t.Errorf("after a failed sign-in the app is shown or the password kept")
	}
	a.noProblems()

	// The CSP.
	other := "ws" + strings.TrimPrefix(srv.URL, "http")
	other = other[:strings.LastIndexByte(other, ':')] + ":9/ws" // same host, another port
	eval[bool](a, `(() => {
		window.violations = [];
		document.addEventListener('securitypolicyviolation', (e) => violations.push(e.violatedDirective + ' ' + e.blockedURI));
		try { new WebSocket(`+strconv.Quote(other)+`); } catch (e) { violations.push('threw ' + e.name); }
		const s = document.createElement('script');
		s.textContent = 'window.inlineRan = true';
		document.body.append(s);
		return true;
	})()`)
	a.waitJS("two violations", stepTimeout, `window.violations.length >= 2`)
	got := strings.Join(eval[[]string](a, `window.violations`), "; ")
	if !strings.Contains(got, "connect-src") || !strings.Contains(got, "script-src") {
		t.Errorf("violations = %s, want connect-src and script-src", got)
	}
	if eval[bool](a, `window.inlineRan === true`) {
		t.Errorf("an inline script ran despite the CSP")
	}
	if p := strings.Join(a.problems(), "; "); !strings.Contains(p, "Content Security Policy") {
		t.Errorf("the console collector missed the violations: %q", p)
	}
}

func TestRevokeOtherDevice(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverTuning{})
	a := newDevice(t, "device A")
	b := newDevice(t, "device B")
	a.signIn(srv.URL)
	b.signIn(srv.URL)
	idA, idB := a.sessionID(), b.sessionID()
	if idA == idB {
		t.Fatalf("two devices share session %s", idA)
	}

	row := fmt.Sprintf(`li[data-session-id=%q]`, idB)
	a.do("list device B", stepTimeout, chromedp.Click(chromedp.ID("devices-refresh")))
	a.waitJS("device B listed", stepTimeout, fmt.Sprintf(
		`(() => { const li = document.querySelector('%s');
			return li && li.dataset.current === 'false' && li.querySelector('[data-testid=device-conns]').dataset.count === '1'; })()`, row))
	if eval[bool](a, fmt.Sprintf(`document.querySelector('li[data-session-id=%q] [data-testid=device-revoke]') !== null`, idA)) {
		t.Errorf("this device has a Revoke button; it should use Sign out")
	}

	a.do("revoke device B", stepTimeout, chromedp.Click(chromedp.CSS(row+` [data-testid=device-revoke]`)))
	b.waitEnded(liveTimeout, "Signed out (revoked)")
	closeEntry := eval[string](b, `document.querySelector('#event-log li[data-kind="close"] .log-body').textContent`)
	if !strings.Contains(closeEntry, `"code":4401`) || !strings.Contains(closeEntry, "session_revoked") {
		t.Errorf("B's close entry = %s, want 4401 session_revoked", closeEntry)
	}

	// A keeps its session and its list forgets B.
	a.waitJS("device B gone from A's list", stepTimeout, fmt.Sprintf(`document.querySelector('%s') === null`, row))
	if st := eval[string](a, `document.getElementById('ws-status').dataset.state`); st != "open" {
		t.Errorf("A's socket state = %q after revoking B, want open", st)
	}

	// B can sign in again from the ended screen.
	b.do("sign in again", stepTimeout,
		chromedp.Click(chromedp.ID("signin-again")),
		chromedp.WaitVisible(chromedp.ID("username")),
	)
	// The name is kept and the password asked for.
	if got := eval[string](b, `document.getElementById('username').value + '|' + document.activeElement.id`); got != testUser+"|password" {
		t.Errorf("sign in again: username|focus = %q, want %q", got, testUser+"|password")
	}
	b.do("sign in again", stepTimeout,
		chromedp.SendKeys(chromedp.ID("password"), testPassword),
		chromedp.Click(chromedp.ID("signin-submit")),
		chromedp.WaitVisible(chromedp.ID("app")),
	)
	b.waitWelcome()
	if id := b.sessionID(); id == idB {
		t.Errorf("signing in again reused the revoked session %s", id)
	}

	// A picture of the signed-in dashboard with both devices, at desktop and
	// at phone width, kept in testdata/artifacts (not committed).
	a.do("list both devices", stepTimeout, chromedp.Click(chromedp.ID("devices-refresh")))
	a.waitJS("two devices", stepTimeout, `document.querySelectorAll('#devices-list li').length === 2`)
	screenshots(t, a)
	a.noProblems()
	b.noProblems()
}

func TestSignOutEverywhereElse(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverTuning{})
	a := newDevice(t, "device A")
	b := newDevice(t, "device B")
	a.signIn(srv.URL)
	b.signIn(srv.URL)
	// A second tab of B: every socket of the revoked session must close.
	b2 := b.newTab("device B, tab 2")
	b2.open(srv.URL)

	a.do("sign out everywhere else", stepTimeout, chromedp.Click(chromedp.ID("revoke-others")))
	b.waitEnded(liveTimeout, "Signed out (revoked)")
	b2.waitEnded(liveTimeout, "Signed out (revoked)")

	a.waitJS("only this device left", stepTimeout,
		`document.querySelectorAll('#devices-list li').length === 1 && document.querySelector('#devices-list li').dataset.current === 'true'`)
	if st := eval[string](a, `document.getElementById('ws-status').dataset.state`); st != "open" {
		t.Errorf("A's socket state = %q, want open", st)
	}
	for _, tb := range []*tab{a, b, b2} {
		tb.noProblems()
	}
}

func TestPreferenceReachesOtherTabs(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverTuning{})
	one := newDevice(t, "tab 1")
	one.signIn(srv.URL)
	two := one.newTab("tab 2")
	two.open(srv.URL)
	if one.sessionID() != two.sessionID() {
		t.Fatalf("two tabs of one browser show different sessions")
	}

	// The theme goes over the socket (session.update) ...
	one.do("choose dark theme", stepTimeout, chromedp.SetValue(chromedp.ID("theme"), "dark"))
	eval[bool](one, `document.getElementById('theme').dispatchEvent(new Event('change', {bubbles: true}))`)
	two.waitJS("dark theme in tab 2", liveTimeout,
		`document.documentElement.dataset.theme === 'dark' && document.getElementById('theme').value === 'dark'`)
	if got := eval[string](two, `JSON.parse(document.getElementById('s-data').textContent).theme`); got != "dark" {
		t.Errorf("tab 2 session data theme = %q, want dark", got)
	}
	entry := eval[string](two, `document.querySelector('#event-log li[data-type="session.updated"] .log-body').textContent`)
	if !strings.Contains(entry, `"source":"websocket"`) {
		t.Errorf("tab 2 session.updated = %s, want source websocket", entry)
	}
	one.waitJS("ack in tab 1", stepTimeout, `document.querySelector('#event-log li[data-type="ack"]') !== null`)
	// Dark really is dark.
	bg := eval[string](two, `getComputedStyle(document.body).backgroundColor`)
	if bg != "rgb(16, 20, 28)" {
		t.Errorf("tab 2 background with the dark theme = %s", bg)
	}

	// ... and the display name over HTTP (PATCH /auth/session).
	two.do("set display name", stepTimeout,
		chromedp.SendKeys(chromedp.ID("display-name"), "Alice Liddell"),
		chromedp.Click(chromedp.ID("display-name-save")),
	)
	one.waitJS("display name in tab 1", liveTimeout,
		`document.getElementById('s-user').textContent === 'Alice Liddell (`+testUser+`)'`)
	entry = eval[string](one, `document.querySelector('#event-log li[data-type="session.updated"] .log-body').textContent`)
	if !strings.Contains(entry, `"source":"http"`) || !strings.Contains(entry, "Alice Liddell") {
		t.Errorf("tab 1 session.updated = %s, want source http with the name", entry)
	}
	// A new tab reads the preferences from the session.
	three := one.newTab("tab 3")
	three.open(srv.URL)
	if got := eval[string](three, `document.getElementById('display-name').value + '|' + document.documentElement.dataset.theme`); got != "Alice Liddell|dark" {
		t.Errorf("a new tab shows %q, want the saved preferences", got)
	}
	for _, tb := range []*tab{one, two, three} {
		tb.noProblems()
	}
}

func TestSessionExpiryIsShown(t *testing.T) {
	t.Parallel()
	// Short, but long enough that a slow sign-in on a busy machine still
	// connects before the warning is due.
	srv := startServer(t, serverTuning{absolute: 8 * time.Second, expiringLead: 5 * time.Second})
	a := newDevice(t, "device A")
	a.signIn(srv.URL)
	a.waitJS("expiring warning", 12*time.Second,
		`!document.getElementById('expiring').hidden && /expires in|expiring now/.test(document.getElementById('expiring-text').textContent)`)
	// The warning names the session's (absolute) deadline, while the socket
	// is still open.
	if st := eval[string](a, `document.getElementById('ws-status').dataset.state`); st != "open" {
		t.Errorf("socket state with the warning shown = %q, want open", st)
	}
	warned := eval[string](a, `JSON.parse(document.querySelector('#event-log li[data-type="session.expiring"] .log-body').textContent).data.expires_at`)
	welcome := eval[string](a, `JSON.parse(document.querySelector('#event-log li[data-type="welcome"] .log-body').textContent).data.session.absolute_expires_at`)
	wt, err1 := time.Parse(time.RFC3339Nano, warned)
	at, err2 := time.Parse(time.RFC3339Nano, welcome)
	if err1 != nil || err2 != nil || !wt.Equal(at) {
		t.Errorf("session.expiring expires_at = %q, want the absolute deadline %q", warned, welcome)
	}
	a.waitEnded(12*time.Second, "Session expired")
	closeEntry := eval[string](a, `document.querySelector('#event-log li[data-kind="close"] .log-body').textContent`)
	if !strings.Contains(closeEntry, `"code":4401`) || !strings.Contains(closeEntry, "session_expired") {
		t.Errorf("close entry = %s, want 4401 session_expired", closeEntry)
	}
	a.noProblems()
}

func TestSignOutEndsEveryTab(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverTuning{})
	one := newDevice(t, "tab 1")
	one.signIn(srv.URL)
	two := one.newTab("tab 2")
	two.open(srv.URL)

	one.do("sign out", stepTimeout,
		chromedp.Click(chromedp.ID("signout")),
		chromedp.WaitVisible(chromedp.ID("signin")),
	)
	// The other tab of the session learns it at once from its socket.
	two.waitEnded(liveTimeout, "Signed out (revoked)")
	if st := eval[string](one, `document.getElementById('ws-status').dataset.state`); st != "idle" {
		t.Errorf("tab 1 socket state after sign-out = %q, want idle", st)
	}
	cookies, err := chromedp.Call(one.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{srv.URL + "/"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cookies.Cookies {
		if c.Name == "sb_session" {
			t.Errorf("the session cookie survived sign-out")
		}
	}
	// A reload shows the sign-in form: the session is gone on the server.
	one.do("reload", stepTimeout, chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("signin")))
	one.noProblems()
	two.noProblems()
}

func TestServerShutdownReconnects(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverTuning{})
	a := newDevice(t, "device A")
	a.signIn(srv.URL)
	srv.stop()
	a.waitJS("1001 server_shutdown logged", stepTimeout,
		`[...document.querySelectorAll('#event-log li[data-kind="close"] .log-body')].some(
			(e) => e.textContent.includes('"code":1001') && e.textContent.includes('server_shutdown'))`)
	// The page keeps the session on screen and tries again, with backoff.
	a.waitJS("reconnecting", stepTimeout,
		`document.getElementById('ws-status').dataset.state === 'reconnecting' && !document.getElementById('app').hidden`)
	if txt := eval[string](a, `document.getElementById('ws-status').textContent`); !strings.Contains(txt, "Reconnecting in") && txt != "Connecting…" {
		t.Errorf("status while the server is away = %q", txt)
	}

	// A new server comes up at the same address without the session (the
	// memory backend forgot it): the refused upgrade is a bare 1006, so the
	// page asks GET /auth/session, learns the session is gone, and stops.
	startServer(t, serverTuning{addr: strings.TrimPrefix(srv.URL, "http://")})
	a.waitEnded(stepTimeout, "Signed out")
	if d := eval[string](a, `document.getElementById('ended-detail').textContent`); d != "This session is no longer valid." {
		t.Errorf("ended detail = %q", d)
	}
	a.noProblems()
}

// evilPage is a page on another origin that tries to use the victim's cookie
// on the server's WebSocket (cross-site WebSocket hijacking).
const evilPage = `<!doctype html><title>elsewhere</title><script src="/evil.js"></script>`

const evilScript = `
window.seen = [];
const ws = new WebSocket(%q);
ws.onopen = () => seen.push('open');
ws.onmessage = (e) => seen.push('message:' + e.data);
ws.onerror = () => seen.push('error');
ws.onclose = (e) => seen.push('close:' + e.code);
`

func TestCrossSiteWebSocketIsRefused(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverTuning{})
	a := newDevice(t, "victim")
	a.signIn(srv.URL)

	// Same host, another port: another origin, but the same site, so the
	// browser does send the SameSite=Lax cookie with the handshake and only
	// the server's Origin check stands in the way.
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, evilPage)
		case "/evil.js":
			w.Header().Set("Content-Type", "text/javascript")
			fmt.Fprintf(w, evilScript, wsURL)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(evil.Close)

	before := srv.refusedUpgrades(t, "forbidden")
	attacker := a.newTab("attacker page")
	attacker.do("load the attacker's page", stepTimeout, chromedp.Navigate(evil.URL+"/"))
	attacker.waitJS("the socket closed", stepTimeout, `window.seen && window.seen.some((s) => s.startsWith('close:'))`)
	seen := eval[[]string](attacker, `window.seen`)
	for _, s := range seen {
		if s == "open" || strings.HasPrefix(s, "message:") {
			t.Errorf("the cross-site socket got through: %v", seen)
		}
	}
	if got := srv.refusedUpgrades(t, "forbidden") - before; got != 1 {
		t.Errorf("server refused %d upgrades as forbidden, want 1 (page saw %v)", got, seen)
	}
	if l := srv.logs.matching("upgrade refused", "status=403", "origin_not_allowed"); len(l) != 1 {
		t.Errorf("server logged %d refusals for the origin, want 1: %q", len(l), l)
	}
	// The victim's own socket is unharmed.
	if st := eval[string](a, `document.getElementById('ws-status').dataset.state`); st != "open" {
		t.Errorf("victim socket state = %q, want open", st)
	}
}

// screenshots writes full-page screenshots of tb to testdata/artifacts and
// checks that they show a page: not blank, not scrolling sideways.
func screenshots(t *testing.T, a *tab) {
	t.Helper()
	dir := filepath.Join("testdata", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name          string
		width, height int64
	}{{"dashboard.png", 1280, 900}, {"dashboard-360.png", 360, 740}} {
		var shot []byte
		a.do("screenshot "+c.name, stepTimeout,
			chromedp.EmulateViewport(c.width, c.height),
			chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
				var err error
				shot, err = chromedp.FullScreenshot(100)(ctx, t)
				return err
			}),
		)
		if err := os.WriteFile(filepath.Join(dir, c.name), shot, 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(shot))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if n := distinctColours(img); n < 50 {
			t.Errorf("%s has %d distinct colours: blank or broken page", c.name, n)
		}
		if w := img.Bounds().Dx(); int64(w) < c.width {
			t.Errorf("%s is %d px wide, want at least %d", c.name, w, c.width)
		}
		// Readable at phone width: nothing forces horizontal scrolling.
		if sw := eval[int](a, `document.documentElement.scrollWidth`); int64(sw) > c.width {
			t.Errorf("at %d px the page is %d px wide: it scrolls sideways", c.width, sw)
		}
	}
}

func distinctColours(img image.Image) int {
	seen := make(map[uint32]struct{})
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			seen[(r>>8)<<16|(g>>8)<<8|bl>>8] = struct{}{}
		}
	}
	return len(seen)
}
