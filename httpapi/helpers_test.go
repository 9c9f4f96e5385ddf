package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/memory"
	"github.com/sessionbridge/sessionbridge/users"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const adminToken = "admin-secret-for-tests"

// clock is a settable time source for the Manager.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// flakyStore is a Store that answers ErrUnavailable while down is set.
type flakyStore struct {
	sessionbridge.Store
	down atomic.Bool
}

func (f *flakyStore) err() error {
	if f.down.Load() {
		return sessionbridge.ErrUnavailable
	}
	return nil
}

func (f *flakyStore) Get(ctx context.Context, id string) (*sessionbridge.Session, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.Get(ctx, id)
}

func (f *flakyStore) Create(ctx context.Context, s *sessionbridge.Session, ev sessionbridge.Event) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.Store.Create(ctx, s, ev)
}

func (f *flakyStore) Update(ctx context.Context, s *sessionbridge.Session, prev uint64, ev sessionbridge.Event) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.Store.Update(ctx, s, prev, ev)
}

func (f *flakyStore) Delete(ctx context.Context, id string, ev sessionbridge.Event) (*sessionbridge.Session, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.Delete(ctx, id, ev)
}

func (f *flakyStore) ListUser(ctx context.Context, userID string) ([]*sessionbridge.Session, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.ListUser(ctx, userID)
}

func (f *flakyStore) Ping(ctx context.Context) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.Store.Ping(ctx)
}

// fakeUsers checks passwords against a map.
type fakeUsers map[string]string

func (f fakeUsers) Verify(username, password string) (users.User, bool) {
	if pw, ok := f[username]; ok && pw == password {
		return users.User{Username: username}, true
	}
	return users.User{}, false
}

func (f fakeUsers) Exists(username string) bool {
	_, ok := f[username]
	return ok
}

// fakePresence answers fixed connection counts.
type fakePresence struct {
	counts map[string]int
	conns  []sessionbridge.ConnInfo
}

func (p *fakePresence) SessionCounts(ctx context.Context, ids []string) (map[string]int, error) {
	out := map[string]int{}
	for _, id := range ids {
		if n, ok := p.counts[id]; ok {
			out[id] = n
		}
	}
	return out, nil
}

func (p *fakePresence) UserConnections(ctx context.Context, userID string) ([]sessionbridge.ConnInfo, error) {
	var out []sessionbridge.ConnInfo
	for _, c := range p.conns {
		if userID == "" || c.UserID == userID {
			out = append(out, c)
		}
	}
	return out, nil
}

// fakePublisher records what it was asked to send.
type fakePublisher struct {
	mu   sync.Mutex
	sent []string
}

func (p *fakePublisher) SendToUser(ctx context.Context, userID string, data json.RawMessage) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent = append(p.sent, "user:"+userID+":"+string(data))
	return nil
}

func (p *fakePublisher) SendToSession(ctx context.Context, sessionID string, data json.RawMessage) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent = append(p.sent, "session:"+sessionID+":"+string(data))
	return nil
}

// recorder collects bus events.
type recorder struct {
	mu     sync.Mutex
	events []sessionbridge.Event
	ch     chan struct{}
}

func (r *recorder) HandleEvent(ev sessionbridge.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

func (r *recorder) HandleGap() {}

// waitFor waits until an event matching ok was recorded.
func (r *recorder) waitFor(t *testing.T, what string, ok func(sessionbridge.Event) bool) sessionbridge.Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		for _, ev := range r.events {
			if ok(ev) {
				r.mu.Unlock()
				return ev
			}
		}
		r.mu.Unlock()
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("no %s event within 5s", what)
		}
	}
}

type fixture struct {
	t         *testing.T
	clock     *clock
	store     *flakyStore
	tickets   *memory.Tickets
	mgr       *sessionbridge.Manager
	sessions  *Sessions
	api       *API
	srv       *httptest.Server
	events    *recorder
	presence  *fakePresence
	publisher *fakePublisher
	ready     atomic.Bool
}

// newFixture builds an API on a memory store behind an httptest server; opts
// adjust the fixture before the server starts.
func newFixture(t *testing.T, opts ...func(*fixture)) *fixture {
	t.Helper()
	bus := memory.NewBus()
	f := &fixture{
		t:         t,
		clock:     &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		store:     &flakyStore{Store: memory.NewStore(bus)},
		tickets:   memory.NewTickets(),
		presence:  &fakePresence{counts: map[string]int{}},
		publisher: &fakePublisher{},
		events:    &recorder{ch: make(chan struct{}, 1)},
	}
	f.ready.Store(true)
	mgr, err := sessionbridge.NewManager(sessionbridge.Backend{NodeID: "test", Store: f.store, Bus: bus, Tickets: f.tickets})
	if err != nil {
		t.Fatal(err)
	}
	f.mgr = mgr
	f.mgr.Now = f.clock.Now
	f.sessions = &Sessions{Manager: f.mgr}
	f.api = &API{
		Sessions:   f.sessions,
		Users:      fakeUsers{"alice": "alice-password", "bob": "bob-password"},
		Presence:   f.presence,
		Publisher:  f.publisher,
		AdminToken: adminToken,
		Ready: func(ctx context.Context) error {
			if !f.ready.Load() {
				return sessionbridge.ErrUnavailable
			}
			return nil
		},
	}
	for _, o := range opts {
		o(f)
	}
	f.srv = httptest.NewServer(f.api.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	subscribed := make(chan struct{})
	go func() {
		defer close(done)
		bus.Subscribe(ctx, gapSignal{f.events, subscribed})
	}()
	<-subscribed
	t.Cleanup(func() {
		f.srv.Close()
		cancel()
		<-done
	})
	return f
}

// gapSignal forwards events and reports the first HandleGap, which the bus
// calls once subscribed.
type gapSignal struct {
	*recorder
	subscribed chan struct{}
}

func (g gapSignal) HandleGap() {
	select {
	case <-g.subscribed:
	default:
		close(g.subscribed)
	}
}

// req describes a request to the fixture's server.
type req struct {
	method, path, body string
	cookie             string // session token sent as the cookie
	header             map[string]string
}

// response is a finished response with its body read.
type response struct {
	*http.Response
	body []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

// errorCode returns the "error" field of a JSON error body.
func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var e errorBody
	r.json(t, &e)
	if e.Message == "" {
		t.Errorf("error body without message: %s", r.body)
	}
	return e.Error
}

func (r response) cookie(name string) *http.Cookie {
	for _, c := range r.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (f *fixture) do(q req) response {
	f.t.Helper()
	var body io.Reader
	if q.body != "" {
		body = strings.NewReader(q.body)
	}
	r, err := http.NewRequest(q.method, f.srv.URL+q.path, body)
	if err != nil {
		f.t.Fatal(err)
	}
	if q.body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if q.cookie != "" {
		r.AddCookie(&http.Cookie{Name: DefaultCookieName, Value: q.cookie})
	}
	for k, v := range q.header {
		if v == "" {
			r.Header.Del(k)
			continue
		}
		r.Header.Set(k, v)
	}
	resp, err := f.srv.Client().Do(r)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return response{Response: resp, body: b}
}

// expect fails the test unless resp has status.
func expect(t *testing.T, resp response, status int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, resp.body)
	}
}

// login signs user in and returns the session token from the cookie and the
// session's public view.
func (f *fixture) login(user string) (string, sessionbridge.PublicSession) {
	f.t.Helper()
	resp := f.do(req{method: "POST", path: "/auth/login", body: `{"username":"` + user + `","password":"` + user + `-password"}`})
	expect(f.t, resp, http.StatusOK)
	c := resp.cookie(DefaultCookieName)
	if c == nil {
		f.t.Fatal("login set no session cookie")
	}
	var ps sessionbridge.PublicSession
	resp.json(f.t, &ps)
	return c.Value, ps
}

// create makes a session for user directly through the Manager.
func (f *fixture) create(user string) (*sessionbridge.Session, string) {
	f.t.Helper()
	s, tok, err := f.mgr.Create(context.Background(), sessionbridge.NewSession{UserID: user}, sessionbridge.Change{Source: sessionbridge.SourceAPI})
	if err != nil {
		f.t.Fatal(err)
	}
	return s, tok
}

func (f *fixture) exists(id string) bool {
	_, err := f.mgr.Get(context.Background(), id)
	return err == nil
}

func adminHeader() map[string]string {
	return map[string]string{"Authorization": "Bearer " + adminToken}
}
