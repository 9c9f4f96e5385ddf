package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// adminClient calls a node's admin API with the admin bearer token.
type adminClient struct {
	hc    *http.Client
	token string
}

// newHTTPClient returns a client for admin and metrics calls that keeps up to
// conns connections per node alive, never goes through a proxy and never
// follows redirects (an answer is judged as it comes).
func newHTTPClient(conns int, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns * 4,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     30 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// apiError is an unexpected answer from the admin API. It never holds a
// credential: only the method, path and status, and the start of the body.
type apiError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d %s", e.Method, e.Path, e.Status, e.Body)
}

// do sends a JSON request to base+path and decodes a JSON answer into out
// (when out is not nil). Any status but 200, 201, 202 and 204 is an
// *apiError.
func (a *adminClient) do(ctx context.Context, method, base, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, redactURLError(err))
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK, http.StatusCreated, http.StatusAccepted, http.StatusNoContent:
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return &apiError{Method: method, Path: path, Status: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
	}
	return nil
}

// redactURLError drops the URL from a *url.Error: it holds nothing secret
// today, but the message reads better without repeating it.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// createdSession is the admin API's answer to POST /api/v1/sessions.
type createdSession struct {
	ID    string `json:"id"`
	Token string `json:"token"`
}

func (a *adminClient) createSession(ctx context.Context, base, userID string, data any, ttl time.Duration) (createdSession, error) {
	in := map[string]any{"user_id": userID, "ttl_seconds": int(ttl / time.Second)}
	if data != nil {
		in["data"] = data
	}
	var out createdSession
	if err := a.do(ctx, http.MethodPost, base, "/api/v1/sessions", in, &out); err != nil {
		return out, err
	}
	if out.ID == "" || out.Token == "" {
		return out, fmt.Errorf("POST /api/v1/sessions: answer without id or token")
	}
	return out, nil
}

func (a *adminClient) deleteSession(ctx context.Context, base, id string) error {
	return a.do(ctx, http.MethodDelete, base, "/api/v1/sessions/"+url.PathEscape(id), nil, nil)
}

// patchSession applies a merge patch to the session's data and returns the
// session's new version (0 if the answer does not say).
func (a *adminClient) patchSession(ctx context.Context, base, id string, patch any) (uint64, error) {
	var out struct {
		Version uint64 `json:"version"`
		Session *struct {
			Version uint64 `json:"version"`
		} `json:"session"`
	}
	body := map[string]any{"data": patch}
	if err := a.do(ctx, http.MethodPatch, base, "/api/v1/sessions/"+url.PathEscape(id), body, &out); err != nil {
		return 0, err
	}
	if out.Version == 0 && out.Session != nil {
		return out.Session.Version, nil
	}
	return out.Version, nil
}

// publishToUser sends data to every socket of the user
// (POST /api/v1/publish).
func (a *adminClient) publishToUser(ctx context.Context, base, userID string, data any) error {
	return a.do(ctx, http.MethodPost, base, "/api/v1/publish", map[string]any{"user_id": userID, "data": data}, nil)
}

func (a *adminClient) deleteUserSessions(ctx context.Context, base, userID string) error {
	return a.do(ctx, http.MethodDelete, base, "/api/v1/users/"+url.PathEscape(userID)+"/sessions", nil, nil)
}

// wsDialers holds one WebSocket dialer per local source address; sockets are
// spread over them round robin.
type wsDialers struct {
	dialers []*websocket.Dialer
	pool    *sync.Pool
}

// Client-side buffers are small: the frames of this protocol are small, and
// the client must hold as many sockets as the server under test.
const (
	clientReadBuffer  = 1024
	clientWriteBuffer = 512
	clientReadLimit   = 1 << 20
)

func newWSDialers(sources []netip.Addr, timeout time.Duration) *wsDialers {
	w := &wsDialers{pool: &sync.Pool{}}
	mk := func(local net.Addr) *websocket.Dialer {
		nd := &net.Dialer{Timeout: timeout, LocalAddr: local}
		if local != nil {
			nd.Control = bindNoPort
		}
		return &websocket.Dialer{
			NetDialContext:   nd.DialContext,
			HandshakeTimeout: timeout,
			ReadBufferSize:   clientReadBuffer,
			WriteBufferSize:  clientWriteBuffer,
			WriteBufferPool:  w.pool,
		}
	}
	for _, s := range sources {
		w.dialers = append(w.dialers, mk(&net.TCPAddr{IP: s.AsSlice()}))
	}
	if len(w.dialers) == 0 {
		w.dialers = append(w.dialers, mk(nil))
	}
	return w
}

// wsURL turns a node's base URL into its /ws URL.
func wsURL(base string) string {
	switch {
	case strings.HasPrefix(base, "https://"):
		return "wss://" + strings.TrimPrefix(base, "https://") + "/ws"
	default:
		return "ws://" + strings.TrimPrefix(base, "http://") + "/ws"
	}
}

// frame is the part of a server frame the tool looks at.
type frame struct {
	Type string `json:"type"`
	Data struct {
		Session *struct {
			ID      string `json:"id"`
			Version uint64 `json:"version"`
		} `json:"session"`
	} `json:"data"`
}

// updateSeen is one session.updated frame, stamped on arrival.
type updateSeen struct {
	Version uint64
	At      time.Time
}

// wsConn is one authenticated client socket with a goroutine reading it, so
// that the server's pings are answered and pushes are stamped on arrival.
type wsConn struct {
	c        *websocket.Conn
	updates  chan updateSeen
	done     chan struct{}
	closedAt time.Time // set before done is closed
	code     int       // close code sent by the server; 1006 for none
	reason   string
}

// errHandshake is a refused WebSocket upgrade or a missing welcome.
var errHandshake = errors.New("websocket handshake")

// upgradeRefused is an upgrade the server answered with an HTTP status
// instead of switching protocols; dial's error wraps it, so that a caller
// can look at the status and headers of a refusal.
type upgradeRefused struct {
	Status int
	Header http.Header
	Body   string // the start of the body
}

func (e *upgradeRefused) Error() string { return fmt.Sprintf("HTTP %d %s", e.Status, e.Body) }

// dial opens an authenticated socket with token on wsu and waits for the
// welcome frame. A session token travels in the X-Session-Token header, an
// API key (sbk_...) as a bearer token.
func (w *wsDialers) dial(ctx context.Context, i int, wsu, token string, timeout time.Duration) (*wsConn, error) {
	c, err := w.handshake(ctx, i, wsu, token, timeout)
	if err != nil {
		return nil, err
	}
	wc := &wsConn{c: c, updates: make(chan updateSeen, 8), done: make(chan struct{}), code: websocket.CloseAbnormalClosure}
	go wc.read()
	return wc, nil
}

// handshake is dial without the reader: it returns the socket once the
// welcome frame has arrived, for a caller that reads it itself.
func (w *wsDialers) handshake(ctx context.Context, i int, wsu, token string, timeout time.Duration) (*websocket.Conn, error) {
	d := w.dialers[i%len(w.dialers)]
	h := http.Header{}
	if strings.HasPrefix(token, apiKeyPrefix) {
		h.Set("Authorization", "Bearer "+token)
	} else {
		h.Set("X-Session-Token", token)
	}
	c, resp, err := d.DialContext(ctx, wsu, h)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
			resp.Body.Close()
			return nil, fmt.Errorf("%w: %w", errHandshake, &upgradeRefused{Status: resp.StatusCode, Header: resp.Header, Body: strings.TrimSpace(string(b))})
		}
		return nil, fmt.Errorf("%w: %w", errHandshake, redactURLError(err))
	}
	c.SetReadLimit(clientReadLimit)
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	_, msg, err := c.ReadMessage()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: waiting for welcome: %w", errHandshake, err)
	}
	var f frame
	if err := json.Unmarshal(msg, &f); err != nil || f.Type != "welcome" {
		c.Close()
		return nil, fmt.Errorf("%w: first frame is %q, not welcome", errHandshake, f.Type)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, nil
}

func (w *wsConn) read() {
	defer close(w.done)
	defer w.c.Close()
	for {
		_, msg, err := w.c.ReadMessage()
		if err != nil {
			w.closedAt = time.Now()
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				w.code, w.reason = ce.Code, ce.Text
			}
			return
		}
		at := time.Now()
		var f frame
		if json.Unmarshal(msg, &f) != nil || f.Type != "session.updated" {
			continue
		}
		var v uint64
		if f.Data.Session != nil {
			v = f.Data.Session.Version
		}
		select {
		case w.updates <- updateSeen{Version: v, At: at}:
		default:
			// Nobody is waiting for this one; a waiter drains before it acts.
		}
	}
}

// closed reports whether the server or the network ended the socket.
func (w *wsConn) closed() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// Close ends the socket with a normal close handshake, bounded by timeout, and
// waits for its reader to stop.
func (w *wsConn) Close(timeout time.Duration) {
	_ = w.c.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(timeout))
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
		w.c.Close()
		<-w.done
	}
}

// drainUpdates discards update frames that arrived before a measurement.
func (w *wsConn) drainUpdates() {
	for {
		select {
		case <-w.updates:
		default:
			return
		}
	}
}
