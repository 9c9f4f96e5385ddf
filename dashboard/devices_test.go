package dashboard_test

import (
	"context"
	"fmt"
	"regexp"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"
)

// The page's own socket is counted in "My devices" even when the device list
// it asked for first was computed before that socket registered: the welcome
// asks for the list again, and that request is not lost because the first is
// still in flight.
func TestDeviceListCountsOwnSocket(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverTuning{})
	a := newDevice(t, "device A")

	// The first GET /auth/sessions is answered as if the server had read
	// the presence just before the socket registered (every count 0), and
	// only once the welcome is in: the race a slower store makes likely.
	welcomed := make(chan struct{})
	ctx, cancel := context.WithCancel(a.ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{
		{URLPattern: "*/auth/sessions", RequestStage: fetch.RequestStageResponse},
	}}); err != nil {
		t.Fatal(err)
	}
	counts := regexp.MustCompile(`"connections":\d+`)
	wg.Add(1)
	go func() {
		defer wg.Done()
		first := true
		for ev, err := range chromedp.Events(ctx, fetch.RequestPaused) {
			if err != nil {
				return
			}
			if !first {
				_, _ = chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
				continue
			}
			first = false
			body, err := chromedp.Call(ctx, fetch.GetResponseBody, fetch.GetResponseBodyParams{RequestID: ev.RequestID})
			if err != nil {
				t.Errorf("reading the first device list: %v", err)
				return
			}
			select {
			case <-welcomed:
			case <-ctx.Done():
				return
			}
			stale := counts.ReplaceAll(body.Body, []byte(`"connections":0`))
			if _, err := chromedp.Call(ctx, fetch.FulfillRequest, fetch.FulfillRequestParams{
				RequestID: ev.RequestID, ResponseCode: ev.ResponseStatusCode, ResponseHeaders: ev.ResponseHeaders, Body: stale,
			}); err != nil {
				t.Errorf("answering the first device list: %v", err)
			}
		}
	}()

	a.signIn(srv.URL)
	close(welcomed)
	id := a.sessionID()
	// liveTimeout, well under the page's 10 s poll: the list must follow the
	// socket because of the welcome, not because a poll came by.
	a.waitJS("this device listed with its own connection", liveTimeout, fmt.Sprintf(
		`(() => { const li = document.querySelector('li[data-session-id=%q]');
			return li && li.querySelector('[data-testid=device-conns]').dataset.count === '1'; })()`, id))
	a.noProblems()
}
