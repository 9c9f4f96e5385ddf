package dashboard_test

// The browser half of the end-to-end tests: one headless Chromium shared by
// every test (started on first use, stopped by TestMain), a fresh browser
// context per "device" and tabs inside it.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"
)

// browser is the Chromium process shared by the tests of this package.
// Starting one per test would cost seconds each.
var browser struct {
	once   sync.Once
	ctx    context.Context // the browser's first tab; parent of every device
	stop   func()
	dir    string
	err    error
	binary string
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(runner{m})
}

// runner stops the shared browser after the tests and before goleak looks
// for goroutines left behind.
type runner struct{ m *testing.M }

func (r runner) Run() int {
	code := r.m.Run()
	if browser.stop != nil {
		browser.stop()
	}
	if browser.dir != "" {
		os.RemoveAll(browser.dir)
	}
	return code
}

// chromiumCandidates are the names and paths where Chromium is looked for;
// SESSIONBRIDGE_CHROMIUM, when set, wins.
var chromiumCandidates = []string{"chromium", "/usr/bin/chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

func findChromium() (string, error) {
	if p := os.Getenv("SESSIONBRIDGE_CHROMIUM"); p != "" {
		if full, err := exec.LookPath(p); err == nil {
			return full, nil
		}
		return "", fmt.Errorf("SESSIONBRIDGE_CHROMIUM=%s is not an executable", p)
	}
	for _, c := range chromiumCandidates {
		if full, err := exec.LookPath(c); err == nil {
			return full, nil
		}
	}
	return "", errors.New("Chromium not found (looked for " + strings.Join(chromiumCandidates, ", ") +
		"); the dashboard's browser tests need it: install it with `apt-get install chromium` " +
		"(scripts/test does) or point SESSIONBRIDGE_CHROMIUM at a Chrome binary")
}

// startBrowser returns the shared browser, starting it on first use. A test
// that needs it fails, never skips, when Chromium is missing.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	browser.once.Do(func() {
		bin, err := findChromium()
		if err != nil {
			browser.err = err
			return
		}
		browser.binary = bin
		dir, err := os.MkdirTemp("", "dashboard-chromium-")
		if err != nil {
			browser.err = err
			return
		}
		browser.dir = dir
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(bin),
			chromedp.UserDataDir(dir),
			chromedp.NoSandbox,
			chromedp.DisableGPU,
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
			chromedp.Flag("no-first-run", true),
			chromedp.Flag("disable-quic", true),
			chromedp.WindowSize(1280, 900),
		)
		allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancelCtx := chromedp.NewContext(allocCtx)
		browser.ctx = ctx
		browser.stop = func() {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			chromedp.Cancel(cctx)
			cancelCtx()
			cancelAlloc()
		}
		// The first Run starts the process; it must not carry a timeout,
		// which would stop the browser with it.
		if err := chromedp.Do(ctx); err != nil {
			browser.err = fmt.Errorf("starting %s: %w", bin, err)
		}
	})
	if browser.err != nil {
		t.Fatalf("browser tests cannot run: %v", browser.err)
	}
	return browser.ctx
}

// tab is one browser tab with the deadline of the current step.
type tab struct {
	t    *testing.T
	name string
	ctx  context.Context // the tab's own context, without deadline
	// close closes the tab, as a user closing it would.
	close func()
	// console collects exceptions and Content-Security-Policy reports, so
	// that tests can assert the page ran cleanly.
	mu      sync.Mutex
	console []string
}

// newDevice opens a tab in a new browser context: a separate cookie jar, as
// a second device would have.
func newDevice(t *testing.T, name string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(startBrowser(t), chromedp.WithNewBrowserContext())
	return openTab(t, name, ctx, cancel)
}

// newTab opens another tab in the browser context of d: same cookies, same
// session.
func (d *tab) newTab(name string) *tab {
	d.t.Helper()
	ctx, cancel := chromedp.NewContext(d.ctx)
	return openTab(d.t, name, ctx, cancel)
}

func openTab(t *testing.T, name string, ctx context.Context, cancel context.CancelFunc) *tab {
	t.Helper()
	tb := &tab{t: t, name: name, ctx: ctx}
	t.Cleanup(cancel)
	tb.close = func() {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		if err := chromedp.Cancel(cctx); err != nil {
			t.Errorf("%s: closing the tab: %v", name, err)
		}
	}
	// Creates the target; no deadline here either, since the tab lives as
	// long as the context of its first Run.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("%s: opening tab: %v", name, err)
	}
	msgs := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() || strings.Contains(m.Text, "Content Security Policy") {
				tb.mu.Lock()
				tb.console = append(tb.console, m.String())
				tb.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return tb
}

// problems returns the exceptions and CSP violations the tab reported.
func (tb *tab) problems() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]string(nil), tb.console...)
}

// do runs actions with a deadline, failing the test on error.
func (tb *tab) do(what string, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tb.t.Fatalf("%s: %s: %v%s", tb.name, what, err, tb.dump())
	}
}

// waitJS polls a JavaScript predicate until it is truthy or timeout passes.
func (tb *tab) waitJS(what string, timeout time.Duration, predicate string) {
	tb.t.Helper()
	tb.do(what, timeout+time.Second, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(20*time.Millisecond)))
}

// eval evaluates a JavaScript expression and returns its value.
func eval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		tb.t.Fatalf("%s: evaluating %s: %v", tb.name, expr, err)
	}
	return v
}

// dump describes the page's state for failure messages.
func (tb *tab) dump() string {
	ctx, cancel := context.WithTimeout(tb.ctx, 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
		const v = (id) => { const e = document.getElementById(id); return e ? e.textContent.trim() : '(none)'; };
		const log = [...document.querySelectorAll('#event-log li')].slice(0, 8).map((li) => li.textContent.replace(/\s+/g, ' ').trim());
		return 'view=' + document.body.dataset.view + ' status=' + v('ws-status') + ' signin-error=' + v('signin-error') +
			' ended=' + v('ended-title') + ' devices-msg=' + v('devices-msg') + '\nlog:\n  ' + log.join('\n  ');
	})()`))
	if err != nil {
		return "\n(page state unavailable: " + err.Error() + ")"
	}
	return "\npage state: " + s + "\nconsole problems: " + strings.Join(tb.problems(), "; ")
}
