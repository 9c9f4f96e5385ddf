package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/keys"
	"github.com/sessionbridge/sessionbridge/memory"
)

const testAdminToken = "admin-token-for-tests"

// sessionToken is a well-formed session token (it names no session).
const sessionToken = "0aAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA"

// countingKeys counts the reads of a key store and fails them while down.
type countingKeys struct {
	sb.KeyStore
	reads atomic.Int32
	down  atomic.Bool
}

func (k *countingKeys) GetKey(ctx context.Context, id string) (*sb.APIKey, error) {
	k.reads.Add(1)
	if k.down.Load() {
		return nil, fmt.Errorf("test: %w", sb.ErrUnavailable)
	}
	return k.KeyStore.GetKey(ctx, id)
}

type fixture struct {
	mgr     *sb.Manager
	tickets *memory.Tickets
	store   *countingKeys
	keys    *keys.Manager
	a       *Authenticator
	now     time.Time
}

func newFixture(t *testing.T, tweak func(*Config)) *fixture {
	t.Helper()
	f := &fixture{now: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}
	clock := func() time.Time { return f.now }
	bus := memory.NewBus()
	f.tickets = &memory.Tickets{Now: clock}
	mgr, err := sb.NewManager(sb.Backend{NodeID: "test", Store: memory.NewStore(bus), Bus: bus, Tickets: f.tickets})
	if err != nil {
		t.Fatal(err)
	}
	f.mgr = mgr
	f.mgr.Now = clock
	f.store = &countingKeys{KeyStore: memory.NewKeyStore(nil)}
	f.keys = &keys.Manager{Store: f.store, Now: clock}
	cfg := Config{Sessions: f.mgr, Keys: f.keys, AdminToken: testAdminToken, Now: clock}
	if tweak != nil {
		tweak(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.a = a
	return f
}

func request(h http.Header, query string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://sb.example/ws?"+query, nil)
	for k, v := range h {
		r.Header[k] = v
	}
	return r
}

func TestExtractPrecedenceAndConflicts(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AllowQueryToken = true })
	other := strings.Replace(sessionToken, "A.", "C.", 1)
	key := "sbk_" + strings.Repeat("a", 60)
	bearer := func(tok string) []string { return []string{"Bearer " + tok} }
	cookie := func(vals ...string) []string {
		var parts []string
		for _, v := range vals {
			parts = append(parts, DefaultCookieName+"="+v)
		}
		return []string{strings.Join(parts, "; ")}
	}
	cases := []struct {
		name   string
		h      http.Header
		query  string
		door   Door
		src    Source
		kind   Kind
		err    error
		cookie bool
		expl   bool
	}{
		{"nothing", nil, "", Upgrade, 0, 0, ErrNoCredentials, false, false},
		{"bearer session", http.Header{"Authorization": bearer(sessionToken)}, "", HTTP, SourceBearer, KindSession, nil, false, true},
		{"lower-case scheme", http.Header{"Authorization": {"bearer   " + sessionToken + "  "}}, "", HTTP, SourceBearer, KindSession, nil, false, true},
		{"bearer jwt", http.Header{"Authorization": bearer("a.b.c")}, "", HTTP, SourceBearer, KindJWT, nil, false, true},
		{"bearer api key", http.Header{"Authorization": bearer(key)}, "", HTTP, SourceBearer, KindAPIKey, nil, false, true},
		{"bearer admin token", http.Header{"Authorization": bearer(testAdminToken)}, "", HTTP, SourceBearer, KindAdmin, nil, false, true},
		{"header", http.Header{HeaderSessionToken: {sessionToken}}, "", HTTP, SourceHeader, KindSession, nil, false, true},
		{"cookie", http.Header{"Cookie": cookie(sessionToken)}, "", HTTP, SourceCookie, KindSession, nil, true, false},
		{"cleared cookie is none", http.Header{"Cookie": cookie("")}, "", HTTP, 0, 0, ErrNoCredentials, false, false},
		{"ticket on upgrade", nil, "ticket=abc", Upgrade, SourceTicket, KindTicket, nil, false, true},
		{"ticket ignored on HTTP", nil, "ticket=abc", HTTP, 0, 0, ErrNoCredentials, false, false},
		{"query token", nil, "session_token=" + sessionToken, Upgrade, SourceQuery, KindSession, nil, false, true},
		{"bearer wins over same header and cookie", http.Header{"Authorization": bearer(sessionToken), HeaderSessionToken: {sessionToken}, "Cookie": cookie(sessionToken)}, "", HTTP, SourceBearer, KindSession, nil, true, true},
		{"header wins over same cookie", http.Header{HeaderSessionToken: {sessionToken}, "Cookie": cookie(sessionToken)}, "", HTTP, SourceHeader, KindSession, nil, true, true},
		{"cookie wins over ticket", http.Header{"Cookie": cookie(sessionToken)}, "ticket=abc", Upgrade, SourceCookie, KindSession, nil, true, true},
		{"basic scheme is not ours", http.Header{"Authorization": {"Basic YTpi"}, "Cookie": cookie(sessionToken)}, "", HTTP, SourceCookie, KindSession, nil, true, false},
		{"empty bearer", http.Header{"Authorization": {"Bearer "}}, "", HTTP, 0, 0, ErrMalformed, false, true},
		{"bearer without token", http.Header{"Authorization": {"Bearer"}}, "", HTTP, 0, 0, ErrMalformed, false, true},
		{"two bearers", http.Header{"Authorization": {"Bearer " + sessionToken, "Bearer " + sessionToken}}, "", HTTP, 0, 0, ErrConflicting, false, true},
		{"bearer and other header", http.Header{"Authorization": bearer(sessionToken), HeaderSessionToken: {other}}, "", HTTP, 0, 0, ErrConflicting, false, true},
		{"header and other cookie", http.Header{HeaderSessionToken: {sessionToken}, "Cookie": cookie(other)}, "", HTTP, 0, 0, ErrConflicting, false, true},
		{"admin bearer and a cookie", http.Header{"Authorization": bearer(testAdminToken), "Cookie": cookie(sessionToken)}, "", HTTP, 0, 0, ErrConflicting, false, true},
		{"two cookies", http.Header{"Cookie": cookie(sessionToken, other)}, "", HTTP, 0, 0, ErrConflicting, false, false},
		{"same cookie twice", http.Header{"Cookie": cookie(sessionToken, sessionToken)}, "", HTTP, SourceCookie, KindSession, nil, true, false},
		{"two tickets", nil, "ticket=a&ticket=b", Upgrade, 0, 0, ErrConflicting, false, true},
		{"empty ticket", nil, "ticket=", Upgrade, 0, 0, ErrMalformed, false, true},
		{"ticket and query token", nil, "ticket=abc&session_token=" + sessionToken, Upgrade, 0, 0, ErrConflicting, false, true},
		{"cookie, ticket and the same query token", http.Header{"Cookie": cookie(sessionToken)}, "ticket=abc&session_token=" + sessionToken, Upgrade, SourceCookie, KindSession, nil, true, true},
		{"query token and other cookie", http.Header{"Cookie": cookie(other)}, "session_token=" + sessionToken, Upgrade, 0, 0, ErrConflicting, false, true},
		{"bad query", nil, "%zz", Upgrade, 0, 0, ErrMalformed, false, true},
		{"oversized bearer", http.Header{"Authorization": bearer(strings.Repeat("x", MaxCredentialLen+1))}, "", HTTP, 0, 0, ErrMalformed, false, true},
		{"oversized cookie", http.Header{"Cookie": cookie(strings.Repeat("x", MaxCredentialLen+1))}, "", HTTP, 0, 0, ErrMalformed, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := f.a.Extract(request(tc.h, tc.query), tc.door)
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if c.Source != tc.src || c.Kind != tc.kind || c.Cookie != tc.cookie || c.Explicit != tc.expl {
				t.Fatalf("credential %+v, want source %v kind %v cookie %v explicit %v", c, tc.src, tc.kind, tc.cookie, tc.expl)
			}
			if err != nil && (c.Token != "" || c.Ticket != "") {
				t.Fatal("a refused credential carries a token")
			}
		})
	}
	// The query token is read only when enabled.
	g := newFixture(t, nil)
	if _, err := g.a.Extract(request(nil, "session_token="+sessionToken), Upgrade); !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("query token while disabled: %v", err)
	}
}

func TestOrigins(t *testing.T) {
	if _, err := ParseOrigins([]string{"https://app.example.com/path"}); err == nil {
		t.Fatal("an origin with a path was accepted")
	}
	for _, bad := range []string{"app.example.com", "ftp://x.example", "https://*.com", "https://a.*.example.com", "https://user@x.example", "*"} {
		if _, err := ParseOrigins([]string{bad}); err == nil {
			t.Errorf("ParseOrigins(%q) accepted", bad)
		}
	}
	listed, err := ParseOrigins([]string{"https://app.example.com", "https://*.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	none, err := ParseOrigins(nil)
	if err != nil {
		t.Fatal(err)
	}
	const host = "sb.example:8080"
	own := "http://sb.example:8080"
	cases := []struct {
		origin       string // "" for no Origin header
		method       string
		cookie       bool
		listedUp     bool // CheckUpgrade with the list
		noneUp       bool // CheckUpgrade without a list
		listedReq    bool // CheckRequest with the list
		secFetchSite string
	}{
		{own, "GET", true, true, true, true, ""},
		{"HTTP://SB.EXAMPLE:8080", "GET", true, true, true, true, ""},
		{"https://sb.example:8080", "GET", true, true, true, true, ""}, // a TLS proxy in front
		{"https://app.example.com", "POST", true, true, false, true, ""},
		{"https://app.example.com:443", "POST", true, true, false, true, ""},
		{"https://a.b.example.org", "POST", true, true, false, true, "cross-site"},
		{"https://example.org", "POST", true, false, false, false, ""},
		{"http://a.example.org", "POST", true, false, false, false, ""},
		{"https://evil.example", "POST", true, false, false, false, "cross-site"},
		{"https://evil.example", "POST", false, false, true, false, ""},
		{"null", "POST", true, false, false, false, ""},
		{"", "POST", true, false, false, true, ""},
		{"", "POST", false, true, true, true, ""},
		{"https://evil.example", "GET", true, false, false, true, ""},
		{"https://evil.example", "POST", true, false, false, true, "same-origin"},
		{own, "POST", true, true, true, false, "same-site"},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s %s cookie=%v %s", tc.method, tc.origin, tc.cookie, tc.secFetchSite), func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "http://"+host+"/x", nil)
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if tc.secFetchSite != "" {
				r.Header.Set("Sec-Fetch-Site", tc.secFetchSite)
			}
			if got := listed.CheckUpgrade(r, tc.cookie) == nil; got != tc.listedUp {
				t.Errorf("CheckUpgrade with a list: %v, want %v", got, tc.listedUp)
			}
			if got := none.CheckUpgrade(r, tc.cookie) == nil; got != tc.noneUp {
				t.Errorf("CheckUpgrade without a list: %v, want %v", got, tc.noneUp)
			}
			if got := listed.CheckRequest(r) == nil; got != tc.listedReq {
				t.Errorf("CheckRequest: %v, want %v", got, tc.listedReq)
			}
		})
	}
	// Explicit credentials skip the request check; a Basic Authorization,
	// which browsers attach by themselves, does not.
	r := httptest.NewRequest("POST", "http://"+host+"/x", nil)
	r.Header.Set("Origin", "https://evil.example")
	r.Header.Set("Authorization", "Basic YTpi")
	if listed.CheckRequest(r) == nil {
		t.Error("a Basic Authorization skipped the cross-origin check")
	}
	r.Header.Set("Authorization", "Bearer x")
	if listed.CheckRequest(r) != nil {
		t.Error("a Bearer request was checked for its origin")
	}
	r.Header.Del("Authorization")
	r.Header.Set(HeaderSessionToken, "x")
	if listed.CheckRequest(r) != nil {
		t.Error("an X-Session-Token request was checked for its origin")
	}
	// Several Origin headers are refused.
	r = httptest.NewRequest("GET", "http://"+host+"/ws", nil)
	r.Header["Origin"] = []string{own, own}
	if listed.CheckUpgrade(r, true) == nil {
		t.Error("two Origin headers accepted")
	}
}

func TestAuthenticateAPIKey(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	key, k, err := f.keys.Create(ctx, keys.NewKey{UserID: "svc", Name: "ci", Scopes: []string{"chat.*", ScopeAdminRead}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.a.Extract(request(http.Header{"Authorization": {"Bearer " + key}}, ""), HTTP)
	if err != nil || c.Kind != KindAPIKey {
		t.Fatalf("extract: %+v %v", c, err)
	}
	res, err := f.a.Authenticate(ctx, c, "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	p := res.Principal
	if p.Method != sb.AuthAPIKey || p.UserID != "svc" || p.KeyID != k.ID || !p.ExpiresAt.Equal(k.ExpiresAt) ||
		len(p.Scopes) != 2 || p.Scopes[0] != "chat.*" || p.SessionID != "" || res.Credential.Token != "" {
		t.Fatalf("principal %+v, result %+v", p, res)
	}
	if !Grants(p, ScopeAdminRead) || Grants(p, ScopeAdminWrite) {
		t.Fatal("admin scopes of the key")
	}

	// A mistyped key (one character changed) is refused without a read.
	reads := f.store.reads.Load()
	typo := key[:20] + string(key[20]^1) + key[21:]
	for _, bad := range []string{typo, key + "x", "sbk_short"} {
		_, err := f.a.Authenticate(ctx, Credential{Source: SourceBearer, Kind: KindAPIKey, Token: bad}, "")
		if !errors.Is(err, sb.ErrInvalidToken) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
	if n := f.store.reads.Load(); n != reads {
		t.Fatalf("mistyped keys cost %d store reads", n-reads)
	}

	// Store away: fail closed.
	f.store.down.Store(true)
	if _, err := f.a.Authenticate(ctx, c, ""); !errors.Is(err, sb.ErrUnavailable) {
		t.Fatalf("store down: %v", err)
	}
	f.store.down.Store(false)

	// Expired and revoked keys are refused.
	f.now = f.now.Add(time.Hour)
	if _, err := f.a.Authenticate(ctx, c, ""); !errors.Is(err, sb.ErrInvalidToken) {
		t.Fatalf("expired key: %v", err)
	}
	f.now = f.now.Add(-time.Hour)
	if _, err := f.keys.Delete(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.Authenticate(ctx, c, ""); !errors.Is(err, sb.ErrInvalidToken) {
		t.Fatalf("revoked key: %v", err)
	}
}

func TestAPIKeyTicketReadsTheKey(t *testing.T) {
	f := newFixture(t, nil)
	tickets := f.tickets
	ctx := context.Background()
	_, k, err := f.keys.Create(ctx, keys.NewKey{UserID: "svc", Name: "ci", Scopes: []string{"a.b"}})
	if err != nil {
		t.Fatal(err)
	}
	issue := func(tk sb.Ticket) Credential {
		s, err := tickets.Issue(ctx, tk, 0)
		if err != nil {
			t.Fatal(err)
		}
		c, err := f.a.Extract(request(nil, "ticket="+url.QueryEscape(s)), Upgrade)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	res, err := f.a.Authenticate(ctx, issue(sb.Ticket{UserID: "svc", Method: sb.AuthAPIKey, KeyID: k.ID, Scopes: []string{"stale"}}), "")
	if err != nil || res.Principal.KeyID != k.ID || res.Principal.Method != sb.AuthAPIKey || res.Principal.Scopes[0] != "a.b" {
		t.Fatalf("api key ticket: %+v %v", res, err)
	}
	if _, err := f.a.Authenticate(ctx, issue(sb.Ticket{UserID: "mallory", Method: sb.AuthAPIKey, KeyID: k.ID}), ""); !errors.Is(err, sb.ErrInvalidToken) {
		t.Fatalf("ticket naming another user's key: %v", err)
	}
	if _, err := f.keys.Delete(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.Authenticate(ctx, issue(sb.Ticket{UserID: "svc", Method: sb.AuthAPIKey, KeyID: k.ID}), ""); !errors.Is(err, sb.ErrInvalidToken) {
		t.Fatalf("ticket of a revoked key: %v", err)
	}
}

func TestAdminToken(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	c, err := f.a.Extract(request(http.Header{"Authorization": {"Bearer " + testAdminToken}}, ""), HTTP)
	if err != nil || c.Kind != KindAdmin {
		t.Fatalf("extract: %+v %v", c, err)
	}
	res, err := f.a.Authenticate(ctx, c, "")
	if err != nil || res.Principal.Method != MethodAdmin || !Grants(res.Principal, ScopeAdminWrite) {
		t.Fatalf("admin: %+v %v", res, err)
	}
	// Near misses are other kinds of credential, and refused as those.
	for _, tok := range []string{testAdminToken + "x", strings.ToUpper(testAdminToken)} {
		c, err := f.a.Extract(request(http.Header{"Authorization": {"Bearer " + tok}}, ""), HTTP)
		if err != nil || c.Kind == KindAdmin {
			t.Fatalf("%q: %+v %v", tok, c, err)
		}
		if _, err := f.a.Authenticate(ctx, c, ""); !errors.Is(err, sb.ErrInvalidToken) {
			t.Fatalf("%q: %v", tok, err)
		}
	}
	// Without an admin token nothing is one.
	g := newFixture(t, func(c *Config) { c.AdminToken = "" })
	if c, _ := g.a.Extract(request(http.Header{"Authorization": {"Bearer " + testAdminToken}}, ""), HTTP); c.Kind == KindAdmin {
		t.Fatal("admin kind without an admin token")
	}
}

func TestGrants(t *testing.T) {
	for _, tc := range []struct {
		p    sb.Principal
		s    string
		want bool
	}{
		{sb.Principal{Method: MethodAdmin}, ScopeAdminWrite, true},
		{sb.Principal{Method: sb.AuthAPIKey, Scopes: []string{ScopeAdminRead}}, ScopeAdminRead, true},
		{sb.Principal{Method: sb.AuthAPIKey, Scopes: []string{ScopeAdminRead}}, ScopeAdminWrite, false},
		{sb.Principal{Method: sb.AuthJWT, Scopes: []string{ScopeAdminWrite}}, ScopeAdminWrite, true},
		{sb.Principal{Method: sb.AuthAPIKey, Scopes: []string{"**"}}, ScopeAdminRead, false},
		{sb.Principal{Method: sb.AuthAPIKey, Scopes: []string{"*"}}, ScopeAdminRead, false},
		{sb.Principal{Method: sb.AuthAPIKey, Scopes: []string{ScopeAdminRead, "!admin:read"}}, ScopeAdminRead, false},
		{sb.Principal{Method: sb.AuthSession, Scopes: []string{ScopeAdminRead}}, ScopeAdminRead, false},
	} {
		if got := Grants(&tc.p, tc.s); got != tc.want {
			t.Errorf("Grants(%+v, %s) = %v", tc.p, tc.s, got)
		}
	}
	if Grants(nil, ScopeAdminRead) {
		t.Error("nil principal granted")
	}
	if AdminScope("GET") != ScopeAdminRead || AdminScope("HEAD") != ScopeAdminRead || AdminScope("DELETE") != ScopeAdminWrite {
		t.Error("AdminScope")
	}
}

func TestHanded(t *testing.T) {
	f := newFixture(t, nil)
	res := &Result{Principal: &sb.Principal{Method: sb.AuthSession, UserID: "alice"}}
	r := request(nil, "")
	if _, ok := f.a.Handed(r, Upgrade); ok {
		t.Fatal("handed without a result")
	}
	r = r.WithContext(NewContext(r.Context(), res))
	if got, ok := f.a.Handed(r, Upgrade); !ok || got != res {
		t.Fatal("result not handed")
	}
	// A query credential is the upgrade's own to check.
	q := request(nil, "ticket=abc")
	q = q.WithContext(NewContext(q.Context(), res))
	if _, ok := f.a.Handed(q, Upgrade); ok {
		t.Fatal("handed past a ticket")
	}
	if _, ok := f.a.Handed(q, HTTP); !ok {
		t.Fatal("a ticket matters on the upgrade only")
	}
}

func TestNew(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("no Manager accepted")
	}
	if _, err := New(Config{Sessions: &sb.Manager{}}); err == nil {
		t.Fatal("a Manager without a backend accepted")
	}
	f := newFixture(t, nil)
	if f.a.CookieName() != DefaultCookieName || !f.a.AdminEnabled() || f.a.JWT() != nil {
		t.Fatal("defaults")
	}
	g := newFixture(t, func(c *Config) { c.Keys, c.AdminToken, c.CookieName = nil, "", "app_session" })
	if g.a.CookieName() != "app_session" || g.a.AdminEnabled() {
		t.Fatal("settings")
	}
}
