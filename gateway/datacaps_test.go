package gateway

import (
	"context"
	"strings"
	"testing"
)

// session.update is capped like any update: the merged data may not pass the
// Manager's size or depth cap, and a refusal is error bad_request that
// changes nothing and keeps the connection.
func TestSessionUpdateDataCaps(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Manager.MaxDataBytes, c.Manager.MaxDataDepth = 200, 3 })
	s, tok := e.session("alice")
	c, _ := e.dial(bearer(tok), "")
	chunk := strings.Repeat("x", 60)
	for _, k := range []string{"a", "b"} {
		c.send("session.update", k, map[string]any{"data": map[string]any{k: chunk}})
		if f := c.read(); f.Type != TypeAck {
			t.Fatalf("update %s: %+v %s", k, f, f.Data)
		}
	}
	c.send("session.update", "big", map[string]any{"data": map[string]any{"c": chunk}})
	if d := errorOf(t, c.read()); d.Code != CodeBadRequest || d.ID != "big" || !strings.Contains(d.Message, "larger than 200 bytes") {
		t.Fatalf("update past the size cap: %+v", d)
	}
	c.sendRaw([]byte(`{"type":"session.update","id":"deep","data":{"data":{"d":{"e":{"f":{}}}}}}`))
	if d := errorOf(t, c.read()); d.Code != CodeBadRequest || d.ID != "deep" || !strings.Contains(d.Message, "deeper than 3 levels") {
		t.Fatalf("update past the depth cap: %+v", d)
	}
	got, err := e.mgr.Get(context.Background(), s.ID)
	if err != nil || got.Version != s.Version+2 {
		t.Fatalf("refused updates changed the session: %v, %v", got, err)
	}
	c.send("ping", "p", nil)
	if f := c.read(); f.Type != TypePong {
		t.Fatalf("ping after refusals: %+v", f)
	}
}
