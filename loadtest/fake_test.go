package loadtest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// fakeNode is a minimal implementation of the server contract the tool
// drives (admin API, /ws, /metrics), so that the tool's own logic is tested
// without depending on the real server. The end-to-end test drives the real
// server.
type fakeNode struct {
	t     *testing.T
	token string
	srv   *httptest.Server
	conns prometheus.Gauge
	wg    sync.WaitGroup

	mu       sync.Mutex
	sessions map[string]*fakeSession // by id: sessions and API keys
	// keyReason is the close reason of the sockets of a revoked key;
	// empty means api_key_revoked.
	keyReason string
}

// fakeSession is a session, or an API key when key is set.
type fakeSession struct {
	id, user, token string
	key             bool
	version         uint64
	socks           map[*fakeSock]bool
}

type fakeSock struct {
	mu sync.Mutex
	c  *websocket.Conn
}

func (s *fakeSock) write(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.c.WriteMessage(websocket.TextMessage, b)
}

func (s *fakeSock) close(code int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason))
	_ = s.c.Close()
}

func newFakeNode(t *testing.T, adminToken string) *fakeNode {
	f := &fakeNode{t: t, token: adminToken, sessions: map[string]*fakeSession{}}
	reg := prometheus.NewRegistry()
	f.conns = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sessionbridge_connections"})
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), f.conns)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /api/v1/sessions", f.admin(f.create))
	mux.HandleFunc("PATCH /api/v1/sessions/{id}", f.admin(f.patch))
	mux.HandleFunc("DELETE /api/v1/sessions/{id}", f.admin(f.delete))
	mux.HandleFunc("DELETE /api/v1/users/{user}/sessions", f.admin(f.deleteUser))
	mux.HandleFunc("POST /api/v1/keys", f.admin(f.createKey))
	mux.HandleFunc("DELETE /api/v1/keys/{id}", f.admin(f.delete))
	mux.HandleFunc("GET /ws", f.ws)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		f.srv.CloseClientConnections()
		f.srv.Close()
		f.wg.Wait()
	})
	return f
}

func (f *fakeNode) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+f.token {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}

func rnd() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (f *fakeNode) create(w http.ResponseWriter, r *http.Request) {
	var in struct {
		UserID string `json:"user_id"`
	}
	if json.NewDecoder(r.Body).Decode(&in) != nil || in.UserID == "" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	s := &fakeSession{id: rnd(), user: in.UserID, version: 1, socks: map[*fakeSock]bool{}}
	s.token = s.id + "." + rnd()
	f.mu.Lock()
	f.sessions[s.id] = s
	f.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"id": s.id, "token": s.token, "expires_at": "2030-01-01T00:00:00Z"})
}

func (f *fakeNode) createKey(w http.ResponseWriter, r *http.Request) {
	var in struct {
		UserID string   `json:"user_id"`
		Name   string   `json:"name"`
		Scopes []string `json:"scopes"`
	}
	if json.NewDecoder(r.Body).Decode(&in) != nil || in.UserID == "" || in.Name == "" || len(in.Scopes) != 1 || in.Scopes[0] != "ws:connect" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	k := &fakeSession{id: rnd(), user: in.UserID, key: true, socks: map[*fakeSock]bool{}}
	k.token = "sbk_" + k.id + "_" + rnd()
	f.mu.Lock()
	f.sessions[k.id] = k
	f.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"id": k.id, "key": k.token, "user_id": k.user})
}

// keys counts the API keys the node holds.
func (f *fakeNode) keys() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, s := range f.sessions {
		if s.key {
			n++
		}
	}
	return n
}

func (f *fakeNode) patch(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	s := f.sessions[r.PathValue("id")]
	if s == nil {
		f.mu.Unlock()
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	s.version++
	v := s.version
	socks := make([]*fakeSock, 0, len(s.socks))
	for k := range s.socks {
		socks = append(socks, k)
	}
	f.mu.Unlock()
	b, _ := json.Marshal(map[string]any{"type": "session.updated", "data": map[string]any{
		"session": map[string]any{"id": s.id, "version": v}, "source": "api"}})
	for _, k := range socks {
		k.write(b)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"id": s.id, "version": v})
}

func (f *fakeNode) remove(ids ...string) int {
	type closing struct {
		k      *fakeSock
		reason string
	}
	var socks []closing
	n := 0
	f.mu.Lock()
	for _, id := range ids {
		if s := f.sessions[id]; s != nil {
			n++
			delete(f.sessions, id)
			reason := "session_revoked"
			if s.key {
				reason = "api_key_revoked"
				if f.keyReason != "" {
					reason = f.keyReason
				}
			}
			for k := range s.socks {
				socks = append(socks, closing{k, reason})
			}
		}
	}
	f.mu.Unlock()
	for _, c := range socks {
		c.k.close(4401, c.reason)
	}
	return n
}

func (f *fakeNode) delete(w http.ResponseWriter, r *http.Request) {
	if f.remove(r.PathValue("id")) == 0 {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeNode) deleteUser(w http.ResponseWriter, r *http.Request) {
	var ids []string
	f.mu.Lock()
	for id, s := range f.sessions {
		if s.user == r.PathValue("user") {
			ids = append(ids, id)
		}
	}
	f.mu.Unlock()
	f.remove(ids...)
	_ = json.NewEncoder(w).Encode(map[string]any{"revoked": ids})
}

var fakeUpgrader = websocket.Upgrader{ReadBufferSize: 512, WriteBufferSize: 512}

func (f *fakeNode) ws(w http.ResponseWriter, r *http.Request) {
	// A session token comes in X-Session-Token, an API key as a bearer.
	tok, isKey := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer sbk_")
	var id string
	if isKey {
		id, _, _ = strings.Cut(tok, "_")
		tok = "sbk_" + tok
	} else {
		tok = r.Header.Get("X-Session-Token")
		id, _, _ = strings.Cut(tok, ".")
	}
	f.mu.Lock()
	s := f.sessions[id]
	f.mu.Unlock()
	if s == nil || s.token != tok || s.key != isKey {
		http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
		return
	}
	c, err := fakeUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	k := &fakeSock{c: c}
	f.mu.Lock()
	if f.sessions[id] == nil {
		f.mu.Unlock()
		k.close(4401, "session_revoked")
		return
	}
	s.socks[k] = true
	f.mu.Unlock()
	f.conns.Inc()
	k.write([]byte(`{"type":"welcome","data":{"user_id":"` + s.user + `"}}`))
	f.wg.Go(func() {
		defer f.conns.Dec()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				break
			}
		}
		f.mu.Lock()
		delete(s.socks, k)
		f.mu.Unlock()
		k.mu.Lock()
		_ = c.Close()
		k.mu.Unlock()
	})
}
