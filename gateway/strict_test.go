package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
)

// A frame must read one way only, so that what a proxy or the application
// inspected is what the gateway acts on: a case variant of a member name, a
// second member of the same name or an invalid escape is refused with
// bad_request, never resolved, and the connection stays.
func TestAmbiguousFramesRefused(t *testing.T) {
	e := newEnv(t, nil)
	s, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	for _, fr := range []struct{ raw, id, why string }{
		{`{"type":"ping","TYPE":"session.update","id":"a1"}`, "a1", `unknown member at "/TYPE"`},
		{`{"type":"ping","id":"a2","Data":{}}`, "a2", `unknown member at "/Data"`},
		{`{"type":"session.get","type":"ping","id":"a3"}`, "", `duplicate member name at "/type"`},
		{`{"type":"ping","id":"a4","id":"a5"}`, "", `duplicate member name at "/id"`},
		{`{"type":"session.update","id":"u1","data":{"data":{"role":"user","role":"admin"}}}`, "", `duplicate member name at "/data/data/role"`},
		{`{"type":"session.update","id":"u2","data":{"data":{"theme":"light"},"DATA":{"role":"admin"}}}`, "u2", `unknown member at "/DATA"`},
		{`{"type":"session.update","id":"u3","data":{"data":{"theme":"light"},"version":1,"Version":2}}`, "u3", `unknown member at "/Version"`},
		{`{"type":"session.update","id":"u4","data":{"data":{"name":"\udc00root"}}}`, "", "invalid UTF-8"},
		{`{"type":"session.update","id":"u5","data":{"data":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}}`, "", "nested too deep"},
		{`{"type":"ping","id":"a6"} {"type":"session.get"}`, "", "malformed JSON"},
	} {
		c.sendRaw([]byte(fr.raw))
		f := c.read()
		d := errorOf(t, f)
		if d.Code != CodeBadRequest || f.ID != fr.id || !strings.Contains(d.Message, fr.why) {
			t.Errorf("%.70s: error %+v (frame id %q); want bad_request, id %q, saying %s", fr.raw, d, f.ID, fr.id, fr.why)
		}
	}
	got, err := e.mgr.Get(context.Background(), s.ID)
	if err != nil || got.Version != s.Version || string(got.Data) != `{"theme":"dark"}` {
		t.Fatalf("refused updates changed the session: %v %s", err, got.Data)
	}
	c.send("ping", "p", nil)
	if f := c.read(); f.Type != TypePong || f.ID != "p" {
		t.Fatalf("ping after refusals: %+v", f)
	}
}

func TestAmbiguousRefreshRefused(t *testing.T) {
	e := newEnv(t, nil)
	now := e.clock.Now()
	e.jwt.add("a.b.c", sb.Principal{UserID: "bob", Scopes: []string{"ws:connect", "auth.refresh"}, ExpiresAt: now.Add(10 * time.Minute)})
	e.jwt.add("a.b.d", sb.Principal{UserID: "bob", Scopes: []string{"ws:connect", "auth.refresh"}, ExpiresAt: now.Add(time.Hour)})
	c, w := e.dial(bearer("a.b.c"), "")
	for _, raw := range []string{
		`{"type":"auth.refresh","id":"r1","data":{"token":"bogus","TOKEN":"a.b.d"}}`,
		`{"type":"auth.refresh","id":"r2","data":{"token":"bogus","token":"a.b.d"}}`,
	} {
		c.sendRaw([]byte(raw))
		if d := errorOf(t, c.read()); d.Code != CodeBadRequest {
			t.Errorf("%s: %+v, want bad_request", raw, d)
		}
	}
	if p := e.g.reg.conn(w.ConnectionID).Principal(); !p.ExpiresAt.Equal(now.Add(10 * time.Minute)) {
		t.Fatalf("a refused refresh extended the connection")
	}
}

func TestDecodeFrameStrict(t *testing.T) {
	for _, c := range []struct{ in, why, id string }{
		{"{\"type\":\"ping\",\"id\":\"\xff\"}", "invalid UTF-8 at byte 21", ""},
		{"{\"type\":\"x\",\"data\":{\"to\":\"\xfebob\"}}", "invalid UTF-8", ""},
		{`{"type":"x","id":"i","data":{"to":"a","to":"b"}}`, `duplicate member name at "/data/to"`, ""},
		{`{"type":"x","id":"i","Id":"j"}`, `unknown member at "/Id"`, "i"},
		{`{"type":1,"id":"i"}`, `invalid value at "/type" (want a string)`, "i"},
		{`{"type":"x","id":"` + strings.Repeat("i", maxFrameIDLen+1) + `","extra":1}`, "unknown member", ""},
	} {
		f, err := decodeFrame([]byte(c.in))
		if !errors.Is(err, errBadFrame) || !strings.Contains(err.Error(), c.why) || f.ID != c.id {
			t.Errorf("decodeFrame(%.60q) = %+v, %v; want errBadFrame saying %s, id %q", c.in, f, err, c.why, c.id)
		}
	}
}

// A token verifier is a door for user IDs too: a principal whose user ID
// CheckUserID refuses does not connect.
func TestVerifierUserIDChecked(t *testing.T) {
	e := newEnv(t, nil)
	exp := e.clock.Now().Add(time.Hour)
	e.jwt.add("a.b.c", sb.Principal{UserID: "\xffroot", ExpiresAt: exp})
	e.jwt.add("a.b.d", sb.Principal{UserID: "\ufffdroot", ExpiresAt: exp})
	key := e.rawKey(sb.APIKey{UserID: "root\n", Name: "bad owner"})
	for _, h := range []http.Header{bearer("a.b.c"), bearer("a.b.d"), bearer(key)} {
		_, resp, err := e.tryDial(h, "")
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("dial with %v: %v, %v; want 401", h, resp, err)
		}
	}
	if e.g.Len() != 0 {
		t.Fatalf("%d connections registered", e.g.Len())
	}
}
