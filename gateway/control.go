package gateway

import (
	"errors"

	"github.com/gorilla/websocket"
)

// Bits of a WebSocket frame's first two bytes (RFC 6455 §5.2).
const (
	frameFin      = 0x80
	frameRSV      = 0x70
	frameOpcode   = 0x0f
	frameMasked   = 0x80
	frameLen7     = 0x7f
	maskKeyLen    = 4
	maxControlLen = 125
)

// controlFrame returns the opcode and the length on the wire of the frame
// that starts with the bytes b0 and b1 if the read loop takes it itself: a
// pong or a ping with FIN set, no RSV bit, the mask bit set and a payload of
// at most 125 bytes in the 7-bit length. For anything else (data, close,
// anything malformed or unusual) it returns 0, 0: that is left to the
// WebSocket reader, whose protocol errors and close codes stay its own.
func controlFrame(b0, b1 byte) (opcode, size int) {
	op := int(b0 & frameOpcode)
	if b0&(frameFin|frameRSV) != frameFin || b1&frameMasked == 0 ||
		(op != websocket.PingMessage && op != websocket.PongMessage) {
		return 0, 0
	}
	n := int(b1 & frameLen7)
	if n > maxControlLen {
		return 0, 0
	}
	return op, 2 + maskKeyLen + n
}

// takeControl consumes a complete pong or ping at the head of the read
// buffer, with the same effect as the reader's handlers (see readLoop), and
// reports whether it did. It is called at a message boundary only, where
// the reader holds no state of a frame. It reads from the socket only while
// a frame's header is incomplete, or the rest of a control frame it has
// recognised; an error of that read ends the connection as the reader's
// would have (its classification in finish is the same).
//
// A pong does not enter the reader, and a socket woken for a pong alone
// parks again at once instead of waiting in the reader for a data frame.
func (c *Conn) takeControl() (bool, error) {
	head, err := c.br.Peek(2)
	if err != nil {
		return false, err
	}
	op, size := controlFrame(head[0], head[1])
	if op == 0 {
		return false, nil
	}
	frame, err := c.br.Peek(size)
	if err != nil {
		return false, err
	}
	var payload [maxControlLen]byte
	n := copy(payload[:], frame[2+maskKeyLen:])
	key := frame[2 : 2+maskKeyLen]
	for i := range n {
		payload[i] ^= key[i%maskKeyLen]
	}
	_, _ = c.br.Discard(size)
	c.extendUnlessClosing()
	if op == websocket.PingMessage {
		return true, c.answerPing(payload[:n])
	}
	return true, nil
}

// answerPing writes the pong a client's ping asks for; a close already sent
// is no failure.
func (c *Conn) answerPing(data []byte) error {
	err := c.ws.WriteControl(websocket.PongMessage, data, c.g.realNow().Add(c.g.writeTimeout))
	if errors.Is(err, websocket.ErrCloseSent) {
		return nil
	}
	return err
}
