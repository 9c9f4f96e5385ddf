package clustertest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/audit"
	"github.com/sessionbridge/sessionbridge/gateway"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
	"github.com/sessionbridge/sessionbridge/keys"
	"github.com/sessionbridge/sessionbridge/limit"
	"github.com/sessionbridge/sessionbridge/redis"
)

var bg = context.Background()

// node is one sessionbridge node: its own Redis backend, Manager and
// Gateway, serving /ws on an httptest server.
type node struct {
	name    string
	backend *redis.Backend
	manager *sb.Manager
	keys    *keys.Manager
	gw      *gateway.Gateway
	srv     *httptest.Server
}

type nodeOpts struct {
	prefix  string
	timeout time.Duration
	// expiry, if set, runs Manager.Run, claiming expired sessions and keys
	// at that interval.
	expiry time.Duration
	idle   time.Duration
	// warning is the gateway's ExpiryWarning (default: the gateway's).
	warning time.Duration
	// logs, if set, receives every log line of the node.
	logs io.Writer
	// limits, if set, are the node's default rate limits, decided on the
	// shared Redis.
	limits *sb.Limits
}

// startNode builds a node on srv and runs it until the test ends. Sweeps are
// an hour apart, so that what a test sees comes from events and gaps, never
// from the periodic sweep.
func startNode(t *testing.T, name string, srv redisTarget, o nodeOpts) *node {
	t.Helper()
	if o.timeout == 0 {
		o.timeout = 2 * time.Second
	}
	var logger *slog.Logger
	if o.logs != nil {
		logger = slog.New(slog.NewTextHandler(o.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	b, err := redis.New(bg, redis.Options{URL: srv.URL(), Prefix: o.prefix, NodeID: name, Timeout: o.timeout, Logger: logger})
	if err != nil {
		t.Fatalf("redis.New(%s): %v", name, err)
	}
	m, err := sb.NewManager(b.Node())
	if err != nil {
		t.Fatal(err)
	}
	m.IdleTimeout, m.ExpiryInterval, m.KeyExpiryInterval = o.idle, o.expiry, o.expiry
	km := &keys.Manager{Store: b.Keys(), Cache: &keys.Cache{}, NodeID: m.NodeID()}
	var rl gateway.RateLimits
	if o.limits != nil {
		conns := b.Counter()
		rl = gateway.RateLimits{
			Defaults: *o.limits, Limiter: b.Limiter(), Conns: conns,
			Leaser: &limit.Leaser{Shared: b.Limiter(), Nodes: conns.Nodes},
		}
	}
	gw, err := gateway.New(gateway.Config{
		Manager: m,
		APIKeys: km, KeyStore: b.Keys(), KeyEvents: km.Cache,
		SweepInterval: time.Hour, PingInterval: time.Hour, ExpiryWarning: o.warning,
		Limits: rl, Logger: logger, Audit: audit.New(logger),
	})
	if err != nil {
		t.Fatalf("gateway.New(%s): %v", name, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", gw)
	n := &node{name: name, backend: b, manager: m, keys: km, gw: gw, srv: httptest.NewServer(mux)}

	ctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	wg.Go(func() { _ = gw.Run(ctx) }) // events, sweeps and the presence heartbeat
	waitSubscribed(t, srv, name)
	if o.expiry > 0 {
		wg.Go(func() { _ = m.Run(ctx) })
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(bg, 10*time.Second)
		defer scancel()
		_ = gw.Shutdown(sctx)
		cancel()
		wg.Wait()
		n.srv.Close()
		b.Close()
	})
	return n
}

// waitSubscribed waits until the node's subscription connection is open on
// srv, so that a test's first event cannot be published before the node
// listens.
func waitSubscribed(t *testing.T, srv redisTarget, node string) {
	t.Helper()
	eventually(t, 10*time.Second, node+" to subscribe", func() bool {
		for _, s := range serversOf(srv) {
			list, err := s.Do("CLIENT", "LIST", "TYPE", "pubsub")
			l, _ := list.(string)
			if err == nil && strings.Contains(l, " name=sessionbridge:"+node+" ") {
				return true
			}
		}
		return false
	})
}

// redisTarget is the Redis the nodes share: a standalone server
// (*redistest.Server) or a Cluster (*redistest.MultiCluster).
type redisTarget interface{ URL() string }

// serversOf returns the servers of target.
func serversOf(target redisTarget) []*redistest.Server {
	switch r := target.(type) {
	case *redistest.Server:
		return []*redistest.Server{r}
	case *redistest.MultiCluster:
		return r.Nodes()
	}
	panic("clustertest: unknown redis target")
}

// doKey runs a command about key on the server that holds it.
func doKey(t *testing.T, target redisTarget, key string, args ...string) any {
	t.Helper()
	var v any
	var err error
	switch r := target.(type) {
	case *redistest.Server:
		v, err = r.Do(args...)
	case *redistest.MultiCluster:
		v, err = r.DoKey(key, args...)
	}
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return v
}

// doAll runs a command on every running server of target and ignores the
// replies (a killed cluster node does not answer).
func doAll(target redisTarget, args ...string) {
	for _, s := range serversOf(target) {
		_, _ = s.Do(args...)
	}
}

// redisKinds are the deployments the cross-node tests run against: one
// standalone server, and a Cluster of three masters with a replica each.
var redisKinds = []struct {
	name  string
	start func(t *testing.T) redisTarget
}{
	{"standalone", func(t *testing.T) redisTarget { return redistest.Start(t) }},
	{"cluster", func(t *testing.T) redisTarget { return redistest.StartMultiCluster(t, 3, 1) }},
}

// eachRedis runs test once per redisKinds, each on a fresh deployment.
func eachRedis(t *testing.T, test func(t *testing.T, srv redisTarget)) {
	for _, k := range redisKinds {
		t.Run(k.name, func(t *testing.T) { test(t, k.start(t)) })
	}
}

// twoNodes starts nodes A and B sharing srv under one prefix.
func twoNodes(t *testing.T, srv redisTarget, o nodeOpts) (*node, *node) {
	t.Helper()
	if o.prefix == "" {
		o.prefix = "sb:"
	}
	return startNode(t, "node-a", srv, o), startNode(t, "node-b", srv, o)
}

// frame is a server frame as a client sees it.
type frame struct {
	Type string          `json:"type"`
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
}

// client is a WebSocket client that reads every frame into a channel.
type client struct {
	t      *testing.T
	conn   *websocket.Conn
	frames chan frame
	closed chan struct{}
	err    error // the read error that ended the connection; set before closed
}

// dial connects to n's /ws with the session token in X-Session-Token and
// waits for the welcome frame.
func dial(t *testing.T, n *node, token string) *client {
	t.Helper()
	return dialURL(t, n.srv.URL, token)
}

// dialURL is dial for the server at baseURL.
func dialURL(t *testing.T, baseURL, token string) *client {
	t.Helper()
	c, resp, err := tryDial(baseURL, token)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", baseURL, err, status)
	}
	c.t = t
	t.Cleanup(func() { _ = c.conn.Close(); <-c.closed })
	c.expect(gateway.TypeWelcome, 10*time.Second)
	return c
}

func tryDial(baseURL, token string) (*client, *http.Response, error) {
	h := http.Header{}
	h.Set("X-Session-Token", token)
	return tryDialHeader(baseURL, h)
}

// dialKey connects to n's /ws with an API key as bearer token and waits for
// the welcome frame.
func dialKey(t *testing.T, n *node, key string) *client {
	t.Helper()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+key)
	c, resp, err := tryDialHeader(n.srv.URL, h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s with a key: %v (HTTP %d)", n.name, err, status)
	}
	c.t = t
	t.Cleanup(func() { _ = c.conn.Close(); <-c.closed })
	c.expect(gateway.TypeWelcome, 10*time.Second)
	return c
}

func tryDialHeader(baseURL string, h http.Header) (*client, *http.Response, error) {
	u := "ws" + strings.TrimPrefix(baseURL, "http") + "/ws"
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.Dial(u, h)
	if err != nil {
		return nil, resp, err
	}
	c := &client{conn: conn, frames: make(chan frame, 1024), closed: make(chan struct{})}
	go c.read()
	return c, resp, nil
}

func (c *client) read() {
	defer close(c.closed)
	for {
		_, b, err := c.conn.ReadMessage()
		if err != nil {
			c.err = err
			return
		}
		var f frame
		if json.Unmarshal(b, &f) == nil {
			select {
			case c.frames <- f:
			default: // a test that reads nothing does not block the reader
			}
		}
	}
}

// expect waits for a frame of type typ, skipping others.
func (c *client) expect(typ string, within time.Duration) frame {
	c.t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		select {
		case f := <-c.frames:
			if f.Type == typ {
				return f
			}
		case <-c.closed:
			c.t.Fatalf("connection closed (%v) while waiting for %s", c.err, typ)
		case <-deadline.C:
			c.t.Fatalf("no %s frame within %v", typ, within)
		}
	}
}

// send writes a client frame.
func (c *client) send(typ, id string, data any) {
	c.t.Helper()
	b, err := json.Marshal(map[string]any{"type": typ, "id": id, "data": data})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("write %s: %v", typ, err)
	}
}

// expectClose waits for the server to close the connection with code and
// reason.
func (c *client) expectClose(code int, reason string, within time.Duration) {
	c.t.Helper()
	select {
	case <-c.closed:
	case <-time.After(within):
		c.t.Fatalf("socket still open after %v; want close %d %s", within, code, reason)
	}
	var ce *websocket.CloseError
	if !errors.As(c.err, &ce) || ce.Code != code || ce.Text != reason {
		c.t.Fatalf("socket ended with %v; want close %d %s", c.err, code, reason)
	}
}

// isOpen reports whether the connection still answers a ping frame.
func (c *client) isOpen(within time.Duration) bool {
	select {
	case <-c.closed:
		return false
	default:
	}
	c.send(gateway.TypePing, "p", nil)
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		select {
		case f := <-c.frames:
			if f.Type == gateway.TypePong {
				return true
			}
		case <-c.closed:
			return false
		case <-deadline.C:
			return false
		}
	}
}

// create makes a session for user on n and returns it with its token.
func create(t *testing.T, n *node, user string) (*sb.Session, string) {
	t.Helper()
	s, tok, err := n.manager.Create(bg, sb.NewSession{UserID: user, Data: json.RawMessage(`{"theme":"light"}`)}, sb.Change{Source: sb.SourceAPI})
	if err != nil {
		t.Fatalf("Create on %s: %v", n.name, err)
	}
	return s, tok
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		<-tick.C
	}
}

func newCancel() (context.Context, context.CancelFunc) { return context.WithCancel(bg) }
