package gateway

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// clientFrame encodes a frame as a client sends it: first byte b0 (FIN, RSV
// and opcode), masked when masked is set, with a 16-bit extended length
// when ext16 is set.
func clientFrame(b0 byte, masked, ext16 bool, payload []byte) []byte {
	var b []byte
	b = append(b, b0)
	var m byte
	if masked {
		m = frameMasked
	}
	switch {
	case ext16:
		b = append(b, m|126)
		b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	default:
		b = append(b, m|byte(len(payload)))
	}
	if !masked {
		return append(b, payload...)
	}
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	b = append(b, key[:]...)
	for i, p := range payload {
		b = append(b, p^key[i%4])
	}
	return b
}

const (
	opText  = frameFin | websocket.TextMessage
	opClose = frameFin | websocket.CloseMessage
	opPing  = frameFin | websocket.PingMessage
	opPong  = frameFin | websocket.PongMessage
)

// Control frames from the client, alone, split across reads, packed with
// data frames, or malformed, are handled as the WebSocket reader handles
// them: pings are answered with their payload, pongs keep the connection
// alive, and every malformed frame closes the connection with the reader's
// own close code and text. Each case runs on a socket parked in the idle
// poller and on one that has just served a frame.
func TestClientControlFrames(t *testing.T) {
	appPing := clientFrame(opText, true, false, []byte(`{"type":"ping","id":"after"}`))
	long := bytes.Repeat([]byte("p"), 125)
	cases := []struct {
		name string
		// parts are written one after the other; on a parked socket, each
		// after the socket woke for the one before.
		parts [][]byte
		// pongs are the payloads of the pongs the server answers with;
		// without a close, an application ping follows and is answered.
		pongs     []string
		closeCode int
		closeText string
	}{
		{name: "pong", parts: [][]byte{clientFrame(opPong, true, false, []byte("x"))}},
		{name: "empty pong", parts: [][]byte{clientFrame(opPong, true, false, nil)}},
		{name: "ping", parts: [][]byte{clientFrame(opPing, true, false, []byte("abc"))}, pongs: []string{"abc"}},
		{name: "ping of 125 bytes", parts: [][]byte{clientFrame(opPing, true, false, long)}, pongs: []string{string(long)}},
		{name: "ping split after its first byte", parts: split(clientFrame(opPing, true, false, []byte("split")), 1), pongs: []string{"split"}},
		{name: "ping split in its mask", parts: split(clientFrame(opPing, true, false, []byte("mask")), 4), pongs: []string{"mask"}},
		{name: "ping split in its payload", parts: split(clientFrame(opPing, true, false, []byte("payload")), 9), pongs: []string{"payload"}},
		{name: "pong then data in one write", parts: [][]byte{slices.Concat(clientFrame(opPong, true, false, []byte("x")), appPing)}},
		{name: "pings and pongs in one write", parts: [][]byte{slices.Concat(
			clientFrame(opPing, true, false, []byte("1")), clientFrame(opPong, true, false, nil),
			clientFrame(opPing, true, false, []byte("2")))}, pongs: []string{"1", "2"}},
		{name: "pong then a split data frame", parts: split(slices.Concat(clientFrame(opPong, true, false, nil), appPing), 9)},
		{name: "ping with a 126-byte payload", parts: [][]byte{clientFrame(opPing, true, true, bytes.Repeat([]byte("p"), 126))},
			closeCode: websocket.CloseProtocolError, closeText: "len > 125 for control"},
		{name: "ping of 10 bytes in a 16-bit length", parts: [][]byte{clientFrame(opPing, true, true, []byte("0123456789"))},
			closeCode: websocket.CloseProtocolError, closeText: "len > 125 for control"},
		{name: "unmasked pong", parts: [][]byte{clientFrame(opPong, false, false, []byte("x"))},
			closeCode: websocket.CloseProtocolError, closeText: "bad MASK"},
		{name: "unmasked ping", parts: [][]byte{clientFrame(opPing, false, false, nil)},
			closeCode: websocket.CloseProtocolError, closeText: "bad MASK"},
		{name: "fragmented ping", parts: [][]byte{clientFrame(websocket.PingMessage, true, false, []byte("x"))},
			closeCode: websocket.CloseProtocolError, closeText: "FIN not set on control"},
		{name: "pong with RSV1", parts: [][]byte{clientFrame(opPong|0x40, true, false, nil)},
			closeCode: websocket.CloseProtocolError, closeText: "RSV1 set"},
		{name: "ping with RSV2 and RSV3", parts: [][]byte{clientFrame(opPing|0x30, true, false, nil)},
			closeCode: websocket.CloseProtocolError, closeText: "RSV2 set, RSV3 set"},
		{name: "reserved control opcode", parts: [][]byte{clientFrame(frameFin|0xb, true, false, nil)},
			closeCode: websocket.CloseProtocolError, closeText: "bad opcode 11"},
		{name: "pong then an unmasked data frame", parts: [][]byte{slices.Concat(
			clientFrame(opPong, true, false, nil), clientFrame(opText, false, false, []byte(`{"type":"ping"}`)))},
			closeCode: websocket.CloseProtocolError, closeText: "bad MASK"},
		{name: "ping then close", parts: [][]byte{slices.Concat(
			clientFrame(opPing, true, false, []byte("last")), clientFrame(opClose, true, false, websocket.FormatCloseMessage(4000, "bye")))},
			pongs: []string{"last"}, closeCode: 4000},
		{name: "close with a bad code", parts: [][]byte{clientFrame(opClose, true, false, []byte{0x03, 0xe7})},
			closeCode: websocket.CloseProtocolError, closeText: "bad close code 999"},
	}
	for _, parked := range []bool{true, false} {
		t.Run(fmt.Sprintf("parked=%v", parked), func(t *testing.T) {
			e := newEnv(t, nil)
			_, tok := e.session("alice")
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					runControlCase(t, e, tok, parked, tc.parts, tc.pongs, tc.closeCode, tc.closeText)
				})
			}
		})
	}
}

// split cuts b in two at i.
func split(b []byte, i int) [][]byte { return [][]byte{b[:i], b[i:]} }

func runControlCase(t *testing.T, e *env, tok string, parked bool, parts [][]byte, pongs []string, closeCode int, closeText string) {
	ws, _, err := websocket.DefaultDialer.Dial(e.url+"/ws", bearer(tok))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	c := &client{t: t, ws: ws}
	var w welcomeData
	if f := c.read(); f.Type != TypeWelcome || json.Unmarshal(f.Data, &w) != nil {
		t.Fatalf("first frame %q %s, want welcome", f.Type, f.Data)
	}
	conn := e.g.reg.conn(w.ConnectionID)
	got := make(chan string, 16)
	c.ws.SetPongHandler(func(data string) error {
		got <- data
		return nil
	})
	poller := e.g.idle.Load() != nil
	if parked && poller {
		// A pong parks the socket at once, without the linger that
		// follows the welcome.
		if err := ws.WriteControl(websocket.PongMessage, nil, time.Now().Add(10*time.Second)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the socket parked", func() bool { return conn.parked.Load() })
	} else {
		c.send(TypePing, "before", nil)
		c.readType(TypePong)
	}
	before := conn.deadline.Load()
	nc := c.ws.NetConn()
	for i, p := range parts {
		if i > 0 && parked && poller {
			waitFor(t, "the socket woken", func() bool { return !conn.parked.Load() })
		}
		if _, err := nc.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if closeCode != 0 {
		var ce *websocket.CloseError
		var err error
		for err == nil {
			_, err = c.tryRead()
		}
		if !errors.As(err, &ce) || ce.Code != closeCode || ce.Text != closeText {
			t.Fatalf("connection ended with %v, want close %d %q", err, closeCode, closeText)
		}
	} else {
		if !bytes.Contains(bytes.Join(parts, nil), []byte(`"after"`)) {
			// Control frames alone: they moved the read deadline.
			waitFor(t, "the read deadline moved", func() bool { return conn.deadline.Load() > before })
			if _, err := nc.Write(clientFrame(opText, true, false, []byte(`{"type":"ping","id":"after"}`))); err != nil {
				t.Fatal(err)
			}
		}
		if f := c.readType(TypePong); f.ID != "after" {
			t.Fatalf("pong %q, want after", f.ID)
		}
		waitFor(t, "the read deadline moved", func() bool { return conn.deadline.Load() > before })
	}
	var answered []string
	for len(got) > 0 {
		answered = append(answered, <-got)
	}
	if strings.Join(answered, "|") != strings.Join(pongs, "|") {
		t.Fatalf("pongs %q, want %q", answered, pongs)
	}
}
