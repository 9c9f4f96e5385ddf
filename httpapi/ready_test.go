package httpapi

import (
	"net/http"
	"testing"
)

// TestReadyDetails: a ready /readyz carries the details the server adds
// (such as the Redis persistence), which never override the status nor
// make the node unready.
func TestReadyDetails(t *testing.T) {
	f := newFixture(t, func(f *fixture) {
		f.api.ReadyDetails = func() map[string]any {
			return map[string]any{"status": "overridden", "redis_persistence": map[string]any{"mode": "rdb", "durable": false}}
		}
	})
	resp := f.do(req{method: "GET", path: "/readyz"})
	expect(t, resp, http.StatusOK)
	var got struct {
		Status      string `json:"status"`
		Persistence struct {
			Mode    string `json:"mode"`
			Durable bool   `json:"durable"`
		} `json:"redis_persistence"`
	}
	resp.json(t, &got)
	if got.Status != "ready" || got.Persistence.Mode != "rdb" || got.Persistence.Durable {
		t.Fatalf("/readyz = %s", resp.body)
	}
	f.ready.Store(false)
	expect(t, f.do(req{method: "GET", path: "/readyz"}), http.StatusServiceUnavailable)
}
