package gateway

import (
	"bufio"
	"io"
	"sync"
)

// Read buffers are lent to sockets while they read. The WebSocket reader
// keeps one *bufio.Reader for the life of the socket, but an idle socket's
// read loop parks outside it (see waitReadable) with nothing buffered: the
// reader's buffer is then handed back to fullReaders and the reader left
// empty, and a buffer is taken again when data arrives. An idle socket holds
// the reader's few words, not its readBufferSize bytes.
var (
	// fullReaders hold a buffer of readBufferSize and no source.
	fullReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}
	// emptyReaders hold nothing; they carry a buffer into fullReaders.
	emptyReaders = sync.Pool{New: func() any { return new(bufio.Reader) }}
)

// newReadBuffer returns a reader of readBufferSize on src.
func newReadBuffer(src io.Reader) *bufio.Reader {
	br := fullReaders.Get().(*bufio.Reader)
	br.Reset(src)
	return br
}

// releaseReadBuffer hands br's buffer back and leaves br empty. br must hold
// no data and be used by nobody until lendReadBuffer.
func releaseReadBuffer(br *bufio.Reader) {
	h := emptyReaders.Get().(*bufio.Reader)
	*h = *br
	h.Reset(nil)
	*br = bufio.Reader{}
	fullReaders.Put(h)
}

// lendReadBuffer gives the emptied br a buffer again, reading from src.
func lendReadBuffer(br *bufio.Reader, src io.Reader) {
	h := fullReaders.Get().(*bufio.Reader)
	h.Reset(src)
	*br = *h
	*h = bufio.Reader{}
	emptyReaders.Put(h)
}
