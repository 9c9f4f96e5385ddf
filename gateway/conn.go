package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/device"
	"github.com/sessionbridge/sessionbridge/scope"
)

// ErrClosed is returned by Conn.Send on a connection that is closing or
// closed.
var ErrClosed = errors.New("gateway: connection closed")

// ErrFrameTooLarge is returned by Conn.Send for a frame larger than a send
// queue may hold (1 MiB); the connection stays open.
var ErrFrameTooLarge = errors.New("gateway: frame larger than the send queue")

// ErrSlowConsumer is returned by Conn.Send when the frames the server pushed
// to the connection filled its send queue: the connection is then closed with
// 1008 slow_consumer.
var ErrSlowConsumer = errors.New("gateway: send queue full")

// closeGrace is how long the gateway waits for the peer's answer to a close
// frame before it drops the TCP connection.
const closeGrace = 2 * time.Second

// maxQueueBytes bounds the bytes of pushed frames, and separately of
// replies, queued for one connection.
const maxQueueBytes = 1 << 20

// queueLoad counts the frames and bytes of one kind in a send queue.
type queueLoad struct{ n, bytes int32 }

// fits reports whether b may join a load already holding l under a limit of
// maxN frames and maxQueueBytes.
func (l queueLoad) fits(b []byte, maxN int) bool {
	return int(l.n) < maxN && int(l.bytes)+len(b) <= maxQueueBytes
}

func (l *queueLoad) add(b []byte) {
	l.n++
	l.bytes += int32(len(b))
}

// Conn is one authenticated WebSocket connection. Handlers receive it; its
// accessors are safe for concurrent use.
//
// A Conn holds no goroutine while idle on Linux (its socket waits in the
// gateway's idle poller; elsewhere its read loop waits), and outgoing frames
// go to a bounded queue that a writer goroutine, started on demand, drains
// and then exits.
type Conn struct {
	g  *Gateway
	ws *websocket.Conn
	// br is the WebSocket reader's buffer and rc the raw socket, when the
	// transport allows parking the read loop outside the reader (see
	// waitReadable); rc is nil otherwise. While parked, br lends its buffer
	// back (see readbuf.go).
	br *bufio.Reader
	rc syscall.RawConn
	// fd is rc's descriptor (-1 without rc), parked tells whether the
	// socket waits in the gateway's idle poller without a goroutine, and
	// deadline is its read deadline (Unix ns), which the pinger checks
	// for a parked socket.
	fd       int32
	parked   atomic.Bool
	deadline atomic.Int64
	// hctx is the handlers' context, made on the first frame (see
	// handlerCtx).
	hctx  *handlerContext
	id    string
	entry *sessionEntry // nil for a connection bound to no session
	// kentry is the API key's entry, for a connection opened with a key.
	kentry *keyEntry
	// use counts what the connection does for usage, when counting (usage
	// is recorded; see usage.go).
	use connUsage

	connectedAt time.Time
	// ua and ip are the client's cleaned User-Agent and address; the
	// browser, OS and device type are parsed from ua only when Context
	// asks.
	ua, ip   string
	metadata map[string]string
	// scopes is p.Scopes compiled, replaced whole by replaceScopes; every
	// client frame is checked against it without a lock.
	scopes atomic.Pointer[scope.Set]

	// Intrusive list links, guarded by the registry (and the entry's mu for
	// the session and key lists).
	sPrev, sNext, uPrev, uNext, kPrev, kNext *Conn

	mu sync.Mutex
	// p is the principal without its Session (which lives in entry) and its
	// key's limits (in limits); its Scopes change with replaceScopes, its
	// ExpiresAt on auth.refresh.
	p connPrincipal
	// limits are an API key principal's own rate limits, nil when it has
	// none: they decide at the upgrade, and Principal returns them.
	limits *sb.Limits
	queue  [][]byte
	// pushed and replied are what the queue holds of frames the server
	// pushes and of replies to the client's own frames: each kind has its own
	// budget, and only pushes over theirs make a slow consumer.
	pushed, replied queueLoad
	// room, when set, is a reply waiting for the queue to make room for it;
	// it is closed when the writer takes the queue or the connection closes.
	room chan struct{}
	// held keeps the writer from starting until the welcome frame is in
	// place at the head of the queue.
	held      bool
	writing   bool
	closing   bool
	closeSent bool
	closed    bool
	// sessionScopes is set for a session principal: its scopes are its
	// session's and follow the session's changes.
	sessionScopes bool
	counting      bool
	inFlight      uint16 // forwarded frames awaiting the application's answer
	code          uint16 // the close code, once closing
	reason        string
	// expTimer closes the connection when its own credential expires (see
	// scheduleConnExpiry); session connections, most of them, have none.
	expTimer *credTimer

	// lim is the connection's rate limit state; its frame part is the read
	// loop's alone.
	lim connLimits
}

// ConnDevice is the device a connection comes from.
type ConnDevice struct {
	sb.Device
	ConnectionID string `json:"connection_id"`
}

// ConnContext is what a handler knows about the connection it serves.
type ConnContext struct {
	Authenticated bool
	SessionID     string
	UserID        string
	// SessionData is the session's current data, or nil without a session.
	SessionData json.RawMessage
	// Protocol is always "websocket".
	Protocol string
	Device   ConnDevice
	// Metadata is what Config.Metadata returned for the connection (a copy).
	Metadata map[string]string
	Method   sb.AuthMethod
	Scopes   []string
}

// ID returns the connection's ID.
func (c *Conn) ID() string { return c.id }

// connPrincipal is what a connection keeps of its sb.Principal: all but the
// session, which lives in the connection's entry, and the key's limits,
// which most connections do not have (80 bytes less per socket).
type connPrincipal struct {
	Method     sb.AuthMethod
	UserID     string
	SessionID  string
	Scopes     []string
	ExpiresAt  time.Time
	KeyID      string
	KeyVersion uint64
}

// newConnPrincipal returns what a connection keeps of p, and p's limits
// when it has any.
func newConnPrincipal(p *sb.Principal) (connPrincipal, *sb.Limits) {
	cp := connPrincipal{
		Method: p.Method, UserID: p.UserID, SessionID: p.SessionID, Scopes: p.Scopes,
		ExpiresAt: p.ExpiresAt, KeyID: p.KeyID, KeyVersion: p.KeyVersion,
	}
	// Any field of Limits, today's and tomorrow's, makes them kept.
	if reflect.ValueOf(p.Limits).IsZero() {
		return cp, nil
	}
	l := p.Limits
	return cp, &l
}

// Principal returns a copy of whom the connection acts for, with the bound
// session as currently known on this node.
func (c *Conn) Principal() sb.Principal {
	c.mu.Lock()
	p := sb.Principal{
		Method: c.p.Method, UserID: c.p.UserID, SessionID: c.p.SessionID, Scopes: slices.Clone(c.p.Scopes),
		ExpiresAt: c.p.ExpiresAt, KeyID: c.p.KeyID, KeyVersion: c.p.KeyVersion,
	}
	c.mu.Unlock()
	if c.limits != nil {
		p.Limits = *c.limits
		p.Limits.DryRun = slices.Clone(p.Limits.DryRun)
	}
	if s := c.session(); s != nil {
		p.Session = s
	}
	return p
}

// session returns a copy of the bound session, or nil.
func (c *Conn) session() *sb.Session {
	e := c.entry
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sess.Clone()
}

// Context returns the connection's context as seen now.
func (c *Conn) Context() ConnContext {
	p := c.Principal()
	cc := ConnContext{
		Authenticated: true,
		SessionID:     p.SessionID,
		UserID:        p.UserID,
		Protocol:      "websocket",
		Device:        ConnDevice{Device: sb.Device{UserAgent: c.ua, IP: c.ip}, ConnectionID: c.id},
		Metadata:      maps.Clone(c.metadata),
		Method:        p.Method,
		Scopes:        p.Scopes,
	}
	cc.Device.Browser, cc.Device.OS, cc.Device.DeviceType = device.Parse(c.ua)
	if p.Session != nil {
		cc.SessionData = p.Session.Data
	}
	return cc
}

// Send queues a frame of type typ with data for the connection, as a push
// (also when called from a Handler). It never blocks on the network; it fails
// with ErrClosed on a closing connection and with ErrSlowConsumer when the
// pushes already queued fill the queue (the connection is then closed).
func (c *Conn) Send(ctx context.Context, typ string, data any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b, err := encodeFrame(typ, "", data)
	if err != nil {
		return err
	}
	return c.enqueue(b)
}

// enqueue appends a frame the server pushes to the send queue and starts the
// writer if none runs. When the pushes already queued fill the queue, the
// client is not reading: the connection is closed rather than the queue grown.
func (c *Conn) enqueue(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.queueableLocked(b); err != nil {
		return err
	}
	if !c.pushed.fits(b, c.g.sendQueue) {
		c.takeQueueLocked()
		c.startCloseLocked(ClosePolicy, ReasonSlowConsumer)
		c.g.log.Warn("gateway: closing slow consumer", "connection_id", c.id, "user_id", c.p.UserID)
		return ErrSlowConsumer
	}
	c.pushed.add(b)
	c.appendLocked(b)
	return nil
}

// reply queues the answer to one of the client's own frames; the read loop
// calls it, and so do the (bounded) goroutines of forwarded frames. While the
// replies already queued fill their budget, it waits for the writer to take
// them: a client that sends requests faster than it reads the answers is
// slowed down (its next frame is not read meanwhile), not closed. The wait
// ends when the writer makes progress, or fails within its write timeout, or
// the connection closes.
func (c *Conn) reply(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if err := c.queueableLocked(b); err != nil {
			return err
		}
		if c.replied.fits(b, c.g.sendQueue) {
			break
		}
		if c.room == nil {
			c.room = make(chan struct{})
		}
		room := c.room
		c.mu.Unlock()
		<-room
		c.mu.Lock()
	}
	c.replied.add(b)
	c.appendLocked(b)
	return nil
}

// queueableLocked says why b may not join the queue at all, if it may not.
func (c *Conn) queueableLocked(b []byte) error {
	if c.closing || c.closed {
		return ErrClosed
	}
	if len(b) > maxQueueBytes {
		return ErrFrameTooLarge
	}
	return nil
}

func (c *Conn) appendLocked(b []byte) {
	c.queue = append(c.queue, b)
	c.kickLocked()
}

// takeQueueLocked empties the queue and returns what it held, waking a reply
// that waits for room.
func (c *Conn) takeQueueLocked() [][]byte {
	q := c.queue
	c.queue, c.pushed, c.replied = nil, queueLoad{}, queueLoad{}
	c.wakeLocked()
	return q
}

// wakeLocked wakes a reply that waits for room.
func (c *Conn) wakeLocked() {
	if c.room != nil {
		close(c.room)
		c.room = nil
	}
}

// closeWith closes the connection with a close frame after the frames already
// queued. Only the first call counts.
func (c *Conn) closeWith(code int, reason string) {
	c.mu.Lock()
	c.startCloseLocked(code, reason)
	c.mu.Unlock()
}

// closeNow is closeWith for the closes that the bus's events decide (a
// revoked or expired session, a revoked key), whose latency is the
// product's: when nothing is queued or being written and the socket's send
// queue is empty, the caller writes the close frame itself, at once, instead
// of starting the writer goroutine and returning before it has run. A frame
// that small cannot block on an empty send queue, so the caller (the event
// loop) never waits on a slow socket; any other socket gets closeWith.
func (c *Conn) closeNow(code int, reason string) {
	c.mu.Lock()
	if c.closing || c.closed || c.writing || c.held || len(c.queue) > 0 || !sendQueueEmpty(c.rc) {
		c.startCloseLocked(code, reason)
		c.mu.Unlock()
		return
	}
	c.closing, c.code, c.reason = true, uint16(code), reason
	c.wakeLocked()
	// This goroutine is the writer now: no writer starts meanwhile, and
	// nothing joins the queue of a closing connection.
	c.writing, c.closeSent = true, true
	c.mu.Unlock()
	c.writeClose(code, reason)
	c.mu.Lock()
	c.writing = false
	c.mu.Unlock()
}

// sendNow is enqueue for the frames that the bus's events push
// (session.updated), whose latency is the product's, as closeNow is for the
// close: when nothing is queued or being written and the socket's send
// queue is empty, the caller writes the frame itself, at once, instead of
// starting the writer goroutine. A frame written to an empty send queue does
// not wait on the peer, so the caller (the event loop) never waits on a slow
// socket; any other socket gets enqueue, which keeps the order of what is
// queued.
func (c *Conn) sendNow(b []byte) error {
	c.mu.Lock()
	if c.closing || c.closed || c.writing || c.held || len(c.queue) > 0 || !sendQueueEmpty(c.rc) {
		c.mu.Unlock()
		return c.enqueue(b)
	}
	// This goroutine is the writer now: frames pushed meanwhile wait in the
	// queue, and the writer started below takes them.
	c.writing = true
	c.mu.Unlock()
	err := c.ws.SetWriteDeadline(c.g.realNow().Add(c.g.writeTimeout))
	if err == nil {
		err = c.ws.WriteMessage(websocket.TextMessage, b)
	}
	if err != nil {
		// As in writeLoop: the stream is unusable.
		c.abort()
		c.mu.Lock()
		c.takeQueueLocked()
		c.closing, c.writing = true, false
		c.mu.Unlock()
		return err
	}
	c.countOut(len(b))
	c.mu.Lock()
	c.writing = false
	if len(c.queue) > 0 || (c.closing && !c.closeSent) {
		c.kickLocked()
	}
	c.mu.Unlock()
	return nil
}

func (c *Conn) startCloseLocked(code int, reason string) {
	if c.closing || c.closed {
		return
	}
	c.closing, c.code, c.reason = true, uint16(code), reason
	c.wakeLocked()
	c.kickLocked()
}

// kickLocked starts the writer goroutine if there is something to write and
// none is running.
func (c *Conn) kickLocked() {
	if c.writing || c.held || c.closed {
		return
	}
	c.writing = true
	c.g.wg.Add(1)
	go c.writeLoop()
}

// release lets the writer start, with first at the head of the queue. When
// there is something to write it reports true, and the caller must run
// writeLoop itself (the upgrade handler does, on its own goroutine, where a
// writer goroutine would have to be started).
func (c *Conn) release(first []byte) (write bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = false
	if c.closed {
		return false
	}
	if !c.closing || int(c.code) != ClosePolicy {
		c.queue = slices.Insert(c.queue, 0, first)
		c.pushed.add(first)
	}
	if c.writing || (len(c.queue) == 0 && !c.closing) {
		return false
	}
	c.writing = true
	c.g.wg.Add(1)
	return true
}

// writeLoop drains the queue, writes the close frame if one is due, and
// exits when there is nothing left to write.
func (c *Conn) writeLoop() {
	defer c.g.wg.Done()
	for {
		c.mu.Lock()
		batch := c.takeQueueLocked()
		sendClose := len(batch) == 0 && c.closing && !c.closeSent && !c.closed
		if sendClose {
			c.closeSent = true
		}
		if len(batch) == 0 && !sendClose {
			c.writing = false
			c.mu.Unlock()
			return
		}
		code, reason := int(c.code), c.reason
		c.mu.Unlock()

		if sendClose {
			c.writeClose(code, reason)
			continue
		}
		for _, b := range batch {
			if err := c.ws.SetWriteDeadline(c.g.realNow().Add(c.g.writeTimeout)); err == nil {
				err = c.ws.WriteMessage(websocket.TextMessage, b)
				if err == nil {
					c.countOut(len(b))
					continue
				}
			}
			// A failed or timed-out write leaves the stream unusable: drop the
			// connection and queue nothing more; the read loop then cleans up
			// and reports the connection as lost.
			c.abort()
			c.mu.Lock()
			c.takeQueueLocked()
			c.closing, c.writing = true, false
			c.mu.Unlock()
			return
		}
	}
}

// writeClose sends a close frame and gives the peer closeGrace to answer
// before the read loop gives up on it.
func (c *Conn) writeClose(code int, reason string) {
	now := c.g.realNow()
	msg := websocket.FormatCloseMessage(code, reason)
	if err := c.ws.WriteControl(websocket.CloseMessage, msg, now.Add(c.g.writeTimeout)); err != nil {
		c.abort()
		return
	}
	c.mu.Lock()
	c.setReadDeadline(now.Add(closeGrace))
	c.mu.Unlock()
	if idle := c.g.idle.Load(); idle != nil {
		// A parked socket has no goroutine for the deadline to stop: wake
		// it when the grace ends, to read what came or give up.
		time.AfterFunc(closeGrace, func() { idle.wake(c) })
	}
}

// setReadDeadline sets the socket's read deadline and notes it for the
// pinger, which wakes a parked socket whose deadline passed.
func (c *Conn) setReadDeadline(t time.Time) {
	c.deadline.Store(t.UnixNano())
	_ = c.ws.SetReadDeadline(t)
}

// abort drops the TCP connection without a close handshake.
func (c *Conn) abort() {
	_ = c.ws.NetConn().Close()
	// A parked socket has no goroutine to see the close.
	c.g.idle.Load().wake(c)
}

// ping sends a keepalive ping control frame unless the connection is closing
// or its writer is busy: the shared pinger must not wait behind one slow
// socket (a busy writer that stalls is cut by its write timeout), and the
// next tick pings again.
func (c *Conn) ping(deadline time.Time) {
	if c.parked.Load() && c.g.realNow().UnixNano() >= c.deadline.Load() {
		// Its peer stopped answering: the woken read loop finds the
		// deadline passed and closes the connection.
		c.g.idle.Load().wake(c)
		return
	}
	c.mu.Lock()
	skip := c.closing || c.closed || c.held || c.writing
	c.mu.Unlock()
	if skip {
		return
	}
	if err := c.ws.WriteControl(websocket.PingMessage, nil, deadline); err != nil && !errors.Is(err, websocket.ErrCloseSent) {
		c.abort()
	}
}

// readLoop reads frames until the connection ends, then unregisters it. It
// is the connection's only long-lived goroutine, and on Linux it does not
// live while the socket is idle: it parks the socket in the gateway's
// idlePoller and ends, and resume starts it again when data arrives. The
// upgrade's own goroutine runs it first, and parks the socket at once.
func (c *Conn) readLoop() {
	g := c.g
	ws := c.ws
	ws.SetReadLimit(g.readLimit)
	// The connection may already be closing (revoked or shut down before this
	// goroutine ran); its close handshake deadline must stand.
	c.extendUnlessClosing()
	ws.SetPongHandler(func(string) error {
		c.extendUnlessClosing()
		return nil
	})
	ws.SetPingHandler(func(data string) error {
		c.extendUnlessClosing()
		return c.answerPing([]byte(data))
	})
	c.readFrames(false)
}

// idleLinger is how long a read loop waits for the next frame in its own
// goroutine, after a data frame, before it hands its socket to the idle
// poller: a socket in use keeps its goroutine (waking one from the poller
// costs some 15 µs). A new socket, and one woken for control frames alone
// (the pong that answers the keepalive ping), parks at once.
const idleLinger = 2 * time.Second

// waitIdle waits until the socket is readable (or fails, or its read
// deadline passes). Where there is an idle poller, it waits up to idleLinger
// in this goroutine if linger is set, and then hands the socket to the
// poller: parked reports that it did, and the goroutine must end.
func (c *Conn) waitIdle(linger bool) (parked bool, err error) {
	idle := c.g.idle.Load()
	if idle == nil {
		return false, waitReadable(c.rc)
	}
	if !linger {
		// The deadline was just moved (by the upgrade or by the frame
		// read), or belongs to a close handshake whose grace wakes it.
		if idle.park(c) {
			return true, nil
		}
		return false, waitReadable(c.rc)
	}
	until := c.g.realNow().Add(idleLinger)
	nc := c.ws.NetConn()
	// The linger shortens the read deadline, never lengthens it; both
	// changes happen under c.mu, like every other change of it, and the
	// restore takes the deadline as it is then (a close may have set its
	// own meanwhile).
	c.mu.Lock()
	if until.UnixNano() >= c.deadline.Load() {
		c.mu.Unlock()
		return false, waitReadable(c.rc)
	}
	_ = nc.SetReadDeadline(until)
	c.mu.Unlock()
	err = waitReadable(c.rc)
	c.mu.Lock()
	d := c.deadline.Load()
	_ = nc.SetReadDeadline(time.Unix(0, d))
	c.mu.Unlock()
	if !errors.Is(err, os.ErrDeadlineExceeded) || c.g.realNow().UnixNano() >= d {
		// Readable, or failed, or the real deadline passed: the reader
		// sees which.
		return false, nil
	}
	if idle.park(c) {
		return true, nil
	}
	return false, waitReadable(c.rc)
}

// resume runs the read loop of a socket woken from the idle poller.
func (c *Conn) resume() {
	lendReadBuffer(c.br, c.ws.NetConn())
	c.readFrames(true)
}

// readFrames reads and handles frames. Woken, it reads at once: the socket
// was readable (or must find out why it was woken).
func (c *Conn) readFrames(woken bool) {
	g := c.g
	ws := c.ws
	var err error
	// linger is whether the socket waits a while in this goroutine before
	// it parks: after a data frame, not after control frames, nor right
	// after the upgrade (a connect storm would otherwise hold a goroutine
	// for every socket of its last idleLinger, whose descriptors the
	// runtime keeps for good).
	linger := false
	for {
		if !woken && c.rc != nil && c.br.Buffered() == 0 {
			// Nothing is buffered: the buffer goes back to the pool while
			// the socket waits (see readbuf.go), and the goroutine ends if
			// the idle poller takes the socket.
			releaseReadBuffer(c.br)
			var parked bool
			if parked, err = c.waitIdle(linger); parked {
				return
			}
			lendReadBuffer(c.br, ws.NetConn())
			if err != nil {
				break
			}
		}
		woken = false
		if c.rc != nil {
			// Pongs and pings are answered here, outside the reader, which
			// would go on to wait for a data frame (see takeControl).
			var took bool
			if took, err = c.takeControl(); err != nil {
				break
			}
			if took {
				linger = false
				continue
			}
		}
		var mt int
		var data []byte
		mt, data, err = ws.ReadMessage()
		if err != nil {
			break
		}
		linger = true
		c.countIn(len(data))
		c.extendUnlessClosing()
		c.handle(c.handlerCtx(), mt, data)
	}
	c.finish(err)
	if c.hctx != nil {
		c.hctx.cancel()
	}
	g.wg.Done()
}

// handlerCtx is the context of the connection's handlers, made on the first
// frame so that an idle socket does not pay for it, and canceled when the
// connection ends. Only the read loop calls it.
func (c *Conn) handlerCtx() context.Context {
	if c.hctx == nil {
		ctx, cancel := context.WithCancel(c.g.baseCtx)
		c.hctx = &handlerContext{ctx, cancel}
	}
	return c.hctx.ctx
}

// credTimer holds a connection's credential expiry timer. A pointer to it
// is a word less in every Conn than the timer itself, which keeps the Conn
// with its allocation header within the 576-byte size class.
type credTimer struct{ stopper }

// handlerContext is a connection's handler context with its cancel, apart
// from the Conn so that an idle connection, which never makes one, keeps
// one word for it instead of three.
type handlerContext struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// extendUnlessClosing moves the dead-peer deadline, except while a close
// handshake is under way (which has its own, shorter deadline).
// The check and the move happen under c.mu, as does the close path's setting
// of its own deadline, so that a frame read while the close starts cannot
// push the close handshake's deadline out again.
func (c *Conn) extendUnlessClosing() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing {
		c.setReadDeadline(c.g.realNow().Add(c.g.pongTimeout))
	}
}

// finish runs once, when the read loop ends: it unregisters the connection
// and reports how it ended.
func (c *Conn) finish(readErr error) {
	g := c.g
	g.reg.remove(c)
	c.mu.Lock()
	c.closed = true
	c.takeQueueLocked()
	code, reason := int(c.code), c.reason
	if c.expTimer != nil {
		c.expTimer.Stop()
		c.expTimer = nil
	}
	p := c.p
	c.mu.Unlock()
	_ = c.ws.Close()
	c.lim.release(context.Background())
	if c.rc != nil {
		// The read loop has ended: nothing reads from the buffer again.
		releaseReadBuffer(c.br)
	}
	// After the close, so that no frame is written after its count is
	// taken but one the writer was finishing just then.
	g.usageClosed(c)

	var ce *websocket.CloseError
	switch {
	case code != 0:
	case errors.As(readErr, &ce):
		code, reason = ce.Code, ce.Text
	case errors.Is(readErr, websocket.ErrReadLimit):
		code, reason = CloseTooBig, "message_too_big"
	default:
		code, reason = websocket.CloseAbnormalClosure, "connection_lost"
	}
	g.metrics.ConnClosed(string(p.Method), code, reason)
	g.audit.Log(context.Background(), auditWSDisconnected, auditFields{
		SessionID: p.SessionID, UserID: p.UserID, ConnectionID: c.id,
		IP: c.ip, UserAgent: c.ua, Method: string(p.Method),
		Reason: reason, Detail: fmt.Sprintf("close code %d", code),
	})
	// Checked first: the arguments would be boxed even for a disabled level.
	if g.log.Enabled(context.Background(), slog.LevelDebug) {
		g.log.Debug("gateway: connection closed", "connection_id", c.id, "user_id", p.UserID,
			"session_id", p.SessionID, "code", code, "reason", reason)
	}
}

// handle serves one frame from the client. Frames that arrive once the
// connection is closing are dropped: the close may be a revocation or an
// expiry, and a credential that is no longer valid must not act during the
// close handshake.
func (c *Conn) handle(ctx context.Context, mt int, data []byte) {
	g := c.g
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		return
	}
	if mt == websocket.TextMessage && !utf8.Valid(data) {
		// RFC 6455 §8.1: a text frame that is not UTF-8 fails the connection.
		g.metrics.Frame("malformed", CodeBadRequest)
		c.closeWith(CloseInvalidData, ReasonInvalidUTF8)
		return
	}
	if !c.admitFrame(ctx, data) {
		return
	}
	if mt != websocket.TextMessage {
		g.metrics.Frame("binary", "bad_request")
		c.sendError("", CodeBadRequest, "binary frames are not supported")
		return
	}
	f, err := decodeFrame(data)
	if err != nil {
		g.metrics.Frame("malformed", "bad_request")
		c.sendError(f.ID, CodeBadRequest, err.Error())
		return
	}
	if !c.allows(f.Type) {
		c.refuseFrame(ctx, f)
		return
	}
	if f.Type != TypePing {
		c.touch(ctx)
	}
	var reply any
	var replyType string
	switch f.Type {
	case TypePing:
		replyType, reply = TypePong, nil
	case TypeSessionGet:
		replyType, reply, err = c.sessionGet()
	case TypeSessionUpdate:
		replyType, reply, err = c.sessionUpdate(ctx, f.Data)
	case TypeAuthRefresh:
		replyType, reply, err = c.authRefresh(ctx, f.Data)
	default:
		if c.forward(ctx, f) {
			return
		}
		replyType, reply, err = c.custom(ctx, f)
	}
	label := f.Type
	if errors.Is(err, errUnknownType) {
		label = "unknown"
	}
	if err != nil {
		code, msg := errorCode(err)
		g.metrics.Frame(label, code)
		if code == CodeInternal {
			g.log.Error("gateway: frame failed", "connection_id", c.id, "type", label, "err", err)
		}
		c.sendError(f.ID, code, msg)
		return
	}
	g.metrics.Frame(label, "ok")
	b, err := encodeFrame(replyType, f.ID, reply)
	if err != nil {
		g.log.Error("gateway: encoding reply", "connection_id", c.id, "type", label, "err", err)
		c.sendError(f.ID, CodeInternal, "internal error")
		return
	}
	_ = c.reply(b)
}

// sendError answers a client frame with an error frame.
func (c *Conn) sendError(id, code, msg string) {
	b, err := encodeFrame(TypeError, id, errorData{ID: id, Code: code, Message: msg})
	if err == nil && c.reply(b) == nil {
		c.countError(code)
	}
}

// frameError is a refusal of a frame with an error code for the client.
type frameError struct {
	code string
	msg  string
	err  error
}

func (e *frameError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *frameError) Unwrap() error { return e.err }

var errUnknownType = errors.New("unknown frame type")

// FrameError returns an error that a Handler can return to send the client an
// error frame with code (bad_request, forbidden, rate_limited, ...) and msg.
// Any other error a Handler returns becomes code internal with a generic
// message.
func FrameError(code, msg string) error { return &frameError{code: code, msg: msg} }

func errorCode(err error) (code, msg string) {
	var fe *frameError
	switch {
	case errors.As(err, &fe):
		return fe.code, fe.msg
	case errors.Is(err, errUnknownType):
		return CodeUnknownType, "unknown frame type"
	case errors.Is(err, sb.ErrForbidden):
		return CodeForbidden, "forbidden"
	case errors.Is(err, sb.ErrInvalidPatch):
		return CodeBadRequest, "data must be a JSON object merge patch"
	case errors.Is(err, sb.ErrDataTooLarge):
		return CodeBadRequest, "session data would be too large; nothing was changed"
	case errors.Is(err, sb.ErrDataTooDeep):
		return CodeBadRequest, "session data would nest too deep; nothing was changed"
	}
	return CodeInternal, "internal error"
}

func badRequest(msg string) error { return &frameError{code: CodeBadRequest, msg: msg} }

func (c *Conn) sessionGet() (string, any, error) {
	s := c.session()
	if s == nil {
		return "", nil, badRequest("connection has no session")
	}
	return TypeSession, sessionData{Session: s.Public()}, nil
}

func (c *Conn) sessionUpdate(ctx context.Context, raw json.RawMessage) (string, any, error) {
	e := c.entry
	if e == nil {
		return "", nil, badRequest("connection has no session")
	}
	var req updateRequest
	if err := decodePayload(raw, &req, `{"data": <merge patch>, "version": <optional version>}`); err != nil {
		return "", nil, err
	}
	if len(req.Data) == 0 {
		return "", nil, badRequest("data must be {\"data\": <merge patch>}")
	}
	// decodePayload held the patch to the strict rules already; what is
	// left to check is that it is an object.
	if !sb.ValidObject(req.Data) {
		return "", nil, badRequest("data must be a JSON object merge patch")
	}
	s, err := c.g.cfg.Manager.Update(ctx, e.id, req.Data, req.Version, sb.Change{Source: sb.SourceWebSocket, ConnectionID: c.id})
	switch {
	case err == nil:
	case errors.Is(err, sb.ErrVersionConflict):
		return "", nil, &frameError{code: CodeBadRequest, msg: "version conflict", err: err}
	case errors.Is(err, sb.ErrNotFound):
		return "", nil, &frameError{code: CodeForbidden, msg: "session is gone", err: err}
	case errors.Is(err, sb.ErrInvalidPatch):
		return "", nil, &frameError{code: CodeBadRequest, msg: "data must be a JSON object merge patch", err: err}
	case errors.Is(err, sb.ErrDataTooLarge):
		maxBytes, _ := c.g.cfg.Manager.DataLimits()
		return "", nil, &frameError{code: CodeBadRequest, msg: fmt.Sprintf("session data would be larger than %d bytes; nothing was changed", maxBytes), err: err}
	case errors.Is(err, sb.ErrDataTooDeep):
		_, maxDepth := c.g.cfg.Manager.DataLimits()
		return "", nil, &frameError{code: CodeBadRequest, msg: fmt.Sprintf("session data would nest arrays and objects deeper than %d levels; nothing was changed", maxDepth), err: err}
	default:
		return "", nil, fmt.Errorf("gateway: session.update: %w", err)
	}
	// Push session.updated to this session's other sockets on this node now;
	// the bus event that follows finds the version already applied here and
	// only reaches the other nodes.
	c.g.applySession(e, s, sb.SourceWebSocket, c)
	c.g.audit.Log(ctx, auditSessionUpdated, auditFields{
		SessionID: e.id, UserID: c.p.UserID, ConnectionID: c.id, Method: string(c.p.Method),
		Source: string(sb.SourceWebSocket), Detail: fmt.Sprintf("version %d", s.Version),
	})
	return TypeAck, ackData{Version: s.Version}, nil
}

func (c *Conn) authRefresh(ctx context.Context, raw json.RawMessage) (string, any, error) {
	g := c.g
	c.mu.Lock()
	p := c.p
	c.mu.Unlock()
	if p.Method != sb.AuthJWT || g.cfg.JWT == nil {
		return "", nil, badRequest("auth.refresh is only for JWT connections")
	}
	var req refreshRequest
	if err := decodePayload(raw, &req, `{"token": <jwt>}`); err != nil {
		return "", nil, err
	}
	if req.Token == "" {
		return "", nil, badRequest("data must be {\"token\": <jwt>}")
	}
	np, err := g.cfg.JWT.Verify(ctx, req.Token)
	if err != nil {
		if errors.Is(err, sb.ErrUnavailable) {
			return "", nil, fmt.Errorf("gateway: auth.refresh: %w", err)
		}
		g.audit.Log(ctx, auditAuthnFailed, auditFields{UserID: p.UserID, ConnectionID: c.id, Method: string(sb.AuthJWT), Reason: "refresh_" + g.jwtRefused(err)})
		return "", nil, &frameError{code: CodeForbidden, msg: "invalid token"}
	}
	if np.UserID != p.UserID || np.SessionID != p.SessionID {
		g.audit.Log(ctx, auditAuthzFail, auditFields{UserID: p.UserID, SessionID: p.SessionID, ConnectionID: c.id, Method: string(sb.AuthJWT), Reason: "refresh_subject_mismatch"})
		return "", nil, &frameError{code: CodeForbidden, msg: "token is for another subject"}
	}
	set, err := sb.CompileScopes(np.Scopes)
	if err != nil {
		g.audit.Log(ctx, auditAuthzFail, auditFields{UserID: p.UserID, SessionID: p.SessionID, ConnectionID: c.id, Method: string(sb.AuthJWT), Reason: "refresh_invalid_scopes"})
		return "", nil, &frameError{code: CodeForbidden, msg: "token carries an invalid scope pattern", err: err}
	}
	c.mu.Lock()
	c.p.ExpiresAt = np.ExpiresAt
	c.mu.Unlock()
	// The new token's scopes apply from the next frame on; without
	// ws:connect the connection closes and this ack is never sent.
	c.replaceScopes(slices.Clone(np.Scopes), &set)
	g.scheduleConnExpiry(c)
	g.audit.Log(ctx, auditTokenRefreshed, auditFields{UserID: p.UserID, SessionID: p.SessionID, ConnectionID: c.id, Method: string(sb.AuthJWT)})
	return TypeAck, ackData{ExpiresAt: timePtr(np.ExpiresAt)}, nil
}

func (c *Conn) custom(ctx context.Context, f inFrame) (string, any, error) {
	g := c.g
	g.hmu.RLock()
	r, ok := g.handlers[f.Type]
	g.hmu.RUnlock()
	if !ok {
		return "", nil, errUnknownType
	}
	if r.scope != "" && !c.holds(r.scope) {
		c.mu.Lock()
		p := c.p
		c.mu.Unlock()
		g.audit.Log(ctx, auditAuthzFail, auditFields{
			SessionID: p.SessionID, UserID: p.UserID, ConnectionID: c.id, Method: string(p.Method),
			Reason: "missing_scope", Detail: f.Type + " requires " + r.scope,
		})
		return "", nil, &frameError{code: CodeForbidden, msg: "missing scope " + r.scope}
	}
	reply, err := r.h(ctx, c, f.Data)
	if err != nil {
		return "", nil, err
	}
	return f.Type + ".result", reply, nil
}

// touch records activity on the bound session, at most one store round trip
// per session per touch interval.
func (c *Conn) touch(ctx context.Context) {
	e := c.entry
	if e == nil {
		return
	}
	g := c.g
	now := g.clock.Now()
	interval := g.cfg.Manager.TouchEvery()
	e.mu.Lock()
	due := !e.removed && !e.touching && now.Sub(e.sess.LastSeenAt) >= interval && now.Sub(e.lastTouchTry) >= interval/8
	var cp *sb.Session
	if due {
		e.touching, e.lastTouchTry = true, now
		cp = e.sess.Clone()
	}
	e.mu.Unlock()
	if !due {
		return
	}
	tctx, cancel := context.WithTimeout(ctx, g.writeTimeout)
	next, err := g.cfg.Manager.Touch(tctx, cp, sb.Change{Source: sb.SourceWebSocket, ConnectionID: c.id})
	cancel()
	e.mu.Lock()
	e.touching = false
	if err == nil && next.LastSeenAt.After(e.sess.LastSeenAt) {
		e.sess.LastSeenAt = next.LastSeenAt
		if next.ExpiresAt.After(e.sess.ExpiresAt) {
			e.sess.ExpiresAt = next.ExpiresAt
			g.scheduleLocked(e)
		}
	}
	e.mu.Unlock()
	if err != nil && !errors.Is(err, sb.ErrNotFound) {
		g.log.Warn("gateway: touching session", "session_id", e.id, "err", err)
	}
}

// info describes the connection for presence queries.
func (c *Conn) info(node string) sb.ConnInfo {
	return sb.ConnInfo{
		ID: c.id, SessionID: c.p.SessionID, UserID: c.p.UserID, Method: c.p.Method,
		NodeID: node, ConnectedAt: c.connectedAt, IP: c.ip, UserAgent: c.ua,
		KeyID: c.p.KeyID,
	}
}
