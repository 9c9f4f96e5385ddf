package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/audit"
	"github.com/sessionbridge/sessionbridge/keys"
	"github.com/sessionbridge/sessionbridge/memory"
)

// flakyKeys is a KeyStore that answers ErrUnavailable while down is set,
// and counts its reads of one key.
type flakyKeys struct {
	sessionbridge.KeyStore
	down  atomic.Bool
	reads atomic.Int32
}

func (f *flakyKeys) err() error {
	if f.down.Load() {
		return sessionbridge.ErrUnavailable
	}
	return nil
}

func (f *flakyKeys) CreateKey(ctx context.Context, k *sessionbridge.APIKey) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.KeyStore.CreateKey(ctx, k)
}

func (f *flakyKeys) GetKey(ctx context.Context, id string) (*sessionbridge.APIKey, error) {
	f.reads.Add(1)
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.KeyStore.GetKey(ctx, id)
}

func (f *flakyKeys) UpdateKey(ctx context.Context, k *sessionbridge.APIKey, prev uint64, ev sessionbridge.Event) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.KeyStore.UpdateKey(ctx, k, prev, ev)
}

func (f *flakyKeys) DeleteKey(ctx context.Context, id string, ev sessionbridge.Event) (*sessionbridge.APIKey, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.KeyStore.DeleteKey(ctx, id, ev)
}

func (f *flakyKeys) ListUserKeys(ctx context.Context, userID string) ([]*sessionbridge.APIKey, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.KeyStore.ListUserKeys(ctx, userID)
}

func (f *flakyKeys) RollKey(ctx context.Context, oldID string, oldExpiresAt time.Time, next *sessionbridge.APIKey, ev sessionbridge.Event) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.KeyStore.RollKey(ctx, oldID, oldExpiresAt, next, ev)
}

// keyFixture is a fixture whose API manages keys on a memory key store,
// with audit records collected in logs.
type keyFixture struct {
	*fixture
	keys *flakyKeys
	logs *lockedBuffer
}

func newKeyFixture(t *testing.T, opts ...func(*fixture)) *keyFixture {
	t.Helper()
	kf := &keyFixture{keys: &flakyKeys{KeyStore: memory.NewKeyStore(nil)}, logs: &lockedBuffer{}}
	logger := slog.New(slog.NewJSONHandler(kf.logs, nil))
	kf.fixture = newFixture(t, append([]func(*fixture){func(f *fixture) {
		f.api.Keys = &keys.Manager{Store: kf.keys, Now: f.clock.Now}
		f.api.Audit = audit.New(logger)
		f.api.Logger = logger
	}}, opts...)...)
	return kf
}

var keyPattern = regexp.MustCompile(`^` + sessionbridge.APIKeyPattern + `$`)

// createKey makes a key through the admin API and returns the answer.
func (f *keyFixture) createKey(body string) issuedKey {
	f.t.Helper()
	resp := f.do(req{method: "POST", path: "/api/v1/keys", header: adminHeader(), body: body})
	expect(f.t, resp, http.StatusCreated)
	var ik issuedKey
	resp.json(f.t, &ik)
	return ik
}

func (f *keyFixture) verify(key string) keyVerifyResponse {
	f.t.Helper()
	b, _ := json.Marshal(map[string]string{"key": key})
	resp := f.do(req{method: "POST", path: "/api/v1/keys/verify", header: adminHeader(), body: string(b)})
	expect(f.t, resp, http.StatusOK)
	var v keyVerifyResponse
	resp.json(f.t, &v)
	return v
}

func (f *keyFixture) count(userID string) int {
	f.t.Helper()
	list, err := f.keys.ListUserKeys(context.Background(), userID)
	if err != nil {
		f.t.Fatal(err)
	}
	return len(list)
}

func TestAdminKeyLifecycle(t *testing.T) {
	f := newKeyFixture(t)
	resp := f.do(req{method: "POST", path: "/api/v1/keys", header: adminHeader(),
		body: `{"user_id":"carol","name":"ci deploy","scopes":["ws:connect","chat.**","!chat.admin"],"limits":{"max_connections":5,"dry_run":["max_connections"]},"meta":{"team":"ops","env":"prod"},"ttl_seconds":86400}`})
	expect(t, resp, http.StatusCreated)
	var ik issuedKey
	resp.json(t, &ik)
	if !keyPattern.MatchString(ik.Key) || !strings.Contains(ik.Key, ik.ID) {
		t.Fatalf("key %q does not have the published layout or does not hold its ID %q", ik.Key, ik.ID)
	}
	if resp.Header.Get("Location") != "/api/v1/keys/"+ik.ID || resp.Header.Get("ETag") != `"1"` {
		t.Errorf("Location %q ETag %q", resp.Header.Get("Location"), resp.Header.Get("ETag"))
	}
	if bytesContainAny(resp.body, "secret_hash", "SecretHash") {
		t.Errorf("the answer shows the secret's hash: %s", resp.body)
	}
	want := f.clock.Now().Add(24 * time.Hour)
	if ik.UserID != "carol" || ik.Name != "ci deploy" || !slices.Equal(ik.Scopes, []string{"ws:connect", "chat.**", "!chat.admin"}) ||
		ik.Limits.MaxConnections != 5 || string(ik.Meta) != `{"team":"ops","env":"prod"}` || ik.ExpiresAt == nil || !ik.ExpiresAt.Equal(want) ||
		ik.LastUsedAt != nil || ik.LastIP != nil || ik.Version != 1 {
		t.Fatalf("created key %s", resp.body)
	}

	// The key is shown once: reading it back shows everything but the key.
	resp = f.do(req{method: "GET", path: "/api/v1/keys/" + ik.ID, header: adminHeader()})
	expect(t, resp, http.StatusOK)
	if strings.Contains(string(resp.body), ik.Key[len(ik.Key)-49:]) || resp.Header.Get("ETag") != `"1"` {
		t.Fatalf("GET shows the secret or lacks the ETag: %s", resp.body)
	}
	resp = f.do(req{method: "GET", path: "/api/v1/users/carol/keys", header: adminHeader()})
	expect(t, resp, http.StatusOK)
	var list keyList
	resp.json(t, &list)
	if len(list.Keys) != 1 || list.Keys[0].ID != ik.ID {
		t.Fatalf("list %s", resp.body)
	}
	resp = f.do(req{method: "GET", path: "/api/v1/users/nobody/keys", header: adminHeader()})
	expect(t, resp, http.StatusOK)
	if strings.TrimSpace(string(resp.body)) != `{"keys":[]}` {
		t.Errorf("empty list %s", resp.body)
	}

	// PATCH: merge patch of meta, replacement of the rest, If-Match.
	resp = f.do(req{method: "PATCH", path: "/api/v1/keys/" + ik.ID, header: map[string]string{"Authorization": "Bearer " + adminToken, "If-Match": `"1"`, "Content-Type": "application/merge-patch+json"},
		body: `{"name":"ci","scopes":["ws:connect"],"meta":{"env":null,"tier":2}}`})
	expect(t, resp, http.StatusOK)
	var kv keyView
	resp.json(t, &kv)
	if kv.Name != "ci" || !slices.Equal(kv.Scopes, []string{"ws:connect"}) || string(kv.Meta) != `{"team":"ops","tier":2}` ||
		kv.Limits.MaxConnections != 5 || kv.Version != 2 || resp.Header.Get("ETag") != `"2"` {
		t.Fatalf("patched key %s", resp.body)
	}
	resp = f.do(req{method: "PATCH", path: "/api/v1/keys/" + ik.ID, header: map[string]string{"Authorization": "Bearer " + adminToken, "If-Match": `"1"`}, body: `{"name":"stale"}`})
	expect(t, resp, http.StatusPreconditionFailed)
	if resp.errorCode(t) != CodeVersionConflict {
		t.Errorf("stale If-Match: %s", resp.body)
	}

	// Verify: valid, then recorded as used with the caller's address.
	resp = f.do(req{method: "POST", path: "/api/v1/keys/verify", header: adminHeader(), body: `{"key":"` + ik.Key + `","ip":"::ffff:198.51.100.4"}`})
	expect(t, resp, http.StatusOK)
	var v keyVerifyResponse
	resp.json(t, &v)
	if !v.Valid || v.Key == nil || v.Key.ID != ik.ID || v.Key.LastIP == nil || *v.Key.LastIP != "198.51.100.4" || v.Key.LastUsedAt == nil {
		t.Fatalf("verify %s", resp.body)
	}
	mistyped := ik.Key[:len(ik.Key)-1] + string(ik.Key[len(ik.Key)-1]^1)
	for _, bad := range []string{"nonsense", mistyped, ik.Key[:20] + strings.Repeat("A", 49)} {
		if got := f.verify(bad); got.Valid || got.Key != nil {
			t.Errorf("verify(%q) = %+v, want {valid:false} and nothing else", bad, got)
		}
	}

	// Roll with a grace period: both work until it ends, then only the new.
	resp = f.do(req{method: "POST", path: "/api/v1/keys/" + ik.ID + "/roll", header: adminHeader(), body: `{"grace_seconds":3600}`})
	expect(t, resp, http.StatusCreated)
	var next issuedKey
	resp.json(t, &next)
	if next.ID == ik.ID || next.Key == ik.Key || !keyPattern.MatchString(next.Key) || next.Name != "ci" ||
		!slices.Equal(next.Scopes, []string{"ws:connect"}) || string(next.Meta) != `{"team":"ops","tier":2}` ||
		next.ExpiresAt == nil || !next.ExpiresAt.Equal(want) || next.Version != 1 {
		t.Fatalf("rolled key %s", resp.body)
	}
	if !f.verify(ik.Key).Valid || !f.verify(next.Key).Valid {
		t.Fatal("during the grace period both keys must work")
	}
	f.clock.Advance(time.Hour)
	if f.verify(ik.Key).Valid || !f.verify(next.Key).Valid {
		t.Fatal("after the grace period only the new key may work")
	}
	// An expired key cannot be rolled.
	resp = f.do(req{method: "POST", path: "/api/v1/keys/" + ik.ID + "/roll", header: adminHeader(), body: `{}`})
	expect(t, resp, http.StatusNotFound)

	resp = f.do(req{method: "DELETE", path: "/api/v1/keys/" + next.ID, header: adminHeader()})
	expect(t, resp, http.StatusNoContent)
	if f.verify(next.Key).Valid {
		t.Fatal("a deleted key still verifies")
	}
	expect(t, f.do(req{method: "GET", path: "/api/v1/keys/" + next.ID, header: adminHeader()}), http.StatusNotFound)
	expect(t, f.do(req{method: "DELETE", path: "/api/v1/keys/" + next.ID, header: adminHeader()}), http.StatusNotFound)

	// Every create, roll and delete is audited by key ID, never with a key.
	logs := f.logs.String()
	for _, ev := range []string{audit.APIKeyCreated, audit.APIKeyUpdated, audit.APIKeyRolled, audit.APIKeyRevoked} {
		if !strings.Contains(logs, `"event":"`+ev+`"`) {
			t.Errorf("no %s audit record:\n%s", ev, logs)
		}
	}
	if !strings.Contains(logs, `"key_id":"`+next.ID+`"`) || !strings.Contains(logs, "replaces "+ik.ID) {
		t.Errorf("audit records do not name the keys:\n%s", logs)
	}
	for _, k := range []string{ik.Key, next.Key, ik.Key[len(ik.Key)-49:], next.Key[len(next.Key)-49:]} {
		if strings.Contains(logs, k) {
			t.Errorf("the log holds a key %.12q…", k)
		}
	}
}

func bytesContainAny(b []byte, subs ...string) bool {
	for _, s := range subs {
		if strings.Contains(string(b), s) {
			return true
		}
	}
	return false
}

// TestAdminKeyNeverExpiresWithoutTTL: no TTL and no configured maximum
// means no expiry; a configured maximum caps every key.
func TestAdminKeyTTL(t *testing.T) {
	f := newKeyFixture(t)
	if ik := f.createKey(`{"user_id":"a","name":"n"}`); ik.ExpiresAt != nil || len(ik.Scopes) != 0 || string(ik.Meta) != `{}` {
		t.Fatalf("key without TTL: %+v", ik)
	}
	g := newKeyFixture(t, func(f *fixture) { f.api.Keys.MaxTTL = time.Hour })
	for _, body := range []string{`{"user_id":"a","name":"n"}`, `{"user_id":"a","name":"n","ttl_seconds":7200}`, `{"user_id":"a","name":"n","ttl_seconds":99999999999}`} {
		ik := g.createKey(body)
		if want := g.clock.Now().Add(time.Hour); ik.ExpiresAt == nil || !ik.ExpiresAt.Equal(want) {
			t.Errorf("%s: expires %v, want capped at %v", body, ik.ExpiresAt, want)
		}
	}
}

// TestAdminKeyBadInput: every malformed request gets its status and a JSON
// error, and nothing is written.
func TestAdminKeyBadInput(t *testing.T) {
	f := newKeyFixture(t)
	existing := f.createKey(`{"user_id":"carol","name":"keep","scopes":["a.b"],"meta":{"x":1}}`)
	path := "/api/v1/keys/" + existing.ID
	long := strings.Repeat("a", 200)
	cases := []struct {
		method, path, body string
		header             map[string]string
		status             int
		code               string
	}{
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n"`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","extra":1}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","NAME":"m"}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","name":"m"}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n"} {}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `[]`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", ``, nil, 415, CodeUnsupportedMediaType},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n"}`, map[string]string{"Content-Type": "text/plain"}, 415, CodeUnsupportedMediaType},
		{"POST", "/api/v1/keys", `{"user_id":"","name":"n"}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob\u0000","name":"n"}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob"}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"` + long + `"}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"a\nb"}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":1}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","scopes":"a.b"}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","scopes":[1]}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","scopes":["a*"]}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","scopes":["**.a"]}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","scopes":["a..b"]}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","scopes":[""]}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","scopes":["` + long + `"]}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","limits":{"max_connections":-1}}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","limits":{"max_conns":1}}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","limits":{"dry_run":["nope"]}}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","limits":{"max_connections":"5"}}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","limits":[]}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","meta":[1]}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","meta":"x"}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","meta":{"a":1,"a":2}}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","meta":{"big":"` + strings.Repeat("x", keys.MaxMetaSize) + `"}}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","ttl_seconds":-1}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","ttl_seconds":1e99}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","ttl_seconds":99999999999999}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"n","ttl_seconds":"60"}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys", `{"user_id":"bob","name":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, nil, 413, CodeBodyTooLarge},
		{"GET", "/api/v1/keys/nope", ``, nil, 404, CodeNotFound},
		{"GET", "/api/v1/keys/" + strings.Repeat("0", sessionbridge.APIKeyIDLen), ``, nil, 404, CodeNotFound},
		{"PUT", path, `{}`, nil, 405, CodeMethodNotAllowed},
		{"GET", "/api/v1/keys", ``, nil, 405, CodeMethodNotAllowed},
		{"GET", "/api/v1/keys/verify", ``, nil, 405, CodeMethodNotAllowed},
		{"PATCH", path, `{}`, nil, 400, CodeBadRequest},
		{"PATCH", path, `{"name":null}`, nil, 400, CodeBadRequest},
		{"PATCH", path, `{"scopes":null}`, nil, 400, CodeBadRequest},
		{"PATCH", path, `{"scopes":["a*"]}`, nil, 400, CodeBadRequest},
		{"PATCH", path, `{"scopes":"a"}`, nil, 400, CodeBadRequest},
		{"PATCH", path, `{"limits":{"frames_per_second":-2}}`, nil, 400, CodeBadRequest},
		{"PATCH", path, `{"limits":{"x":1}}`, nil, 400, CodeBadRequest},
		{"PATCH", path, `{"meta":[1]}`, nil, 400, CodeBadRequest},
		{"PATCH", path, `{"meta":{"big":"` + strings.Repeat("x", keys.MaxMetaSize) + `"}}`, nil, 400, CodeBadRequest},
		{"PATCH", path, `{"name":"ok","scopes":["bad*"]}`, nil, 400, CodeBadRequest},
		{"PATCH", path, `{"name":"x","owner":"y"}`, nil, 400, CodeBadRequest},
		{"PATCH", path, `{"name":"x"}`, map[string]string{"If-Match": "3"}, 400, CodeBadRequest},
		{"PATCH", path, `{"name":"x"}`, map[string]string{"If-Match": `"9"`}, 412, CodeVersionConflict},
		{"PATCH", path, `{"name":"x"}`, map[string]string{"Content-Type": "text/plain"}, 415, CodeUnsupportedMediaType},
		{"PATCH", "/api/v1/keys/" + strings.Repeat("0", sessionbridge.APIKeyIDLen), `{"name":"x"}`, nil, 404, CodeNotFound},
		{"POST", path + "/roll", `{"grace_seconds":-1}`, nil, 400, CodeBadRequest},
		{"POST", path + "/roll", `{"grace_seconds":604801}`, nil, 400, CodeBadRequest},
		{"POST", path + "/roll", `{"grace":1}`, nil, 400, CodeBadRequest},
		{"POST", path + "/roll", ``, nil, 415, CodeUnsupportedMediaType},
		{"POST", "/api/v1/keys/" + strings.Repeat("0", sessionbridge.APIKeyIDLen) + "/roll", `{}`, nil, 404, CodeNotFound},
		{"POST", "/api/v1/keys/verify", `{}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys/verify", `{"key":1}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys/verify", `{"key":"sbk_x","ip":"nope"}`, nil, 400, CodeBadRequest},
		{"POST", "/api/v1/keys/verify", `{"key":"sbk_x","token":"y"}`, nil, 400, CodeBadRequest},
		{"GET", "/api/v1/users/%FFroot/keys", ``, nil, 400, CodeBadRequest},
	}
	for _, c := range cases {
		h := adminHeader()
		for k, v := range c.header {
			h[k] = v
		}
		resp := f.do(req{method: c.method, path: c.path, body: c.body, header: h})
		if resp.StatusCode != c.status {
			t.Errorf("%s %s %.80s: status %d, want %d; %s", c.method, c.path, c.body, resp.StatusCode, c.status, resp.body)
			continue
		}
		if code := resp.errorCode(t); code != c.code {
			t.Errorf("%s %s %.80s: error %q, want %q", c.method, c.path, c.body, code, c.code)
		}
		if len(resp.body) > 1000 {
			t.Errorf("%s %s: an error answer of %d bytes echoes the input", c.method, c.path, len(resp.body))
		}
	}
	// Nothing was half-written: bob has no key, carol's is unchanged.
	if n := f.count("bob"); n != 0 {
		t.Errorf("bob has %d keys after refused creations", n)
	}
	k, err := f.keys.GetKey(context.Background(), existing.ID)
	if err != nil || k.Version != 1 || k.Name != "keep" || !slices.Equal(k.Scopes, []string{"a.b"}) || string(k.Meta) != `{"x":1}` {
		t.Errorf("carol's key changed by refused patches: %+v, %v", k, err)
	}
	if n := f.count("carol"); n != 1 {
		t.Errorf("carol has %d keys after refused rolls", n)
	}

	// Without a token the key routes are closed like every admin route.
	for _, p := range []string{"/api/v1/keys", "/api/v1/keys/verify", path + "/roll"} {
		resp := f.do(req{method: "POST", path: p, body: `{}`})
		expect(t, resp, http.StatusUnauthorized)
	}
}

// TestKeyStoreUnavailable: while the key store is away every key route
// answers 503 unavailable and nothing is half-written; then all works.
func TestKeyStoreUnavailable(t *testing.T) {
	f := newKeyFixture(t)
	ik := f.createKey(`{"user_id":"alice","name":"n","scopes":["a"]}`)
	tok, _ := f.login("alice")
	f.keys.down.Store(true)
	for _, c := range []req{
		{method: "POST", path: "/api/v1/keys", body: `{"user_id":"alice","name":"m"}`, header: adminHeader()},
		{method: "GET", path: "/api/v1/keys/" + ik.ID, header: adminHeader()},
		{method: "PATCH", path: "/api/v1/keys/" + ik.ID, body: `{"name":"m"}`, header: adminHeader()},
		{method: "DELETE", path: "/api/v1/keys/" + ik.ID, header: adminHeader()},
		{method: "POST", path: "/api/v1/keys/" + ik.ID + "/roll", body: `{}`, header: adminHeader()},
		{method: "POST", path: "/api/v1/keys/verify", body: `{"key":"` + ik.Key + `"}`, header: adminHeader()},
		{method: "GET", path: "/api/v1/users/alice/keys", header: adminHeader()},
		{method: "GET", path: "/auth/keys", cookie: tok},
		{method: "POST", path: "/auth/keys", body: `{"name":"m"}`, cookie: tok},
		{method: "DELETE", path: "/auth/keys/" + ik.ID, cookie: tok},
		{method: "POST", path: "/auth/keys/" + ik.ID + "/roll", body: `{}`, cookie: tok},
	} {
		resp := f.do(c)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.errorCode(t) != CodeUnavailable {
			t.Errorf("%s %s with the store away: %d %s", c.method, c.path, resp.StatusCode, resp.body)
		}
	}
	f.keys.down.Store(false)
	if n := f.count("alice"); n != 1 {
		t.Fatalf("alice has %d keys after the outage, want 1", n)
	}
	if !f.verify(ik.Key).Valid {
		t.Fatal("the key does not verify after the outage")
	}
	resp := f.do(req{method: "POST", path: "/auth/keys/" + ik.ID + "/roll", body: `{}`, cookie: tok})
	expect(t, resp, http.StatusCreated)
}

func TestKeysNotConfigured(t *testing.T) {
	f := newFixture(t)
	tok, _ := f.login("alice")
	for _, c := range []req{
		{method: "POST", path: "/api/v1/keys", body: `{"user_id":"a","name":"n"}`, header: adminHeader()},
		{method: "POST", path: "/api/v1/keys/verify", body: `{"key":"k"}`, header: adminHeader()},
		{method: "GET", path: "/auth/keys", cookie: tok},
	} {
		resp := f.do(c)
		if resp.StatusCode != http.StatusNotFound || resp.errorCode(t) != CodeNotFound {
			t.Errorf("%s %s without keys: %d %s", c.method, c.path, resp.StatusCode, resp.body)
		}
	}
}

func TestUserKeys(t *testing.T) {
	f := newKeyFixture(t)
	alice, aliceSession := f.login("alice")
	bob, _ := f.login("bob")

	expect(t, f.do(req{method: "GET", path: "/auth/keys"}), http.StatusUnauthorized)
	expect(t, f.do(req{method: "POST", path: "/auth/keys", body: `{"name":"x"}`}), http.StatusUnauthorized)

	resp := f.do(req{method: "POST", path: "/auth/keys", cookie: alice, body: `{"name":"laptop script","scopes":["ws:connect","chat.*"],"ttl_seconds":600}`})
	expect(t, resp, http.StatusCreated)
	var ik issuedKey
	resp.json(t, &ik)
	if !keyPattern.MatchString(ik.Key) || ik.UserID != "alice" || !slices.Equal(ik.Scopes, []string{"ws:connect", "chat.*"}) ||
		ik.ExpiresAt == nil || !ik.ExpiresAt.Equal(f.clock.Now().Add(10*time.Minute)) {
		t.Fatalf("created %s", resp.body)
	}
	if !strings.Contains(f.logs.String(), `"session_id":"`+aliceSession.ID+`"`) {
		t.Error("the creation is not audited with the session that made it")
	}

	// Every scope by default, but a wildcard never reaches the admin scopes.
	resp = f.do(req{method: "POST", path: "/auth/keys", cookie: alice, body: `{"name":"all","scopes":["**"]}`})
	expect(t, resp, http.StatusCreated)
	var all issuedKey
	resp.json(t, &all)
	if !slices.Equal(all.Scopes, []string{"**", "!admin:read", "!admin:write"}) {
		t.Errorf("a user's ** key holds %q, want the admin scopes denied", all.Scopes)
	}
	for _, body := range []string{`{"name":"x","scopes":["admin:write"]}`, `{"name":"x","scopes":["chat.*","admin:read"]}`} {
		resp := f.do(req{method: "POST", path: "/auth/keys", cookie: alice, body: body})
		expect(t, resp, http.StatusForbidden)
		if resp.errorCode(t) != CodeForbidden {
			t.Errorf("%s: %s", body, resp.body)
		}
	}

	resp = f.do(req{method: "GET", path: "/auth/keys", cookie: alice})
	expect(t, resp, http.StatusOK)
	var list keyList
	resp.json(t, &list)
	ids := []string{}
	for _, k := range list.Keys {
		ids = append(ids, k.ID)
	}
	// Both were made at the same instant of the test clock: any order.
	if len(ids) != 2 || !slices.Contains(ids, ik.ID) || !slices.Contains(ids, all.ID) || strings.Contains(string(resp.body), ik.Key) {
		t.Fatalf("alice's list %s", resp.body)
	}
	resp = f.do(req{method: "GET", path: "/auth/keys", cookie: bob})
	expect(t, resp, http.StatusOK)
	if strings.TrimSpace(string(resp.body)) != `{"keys":[]}` {
		t.Fatalf("bob sees %s", resp.body)
	}

	// Someone else's key is not found, whatever bob tries.
	for _, c := range []req{
		{method: "DELETE", path: "/auth/keys/" + ik.ID, cookie: bob},
		{method: "POST", path: "/auth/keys/" + ik.ID + "/roll", body: `{}`, cookie: bob},
		{method: "DELETE", path: "/auth/keys/" + strings.Repeat("0", sessionbridge.APIKeyIDLen), cookie: bob},
		{method: "DELETE", path: "/auth/keys/garbage", cookie: bob},
	} {
		resp := f.do(c)
		expect(t, resp, http.StatusNotFound)
		if resp.errorCode(t) != CodeNotFound {
			t.Errorf("%s %s: %s", c.method, c.path, resp.body)
		}
	}
	if !strings.Contains(f.logs.String(), `"reason":"not_owner"`) {
		t.Error("bob's attempts are not audited")
	}
	if !f.verify(ik.Key).Valid {
		t.Fatal("bob's attempts touched alice's key")
	}

	// Changes from another origin are refused.
	resp = f.do(req{method: "POST", path: "/auth/keys", cookie: alice, body: `{"name":"csrf"}`, header: map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}})
	expect(t, resp, http.StatusForbidden)
	resp = f.do(req{method: "DELETE", path: "/auth/keys/" + ik.ID, cookie: alice, header: map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}})
	expect(t, resp, http.StatusForbidden)

	// Roll: the successor is alice's, with the same scopes; the old key
	// works through the grace period.
	resp = f.do(req{method: "POST", path: "/auth/keys/" + ik.ID + "/roll", cookie: alice, body: `{"grace_seconds":60}`})
	expect(t, resp, http.StatusCreated)
	var next issuedKey
	resp.json(t, &next)
	if next.UserID != "alice" || !slices.Equal(next.Scopes, ik.Scopes) || !f.verify(ik.Key).Valid || !f.verify(next.Key).Valid {
		t.Fatalf("rolled %s", resp.body)
	}
	expect(t, f.do(req{method: "DELETE", path: "/auth/keys/" + next.ID, cookie: alice}), http.StatusNoContent)
	if f.verify(next.Key).Valid {
		t.Fatal("a revoked key still verifies")
	}
	expect(t, f.do(req{method: "DELETE", path: "/auth/keys/" + next.ID, cookie: alice}), http.StatusNotFound)

	// A key an administrator gave admin scopes is not the user's to roll.
	adm := f.createKey(`{"user_id":"alice","name":"ops","scopes":["admin:read"]}`)
	resp = f.do(req{method: "POST", path: "/auth/keys/" + adm.ID + "/roll", cookie: alice, body: `{}`})
	expect(t, resp, http.StatusForbidden)
	if n := f.count("alice"); n != 3 {
		t.Errorf("alice has %d keys, want 3 (the rolled-away first, all, ops)", n)
	}
}

// TestUserKeyScopesBounded: with session scopes configured, a user asks for
// nothing beyond them.
func TestUserKeyScopesBounded(t *testing.T) {
	f := newKeyFixture(t, func(f *fixture) { f.api.SessionScopes = []string{"ws:connect", "chat.**", "!chat.admin.**"} })
	alice, _ := f.login("alice")
	for _, c := range []struct {
		scopes string
		status int
	}{
		{`["ws:connect"]`, 201},
		{`["chat.*"]`, 201},
		{`["chat.room.*"]`, 201},
		{`["chat.**","!chat.admin.**"]`, 201},
		{`[]`, 201},
		{`["chat.**"]`, 403},
		{`["chat.admin.kick"]`, 403},
		{`["**"]`, 403},
		{`["*"]`, 403},
		{`["session.get"]`, 403},
		{`["ws:*"]`, 400},
		{`["a*"]`, 400},
	} {
		resp := f.do(req{method: "POST", path: "/auth/keys", cookie: alice, body: `{"name":"k","scopes":` + c.scopes + `}`})
		if resp.StatusCode != c.status {
			t.Errorf("scopes %s: status %d, want %d; %s", c.scopes, resp.StatusCode, c.status, resp.body)
		}
		if c.status >= 400 {
			resp.errorCode(t)
		}
	}
	if n := f.count("alice"); n != 5 {
		t.Errorf("alice has %d keys, want the 5 allowed", n)
	}
	if !strings.Contains(f.logs.String(), `"reason":"scope_not_held"`) {
		t.Error("refused scopes are not audited")
	}
}

// TestUserKeyBadInput: the user routes take only name, scopes and a TTL.
func TestUserKeyBadInput(t *testing.T) {
	f := newKeyFixture(t)
	alice, _ := f.login("alice")
	for _, c := range []struct {
		body   string
		status int
	}{
		{`{"name":"x","limits":{"max_connections":1000}}`, 400},
		{`{"name":"x","meta":{"plan":"enterprise"}}`, 400},
		{`{"name":"x","user_id":"bob"}`, 400},
		{`{"name":"x","ttl_seconds":-5}`, 400},
		{`{"name":""}`, 400},
		{`{"name":"x","scopes":[true]}`, 400},
		{`{"name":"x"`, 400},
		{`{"name":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, 413},
	} {
		resp := f.do(req{method: "POST", path: "/auth/keys", cookie: alice, body: c.body})
		if resp.StatusCode != c.status {
			t.Errorf("%.60s: status %d, want %d; %s", c.body, resp.StatusCode, c.status, resp.body)
			continue
		}
		resp.errorCode(t)
	}
	if n := f.count("alice") + f.count("bob"); n != 0 {
		t.Errorf("%d keys written by refused requests", n)
	}
}
