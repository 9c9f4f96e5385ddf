package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/audit"
	"github.com/sessionbridge/sessionbridge/keys"
	"github.com/sessionbridge/sessionbridge/memory"
	"github.com/sessionbridge/sessionbridge/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a clock tests move by hand; its timers fire synchronously
// inside Advance, in deadline order.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) stopper {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// pending returns the number of armed timers.
func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

// Advance moves time by d and runs every timer that falls due, including
// timers armed by the callbacks themselves.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		live := c.timers[:0]
		for _, t := range c.timers {
			if !t.stopped {
				live = append(live, t)
			}
		}
		c.timers = live
		sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
		var next *fakeTimer
		if len(c.timers) > 0 && !c.timers[0].at.After(target) {
			next = c.timers[0]
			next.stopped = true
			if next.at.After(c.now) {
				c.now = next.at
			}
		}
		if next == nil {
			c.now = target
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		next.f()
	}
}

// fakeVerifier is a TokenVerifier over a fixed table of tokens.
type fakeVerifier struct {
	mu     sync.Mutex
	tokens map[string]sb.Principal
	err    error
}

func (v *fakeVerifier) add(token string, p sb.Principal) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.tokens == nil {
		v.tokens = map[string]sb.Principal{}
	}
	v.tokens[token] = p
}

func (v *fakeVerifier) Verify(ctx context.Context, token string) (*sb.Principal, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.err != nil {
		return nil, v.err
	}
	p, ok := v.tokens[token]
	if !ok {
		return nil, sb.ErrInvalidToken
	}
	p.Scopes = append([]string(nil), p.Scopes...)
	return &p, nil
}

// failingStore wraps a store and fails every read with ErrUnavailable while
// down is set.
type failingStore struct {
	sb.Store
	down atomic.Bool
	// afterGet, if set, runs after every successful Get.
	afterGet atomic.Pointer[func(id string)]
	// wholeReads counts the sessions GetMany was asked for, checked the
	// sessions ChangedVersions was asked about.
	wholeReads, checked atomic.Int64
}

func (s *failingStore) ChangedVersions(ctx context.Context, held []sb.SessionVersion) ([]string, error) {
	if s.down.Load() {
		return nil, fmt.Errorf("test: %w", sb.ErrUnavailable)
	}
	s.checked.Add(int64(len(held)))
	return s.Store.(sb.VersionChecker).ChangedVersions(ctx, held)
}

func (s *failingStore) Get(ctx context.Context, id string) (*sb.Session, error) {
	if s.down.Load() {
		return nil, fmt.Errorf("test: %w", sb.ErrUnavailable)
	}
	got, err := s.Store.Get(ctx, id)
	if f := s.afterGet.Load(); f != nil && err == nil {
		(*f)(id)
	}
	return got, err
}

func (s *failingStore) GetMany(ctx context.Context, ids []string) (map[string]*sb.Session, error) {
	if s.down.Load() {
		return nil, fmt.Errorf("test: %w", sb.ErrUnavailable)
	}
	s.wholeReads.Add(int64(len(ids)))
	return s.Store.GetMany(ctx, ids)
}

// lossyBus delivers the memory bus's events but drops those its filter
// picks, as a network partition would.
type lossyBus struct {
	*memory.Bus
	mu   sync.Mutex
	drop func(sb.Event) bool
}

// dropIf makes the bus drop every event for which f is true (nil: none).
func (b *lossyBus) dropIf(f func(sb.Event) bool) {
	b.mu.Lock()
	b.drop = f
	b.mu.Unlock()
}

// dropSession drops every event about session id.
func (b *lossyBus) dropSession(ids ...string) {
	b.dropIf(func(ev sb.Event) bool { return slices.Contains(ids, ev.SessionID) })
}

func (b *lossyBus) Subscribe(ctx context.Context, h sb.EventHandler) error {
	return b.Bus.Subscribe(ctx, lossyHandler{h, b})
}

type lossyHandler struct {
	h sb.EventHandler
	b *lossyBus
}

func (l lossyHandler) HandleEvent(ev sb.Event) {
	l.b.mu.Lock()
	drop := l.b.drop != nil && l.b.drop(ev)
	l.b.mu.Unlock()
	if !drop {
		l.h.HandleEvent(ev)
	}
}
func (l lossyHandler) HandleGap() { l.h.HandleGap() }

// env is a gateway on an httptest server with an in-memory store and bus.
type env struct {
	t        *testing.T
	logs     *syncBuffer
	reg      *prometheus.Registry
	clock    *fakeClock
	bus      *lossyBus
	store    *failingStore
	mgr      *sb.Manager
	tickets  *memory.Tickets
	jwt      *fakeVerifier
	keyStore *countingKeys
	keys     *keys.Manager
	g        *Gateway
	srv      *httptest.Server
	url      string
}

// newManager returns the Manager of a node on b.
func newManager(t testing.TB, b sb.Backend) *sb.Manager {
	t.Helper()
	m, err := sb.NewManager(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newEnv(t *testing.T, tweak func(*Config)) *env {
	t.Helper()
	return newEnvWith(t, nil, tweak)
}

// newEnvWith is newEnv with node, if set, applied to the node's backend
// before its Manager is built.
func newEnvWith(t *testing.T, node func(*sb.Backend), tweak func(*Config)) *env {
	t.Helper()
	e := &env{t: t, clock: newFakeClock(), jwt: &fakeVerifier{}, keyStore: &countingKeys{KeyStore: memory.NewKeyStore(nil)}}
	e.keys = &keys.Manager{Store: e.keyStore, Now: e.clock.Now}
	e.bus = &lossyBus{Bus: memory.NewBus()}
	e.store = &failingStore{Store: memory.NewStore(e.bus.Bus)}
	e.tickets = &memory.Tickets{Now: e.clock.Now}
	b := sb.Backend{NodeID: "test", Store: e.store, Bus: e.bus, Tickets: e.tickets}
	if node != nil {
		node(&b)
	}
	e.mgr = newManager(t, b)
	e.mgr.Now, e.mgr.IdleTimeout = e.clock.Now, 30*time.Minute
	e.logs = &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.reg = prometheus.NewRegistry()
	cfg := Config{
		Manager: e.mgr, JWT: e.jwt, APIKeys: e.keys,
		Now: e.clock.Now, SweepInterval: time.Hour, PingInterval: time.Hour,
		Logger: logger, Audit: audit.New(logger), Metrics: metrics.New(e.reg),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.clock = e.clock
	e.g = g
	e.srv = httptest.NewServer(g)
	e.url = "ws" + strings.TrimPrefix(e.srv.URL, "http")
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- g.Run(ctx) }()
	waitFor(t, "bus subscription", func() bool { return e.bus.Subscribers() == 1 })
	// The gap of the first subscription moves every session's event mark;
	// past it, an upgrade re-reads its session only for a real event.
	waitFor(t, "the first gap", func() bool { return g.marks.all.Load() > 0 })
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := g.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		cancel()
		if err := <-runDone; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
		e.srv.Close()
	})
	return e
}

// countingKeys is a key store that counts its reads and fails them while
// down is set.
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

// key issues an API key for user with scopes and returns it and its ID.
func (e *env) key(user string, ttl time.Duration, scopes ...string) (string, string) {
	e.t.Helper()
	key, k, err := e.keys.Create(context.Background(), keys.NewKey{UserID: user, Name: "test", Scopes: scopes, TTL: ttl})
	if err != nil {
		e.t.Fatal(err)
	}
	return key, k.ID
}

// rawKey stores k as given, past the Manager's checks, under a fresh key
// and returns that key.
func (e *env) rawKey(k sb.APIKey) string {
	e.t.Helper()
	key, id, hash, err := sb.NewAPIKey(k.UserID)
	if err != nil {
		e.t.Fatal(err)
	}
	k.ID, k.SecretHash, k.Version = id, hash, 1
	if err := e.keyStore.CreateKey(context.Background(), &k); err != nil {
		e.t.Fatal(err)
	}
	return key
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// counter returns the value of a counter (or gauge) series of the env's
// metrics, 0 if absent.
func (e *env) counter(name string, labels map[string]string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// waitFor polls cond until it holds or 10 seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// session creates a session for user and returns it with its token.
func (e *env) session(user string) (*sb.Session, string) {
	e.t.Helper()
	s, tok, err := e.mgr.Create(context.Background(), sb.NewSession{UserID: user, Data: json.RawMessage(`{"theme":"dark"}`)}, sb.Change{Source: sb.SourceHTTP})
	if err != nil {
		e.t.Fatal(err)
	}
	return s, tok
}

// dial opens a socket with the given headers and query; on success it has
// already read and returned the welcome frame.
func (e *env) dial(h http.Header, query string) (*client, welcomeData) {
	e.t.Helper()
	c, resp, err := e.tryDial(h, query)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		e.t.Fatalf("dial: %v (status %d)", err, status)
	}
	f := c.read()
	if f.Type != TypeWelcome {
		e.t.Fatalf("first frame %q, want welcome", f.Type)
	}
	var w welcomeData
	if err := json.Unmarshal(f.Data, &w); err != nil {
		e.t.Fatal(err)
	}
	return c, w
}

func (e *env) tryDial(h http.Header, query string) (*client, *http.Response, error) {
	u := e.url + "/ws"
	if query != "" {
		u += "?" + query
	}
	ws, resp, err := websocket.DefaultDialer.Dial(u, h)
	if err != nil {
		return nil, resp, err
	}
	c := &client{t: e.t, ws: ws}
	e.t.Cleanup(func() { _ = ws.Close() })
	return c, resp, nil
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// client is the test side of a socket.
type client struct {
	t  *testing.T
	ws *websocket.Conn
}

type wireFrame struct {
	Type string          `json:"type"`
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
}

// read returns the next frame, failing the test after 10 seconds.
func (c *client) read() wireFrame {
	c.t.Helper()
	f, err := c.tryRead()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

func (c *client) tryRead() (wireFrame, error) {
	_ = c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	mt, b, err := c.ws.ReadMessage()
	if err != nil {
		return wireFrame{}, err
	}
	if mt != websocket.TextMessage {
		return wireFrame{}, fmt.Errorf("message type %d", mt)
	}
	var f wireFrame
	if err := json.Unmarshal(b, &f); err != nil {
		return wireFrame{}, fmt.Errorf("bad frame %q: %w", b, err)
	}
	return f, nil
}

// readType reads frames until one of type typ arrives.
func (c *client) readType(typ string) wireFrame {
	c.t.Helper()
	for {
		f := c.read()
		if f.Type == typ {
			return f
		}
	}
}

func (c *client) send(typ, id string, data any) {
	c.t.Helper()
	b, err := json.Marshal(map[string]any{"type": typ, "id": id, "data": data})
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(b)
}

func (c *client) sendRaw(b []byte) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// expectClose reads until the connection closes and checks the close code
// and reason.
func (c *client) expectClose(code int, reason string) {
	c.t.Helper()
	for {
		_, err := c.tryRead()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("connection ended with %v, want close %d %q", err, code, reason)
		}
		if ce.Code != code || ce.Text != reason {
			c.t.Fatalf("close %d %q, want %d %q", ce.Code, ce.Text, code, reason)
		}
		return
	}
}

// errorFrame decodes an error frame's data.
func errorOf(t *testing.T, f wireFrame) errorData {
	t.Helper()
	if f.Type != TypeError {
		t.Fatalf("frame %q %s, want error", f.Type, f.Data)
	}
	var d errorData
	if err := json.Unmarshal(f.Data, &d); err != nil {
		t.Fatal(err)
	}
	return d
}
