package gateway

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// waitReadable blocks until the socket has data (or EOF, or an error) without
// consuming any of it. The read loop parks here, a few frames deep, instead
// of deep inside the WebSocket reader: the runtime then shrinks an idle
// socket's goroutine stack to its minimum.
func waitReadable(rc syscall.RawConn) error {
	var b [1]byte
	return rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if errors.Is(err, syscall.EAGAIN) {
			return false
		}
		_ = n // data, EOF (0) or an error: the WebSocket reader will see it
		return true
	})
}

// idlePoller holds the idle sockets of a gateway without a goroutine each:
// a socket whose read loop would park registers its descriptor here (epoll,
// one-shot) and its goroutine ends; when data (or EOF) arrives, or the
// socket must be woken for another reason (see wake), a goroutine is started
// for it again. One goroutine serves all of them, and it waits in the Go
// runtime's own poller (the epoll set is itself a pollable descriptor), not
// in a blocking system call.
type idlePoller struct {
	epfd int
	// ep is epfd as a runtime-polled file; closing it stops run.
	ep   *os.File
	done chan struct{}

	mu     sync.Mutex
	closed bool
	conns  map[int32]*Conn // parked, by descriptor
}

// newIdlePoller starts a poller, or returns nil when the system refuses one
// (read loops then park in their own goroutines, as off Linux).
func newIdlePoller() *idlePoller {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		_ = syscall.Close(epfd)
		return nil
	}
	ep := os.NewFile(uintptr(epfd), "idle sockets")
	rc, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		return nil
	}
	ip := &idlePoller{epfd: epfd, ep: ep, done: make(chan struct{}), conns: make(map[int32]*Conn)}
	go ip.run(rc)
	return ip
}

func (p *idlePoller) run(rc syscall.RawConn) {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 128)
	var woken []*Conn
	for {
		n := 0
		err := rc.Read(func(fd uintptr) bool {
			var err error
			n, err = syscall.EpollWait(int(fd), events, 0)
			return err == nil && n > 0
		})
		if err != nil {
			return // the file was closed: stop
		}
		p.mu.Lock()
		for _, ev := range events[:n] {
			if c := p.conns[ev.Fd]; c != nil {
				woken = append(woken, c)
			}
		}
		p.mu.Unlock()
		for _, c := range woken {
			p.wake(c)
		}
		clear(woken)
		woken = woken[:0]
	}
}

// park registers c, whose read loop has nothing buffered, and reports
// whether it did: the caller's goroutine must then end and leave c alone,
// since the socket's next goroutine may already be running.
func (p *idlePoller) park(c *Conn) bool {
	if p == nil || c.fd < 0 {
		return false
	}
	// Under p.mu, so that stop cannot close the epoll set meanwhile.
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c.fd] = c
	c.parked.Store(true)
	// Level-triggered and one-shot: data already there is reported at once,
	// and each registration wakes the socket once.
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: c.fd}
	// Inside Control, which holds the socket open: a concurrent close
	// (abort) cannot free the descriptor, and a new connection cannot take
	// its number, while it is being registered.
	var err error
	if cerr := c.rc.Control(func(fd uintptr) {
		err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
		if errors.Is(err, syscall.ENOENT) {
			err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
		}
	}); cerr != nil {
		err = cerr
	}
	if err == nil {
		return true
	}
	if c.parked.CompareAndSwap(true, false) {
		if p.conns[c.fd] == c {
			delete(p.conns, c.fd)
		}
		return false
	}
	// Woken meanwhile (dropped, or its deadline passed): the waker runs the
	// read loop.
	return true
}

// wake starts a goroutine for c's read loop if c is parked: when its socket
// is readable, when its read deadline passed (the pinger looks), when its
// close handshake's grace ends, or when it is dropped.
func (p *idlePoller) wake(c *Conn) {
	if p == nil || !c.parked.CompareAndSwap(true, false) {
		return
	}
	p.forget(c)
	go c.resume()
}

func (p *idlePoller) forget(c *Conn) {
	p.mu.Lock()
	if p.conns[c.fd] == c {
		delete(p.conns, c.fd)
	}
	p.mu.Unlock()
}

// stop ends the poller and wakes every socket still parked; sockets park in
// their own goroutines from then on.
func (p *idlePoller) stop() {
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	parked := make([]*Conn, 0, len(p.conns))
	for _, c := range p.conns {
		parked = append(parked, c)
	}
	p.mu.Unlock()
	_ = p.ep.Close()
	<-p.done
	for _, c := range parked {
		p.wake(c)
	}
}

// sendQueueEmpty reports whether the socket has nothing queued to send
// (TIOCOUTQ: bytes written and not yet acknowledged by the peer). A small
// write to such a socket goes to the kernel at once and cannot block.
func sendQueueEmpty(rc syscall.RawConn) bool {
	if rc == nil {
		return false
	}
	empty := false
	_ = rc.Control(func(fd uintptr) {
		var n int32
		_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n)))
		empty = errno == 0 && n == 0
	})
	return empty
}

// descriptor returns rc's file descriptor, or -1.
func descriptor(rc syscall.RawConn) int32 {
	fd := int32(-1)
	_ = rc.Control(func(d uintptr) { fd = int32(d) })
	return fd
}

// parkedSockets returns how many sockets wait in the idle poller.
func (g *Gateway) parkedSockets() int {
	p := g.idle.Load()
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}
