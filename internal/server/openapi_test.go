package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sessionbridge/sessionbridge/httpapi"
)

// TestOpenAPIMatchesServer: the document the server serves names every
// route of its mux (the API's route table, the gateway and the metrics),
// and the server answers every operation of the document itself rather
// than with "no such route", a 405 or the dashboard.
func TestOpenAPIMatchesServer(t *testing.T) {
	r := start(t, Config{AdminToken: keysAdminToken})
	resp, body := r.do("GET", "/openapi.json", "", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	routes := (&httpapi.API{Sessions: &httpapi.Sessions{}}).Routes()
	for _, rt := range routes {
		if _, ok := doc.Paths[rt.Path]; !ok {
			t.Errorf("the served document lacks %s", rt.Path)
		}
	}
	for _, p := range []string{"/ws", "/metrics"} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("the served document lacks %s, which the server serves", p)
		}
	}
	fill := strings.NewReplacer("{id}", "00AAAAAAAAAAAAAA", "{user_id}", "alice")
	h := r.srv.Handler()
	n := 0
	for path, ops := range doc.Paths {
		for method := range ops {
			n++
			req := httptest.NewRequest(strings.ToUpper(method), fill.Replace(path), strings.NewReader("{}"))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			res := rec.Result()
			if res.StatusCode == http.StatusMethodNotAllowed || res.Header.Get("Content-Security-Policy") != "" ||
				(res.StatusCode == http.StatusNotFound && strings.Contains(rec.Body.String(), "no such route")) {
				t.Errorf("%s %s: the server does not serve it (%d %.80s)", strings.ToUpper(method), path, res.StatusCode, rec.Body.String())
			}
		}
	}
	if n < len(routes) {
		t.Fatalf("only %d operations probed for %d routes", n, len(routes))
	}
}
