package httpapi

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// Session data is capped in size and depth after the patch is applied: small
// patches that add up are refused with 413 data_too_large, deep data with
// 400 data_too_deep, and a refused patch changes nothing.
func TestSessionDataCaps(t *testing.T) {
	f := newFixture(t, func(f *fixture) { f.mgr.MaxDataBytes, f.mgr.MaxDataDepth = 200, 3 })
	tok, ps := f.login("alice")
	chunk := strings.Repeat("x", 60)
	for _, k := range []string{"a", "b"} {
		resp := f.do(req{method: "PATCH", path: "/auth/session", cookie: tok, body: `{"` + k + `":"` + chunk + `"}`})
		expect(t, resp, http.StatusOK)
	}
	for _, q := range []req{
		{method: "PATCH", path: "/auth/session", cookie: tok, body: `{"c":"` + chunk + `"}`},
		{method: "PATCH", path: "/api/v1/sessions/" + ps.ID, header: adminHeader(), body: `{"data":{"c":"` + chunk + `"}}`},
		{method: "POST", path: "/api/v1/sessions", header: adminHeader(), body: `{"user_id":"bob","data":{"big":"` + strings.Repeat("x", 200) + `"}}`},
	} {
		resp := f.do(q)
		expect(t, resp, http.StatusRequestEntityTooLarge)
		if code := resp.errorCode(t); code != CodeDataTooLarge || !strings.Contains(string(resp.body), "200 bytes") {
			t.Errorf("%s %s: %s; want data_too_large naming 200 bytes", q.method, q.path, resp.body)
		}
	}
	for _, q := range []req{
		{method: "PATCH", path: "/auth/session", cookie: tok, body: `{"d":{"e":{"f":{}}}}`},
		{method: "POST", path: "/api/v1/sessions", header: adminHeader(), body: `{"user_id":"bob","data":{"d":[[{}]]}}`},
	} {
		resp := f.do(q)
		expect(t, resp, http.StatusBadRequest)
		if code := resp.errorCode(t); code != CodeDataTooDeep || !strings.Contains(string(resp.body), "3 levels") {
			t.Errorf("%s %s: %s; want data_too_deep naming 3 levels", q.method, q.path, resp.body)
		}
	}
	s, err := f.mgr.Get(context.Background(), ps.ID)
	if err != nil || s.Version != ps.Version+2 {
		t.Fatalf("version %v (%v); want the two accepted patches only", s, err)
	}
	if list, err := f.mgr.List(context.Background(), "bob"); err != nil || len(list) != 0 {
		t.Fatalf("refused creates left %d sessions (%v)", len(list), err)
	}
}
