package dashboard_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/sessionbridge/sessionbridge"
)

// verifyKey asks the admin API whether key is valid.
func (s *testServer) verifyKey(t *testing.T, key string) bool {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"key": key})
	req, err := http.NewRequest(http.MethodPost, s.URL+"/api/v1/keys/verify", strings.NewReader(string(body)))
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
	var v struct {
		Valid bool `json:"valid"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil {
		t.Fatalf("verify: status %d", resp.StatusCode)
	}
	return v.Valid
}

// pageHolds reports whether the page's markup or any of its fields holds s.
func pageHolds(tb *tab, s string) bool {
	return eval[bool](tb, fmt.Sprintf(`document.documentElement.outerHTML.includes(%q) ||
		[...document.querySelectorAll('input')].some((i) => i.value.includes(%q))`, s, s))
}

var apiKey = regexp.MustCompile(`^` + sessionbridge.APIKeyPattern + `$`)

// TestKeysSection: a signed-in user creates a key, sees it once, finds it in
// the list with its scopes, rolls it, and revokes both; the server agrees at
// every step.
func TestKeysSection(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverTuning{})
	a := newDevice(t, "device A")
	a.signIn(srv.URL)
	a.waitJS("empty key list", stepTimeout, `document.getElementById('keys-msg').textContent === 'No API keys yet.'`)

	a.do("create a key", stepTimeout,
		chromedp.SendKeys(chromedp.ID("key-name"), "build bot"),
		chromedp.SetValue(chromedp.ID("key-scopes"), "ws:connect chat.**"),
		chromedp.SetValue(chromedp.ID("key-ttl"), "86400"),
		chromedp.Click(chromedp.ID("key-create")),
	)
	a.waitJS("the new key shown", stepTimeout, `!document.getElementById('key-new').hidden && document.getElementById('key-new-value').value.startsWith('sbk_')`)
	key := eval[string](a, `document.getElementById('key-new-value').value`)
	if !apiKey.MatchString(key) {
		t.Fatalf("the page shows %q, not an API key", key)
	}
	a.waitJS("the key listed", stepTimeout, `document.querySelectorAll('#keys-list li[data-key-id]').length === 1`)
	id := eval[string](a, `document.querySelector('#keys-list li[data-key-id]').dataset.keyId`)
	if !strings.Contains(key, "sbk_"+id+"_") {
		t.Fatalf("the list shows key %s, the new key is another", id)
	}
	row := fmt.Sprintf(`#keys-list li[data-key-id=%q]`, id)
	if got := eval[string](a, `document.querySelector('`+row+` [data-testid=key-label]').textContent`); got != "build bot" {
		t.Errorf("listed name %q", got)
	}
	if got := eval[string](a, `document.querySelector('`+row+` [data-testid=key-scopes-shown]').textContent`); !strings.Contains(got, "ws:connect chat.**") {
		t.Errorf("listed scopes %q", got)
	}
	if got := eval[string](a, `document.querySelector('`+row+` [data-testid=key-meta]').textContent`); !strings.Contains(got, "never used") || !strings.Contains(got, "expires") {
		t.Errorf("listed facts %q", got)
	}
	if eval[bool](a, `document.getElementById('keys-list').textContent.includes('sbk_')`) {
		t.Error("the list shows a key")
	}
	if !srv.verifyKey(t, key) {
		t.Fatal("the server does not know the key the page shows")
	}

	// Copy puts the key on the clipboard, or at least selects it.
	a.do("copy", stepTimeout, chromedp.Click(chromedp.ID("key-copy")))
	a.waitJS("copy answered", stepTimeout, `/copied|selected/.test(document.getElementById('keys-msg').textContent)`)

	// Once dismissed, the key is gone from the page; a used key shows when.
	a.do("dismiss", stepTimeout, chromedp.Click(chromedp.ID("key-dismiss")))
	a.waitJS("panel hidden", stepTimeout, `document.getElementById('key-new').hidden`)
	if pageHolds(a, key) || pageHolds(a, key[len(key)-49:]) {
		t.Fatal("the page still holds the key after it was dismissed")
	}
	a.do("refresh keys", stepTimeout, chromedp.Click(chromedp.ID("keys-refresh")))
	a.waitJS("last use shown", stepTimeout, `document.querySelector('`+row+` [data-testid=key-meta]').textContent.includes('last used')`)

	// Roll: a new key shown once; the old one works through the grace.
	a.do("roll", stepTimeout, chromedp.Click(chromedp.CSS(row+` [data-testid=key-roll]`)))
	a.waitJS("the rolled key shown", stepTimeout, fmt.Sprintf(`!document.getElementById('key-new').hidden &&
		document.getElementById('key-new-value').value.startsWith('sbk_') && document.getElementById('key-new-value').value !== %q`, key))
	rolled := eval[string](a, `document.getElementById('key-new-value').value`)
	a.waitJS("both keys listed", stepTimeout, `document.querySelectorAll('#keys-list li[data-key-id]').length === 2`)
	if !apiKey.MatchString(rolled) || !srv.verifyKey(t, rolled) || !srv.verifyKey(t, key) {
		t.Fatal("after the roll both keys must verify during the grace period")
	}
	a.do("dismiss", stepTimeout, chromedp.Click(chromedp.ID("key-dismiss")))

	// Revoke both: each disappears, and the server refuses it.
	for _, k := range []string{key, rolled} {
		kid := k[len("sbk_") : len("sbk_")+sessionbridge.APIKeyIDLen]
		r := fmt.Sprintf(`#keys-list li[data-key-id=%q]`, kid)
		a.do("revoke", stepTimeout, chromedp.Click(chromedp.CSS(r+` [data-testid=key-revoke]`)))
		a.waitJS("revoked key gone from the list", stepTimeout, fmt.Sprintf(`document.querySelector('%s') === null`, r))
		if srv.verifyKey(t, k) {
			t.Fatalf("key %s still verifies after the page revoked it", kid)
		}
	}
	a.waitJS("empty again", stepTimeout, `document.querySelectorAll('#keys-list li').length === 0`)
	if l := srv.logs.matching(key[len(key)-49:]); len(l) > 0 {
		t.Errorf("the server logged a key secret: %q", l)
	}
	a.noProblems()
}

// TestKeysSectionRefusal: scopes beyond the user's own are refused with the
// server's message and nothing is shown or listed.
func TestKeysSectionRefusal(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverTuning{})
	a := newDevice(t, "device A")
	a.signIn(srv.URL)
	a.waitJS("empty key list", stepTimeout, `document.getElementById('keys-msg').textContent === 'No API keys yet.'`)
	a.do("ask for an admin scope", stepTimeout,
		chromedp.SendKeys(chromedp.ID("key-name"), "too much"),
		chromedp.SetValue(chromedp.ID("key-scopes"), "admin:write"),
		chromedp.Click(chromedp.ID("key-create")),
	)
	a.waitJS("refusal shown", stepTimeout, `document.getElementById('keys-msg').textContent.startsWith('Could not create the key:')`)
	if !eval[bool](a, `document.getElementById('key-new').hidden && document.querySelectorAll('#keys-list li').length === 0`) {
		t.Fatal("a refused key shows up on the page")
	}
	a.noProblems()
}
