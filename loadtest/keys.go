package loadtest

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// apiKeyPrefix starts every API key; a bearer with it is authenticated as a
// key by the server.
const apiKeyPrefix = "sbk_"

// keyTTL is the lifetime of the keys a run creates, for the same reason as
// sessionTTL.
const keyTTL = time.Hour

// createdKey is the part of the admin API's answer to POST /api/v1/keys the
// tool needs. Key is the secret: it goes to the dial and nowhere else.
type createdKey struct {
	ID  string `json:"id"`
	Key string `json:"key"`
}

// createKey issues an API key for userID that may open sockets and nothing
// else.
func (a *adminClient) createKey(ctx context.Context, base, userID string, ttl time.Duration) (createdKey, error) {
	return a.createLimitedKey(ctx, base, userID, ttl, nil)
}

// createLimitedKey is createKey with the key's own rate limits (the
// "limits" object of POST /api/v1/keys); nil means the server's defaults.
func (a *adminClient) createLimitedKey(ctx context.Context, base, userID string, ttl time.Duration, limits map[string]any) (createdKey, error) {
	in := map[string]any{"user_id": userID, "name": "bench", "scopes": []string{"ws:connect"}, "ttl_seconds": int(ttl / time.Second)}
	if limits != nil {
		in["limits"] = limits
	}
	var out createdKey
	if err := a.do(ctx, http.MethodPost, base, "/api/v1/keys", in, &out); err != nil {
		return createdKey{}, err
	}
	if out.ID == "" || !strings.HasPrefix(out.Key, apiKeyPrefix) {
		return createdKey{}, fmt.Errorf("POST /api/v1/keys: answer without id or key")
	}
	return out, nil
}

func (a *adminClient) deleteKey(ctx context.Context, base, id string) error {
	return a.do(ctx, http.MethodDelete, base, "/api/v1/keys/"+url.PathEscape(id), nil, nil)
}

// keyIdle is one idle socket of the keyrevoke scenario and its key.
type keyIdle struct {
	node    string
	id, key string
	conn    *wsConn
	revoked bool
}

// keyRevoke runs the keyrevoke scenario: one API key per idle socket, the
// keys created on node A, the sockets opened with them on the B nodes, then
// up to Samples keys revoked on A one at a time, each timed until its
// socket on B is closed with 4401 api_key_revoked. It closes its sockets
// and deletes the keys left before it returns.
//
// One key per socket, as the revoke scenario has one session per socket, so
// that the two figures differ only in the credential.
func (r *runner) keyRevoke(ctx context.Context) *KeyRevokeResult {
	cfg := r.cfg
	n := cfg.Sockets * len(r.b)
	socks := make([]keyIdle, n)
	res := &KeyRevokeResult{Keys: n, Sockets: n}

	r.prog.set("create keys", n)
	createLat := make([]time.Duration, n)
	var kerr errSink
	forEach(ctx, n, cfg.Concurrency, 0, func(ctx context.Context, i int) {
		socks[i].node = r.b[i%len(r.b)]
		st := time.Now()
		k, err := r.admin.createKey(ctx, r.a, r.user("key", i), keyTTL)
		d := time.Since(st)
		r.prog.step(err)
		if err != nil {
			kerr.add(err)
			return
		}
		socks[i].id, socks[i].key, createLat[i] = k.ID, k.Key, d
	})
	res.KeyErrors = kerr.get()
	res.KeyCreate = Summarize(nonZero(createLat))
	defer r.releaseKeys(socks)

	r.prog.set("connect with keys", n)
	hsLat := make([]time.Duration, n)
	var cerr errSink
	forEach(ctx, n, cfg.Concurrency, cfg.ConnectRate, func(ctx context.Context, i int) {
		if socks[i].key == "" {
			cerr.add(fmt.Errorf("no key to connect with"))
			r.prog.step(fmt.Errorf("no key"))
			return
		}
		st := time.Now()
		c, err := r.dial(ctx, socks[i].node, socks[i].key)
		d := time.Since(st)
		r.prog.step(err)
		if err != nil {
			cerr.add(err)
			return
		}
		socks[i].conn, hsLat[i] = c, d
	})
	lat := nonZero(hsLat)
	res.Connected = len(lat)
	res.ConnectErrors = cerr.get()
	res.Handshake = Summarize(lat)

	var conns []int
	for i := range socks {
		if socks[i].conn != nil {
			conns = append(conns, i)
		}
	}
	if ctx.Err() == nil {
		m := min(cfg.Samples, len(conns))
		res.LatencyResult = *r.timeRevocations(ctx, "revoke keys A→B", m, reasonKeyRevoked, func(k int) (*wsConn, func(context.Context) error) {
			s := &socks[conns[k]]
			return s.conn, func(ctx context.Context) error {
				err := r.admin.deleteKey(ctx, r.a, s.id)
				if err == nil {
					s.revoked = true
				}
				return err
			}
		})
	}
	return res
}

// releaseKeys closes the sockets still open and deletes the keys not yet
// revoked, bounded on its own like release.
func (r *runner) releaseKeys(socks []keyIdle) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r.prog.set("close key sockets", len(socks))
	forEach(ctx, len(socks), r.cfg.Concurrency*4, 0, func(ctx context.Context, i int) {
		if c := socks[i].conn; c != nil {
			c.Close(r.cfg.OpTimeout)
		}
		r.prog.step(nil)
	})
	r.prog.set("delete keys", len(socks))
	forEach(ctx, len(socks), r.cfg.Concurrency, 0, func(ctx context.Context, i int) {
		if socks[i].id != "" && !socks[i].revoked {
			err := r.admin.deleteKey(ctx, r.a, socks[i].id)
			if ae, ok := err.(*apiError); ok && ae.Status == http.StatusNotFound {
				err = nil
			}
			if err != nil {
				r.log.Warn("deleting bench key", "key_id", socks[i].id, "err", err)
			}
		}
		r.prog.step(nil)
	})
}
