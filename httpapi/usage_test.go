package httpapi

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/usage"
)

// usageFixture is a key fixture with a usage store on the fixture's clock.
type usageFixture struct {
	*keyFixture
	store *usage.Memory
}

func newUsageFixture(t *testing.T) *usageFixture {
	t.Helper()
	u := &usageFixture{}
	u.keyFixture = newKeyFixture(t, func(f *fixture) {
		u.store = &usage.Memory{Now: f.clock.Now}
		f.api.Usage = u.store
	})
	return u
}

func (u *usageFixture) write(at time.Time, s usage.Subject, counts map[string]int64, peak int64) {
	u.t.Helper()
	if err := u.store.Write(context.Background(), at, []usage.Entry{{Subject: s, Counts: counts, Peak: peak}}); err != nil {
		u.t.Fatal(err)
	}
}

func (u *usageFixture) usage(path string, h map[string]string, cookie string) usageView {
	u.t.Helper()
	resp := u.do(req{method: "GET", path: path, header: h, cookie: cookie})
	expect(u.t, resp, http.StatusOK)
	var v usageView
	resp.json(u.t, &v)
	return v
}

func TestAdminKeyUsage(t *testing.T) {
	u := newUsageFixture(t)
	ik := u.createKey(`{"user_id":"alice","name":"n","scopes":["ws:connect"]}`)
	key := usage.Subject{Kind: usage.KindKey, ID: ik.ID}
	now := u.clock.Now()
	u.write(now.Add(-10*time.Minute), key, map[string]int64{usage.FramesIn: 5, usage.Connects: 1}, 2)
	u.write(now, key, map[string]int64{usage.FramesIn: 7}, 1)
	u.write(now.Add(-2*time.Hour), key, map[string]int64{usage.FramesIn: 100}, 9)
	u.presence.conns = []sessionbridge.ConnInfo{
		{ID: "c1", UserID: "alice", KeyID: ik.ID, Method: sessionbridge.AuthAPIKey},
		{ID: "c2", UserID: "alice", Method: sessionbridge.AuthSession},
	}

	// The default: the last hour by minute.
	v := u.usage("/api/v1/keys/"+ik.ID+"/usage", adminHeader(), "")
	if v.Kind != "key" || v.ID != ik.ID || v.Step != "1m" || len(v.Points) != 60 || !v.To.Equal(now) {
		t.Fatalf("default usage: %s %s step %s, %d points, to %s", v.Kind, v.ID, v.Step, len(v.Points), v.To)
	}
	if v.Totals[usage.FramesIn] != 12 || v.Totals[usage.PeakConnections] != 2 || v.LiveConnections != 1 {
		t.Fatalf("totals %v, live %d; want 12 frames, peak 2 (a maximum), 1 live", v.Totals, v.LiveConnections)
	}
	if last := v.Points[59]; !last.Start.Equal(now.Truncate(time.Minute)) || last.Counts[usage.FramesIn] != 7 {
		t.Fatalf("last point %+v", last)
	}
	// By hour over a given range.
	q := url.Values{"step": {"1h"}, "from": {now.Add(-3 * time.Hour).Format(time.RFC3339)}, "to": {now.Format(time.RFC3339)}}
	v = u.usage("/api/v1/keys/"+ik.ID+"/usage?"+q.Encode(), adminHeader(), "")
	if len(v.Points) != 4 || v.Totals[usage.FramesIn] != 112 || v.Points[1].Counts[usage.FramesIn] != 100 {
		t.Fatalf("hourly: %d points, totals %v", len(v.Points), v.Totals)
	}
	// By day: the last 30 days.
	if v := u.usage("/api/v1/keys/"+ik.ID+"/usage?step=1d", adminHeader(), ""); len(v.Points) != 30 {
		t.Fatalf("daily: %d points", len(v.Points))
	}

	// The key's live connections.
	resp := u.do(req{method: "GET", path: "/api/v1/connections?key_id=" + ik.ID, header: adminHeader()})
	expect(t, resp, http.StatusOK)
	var list connectionList
	resp.json(t, &list)
	if len(list.Connections) != 1 || list.Connections[0].ID != "c1" {
		t.Fatalf("key connections %+v", list.Connections)
	}
	// A key that does not exist has none.
	resp = u.do(req{method: "GET", path: "/api/v1/connections?key_id=00aaaaaaaaaaaaaa", header: adminHeader()})
	expect(t, resp, http.StatusOK)
	resp.json(t, &list)
	if len(list.Connections) != 0 {
		t.Fatalf("connections of a missing key: %+v", list.Connections)
	}
}

func TestUsageBadInput(t *testing.T) {
	u := newUsageFixture(t)
	ik := u.createKey(`{"user_id":"alice","name":"n"}`)
	base := "/api/v1/keys/" + ik.ID + "/usage"
	now := u.clock.Now()
	for _, q := range []string{
		"step=5m", "step=1M", "from=yesterday", "to=1700000000",
		"from=" + url.QueryEscape(now.Format(time.RFC3339)) + "&to=" + url.QueryEscape(now.Add(-time.Hour).Format(time.RFC3339)),
		"from=" + url.QueryEscape(now.Add(-72*time.Hour).Format(time.RFC3339)), // 4321 minutes
	} {
		resp := u.do(req{method: "GET", path: base + "?" + q, header: adminHeader()})
		expect(t, resp, http.StatusBadRequest)
		if resp.errorCode(t) != CodeBadRequest {
			t.Errorf("%s: %s", q, resp.body)
		}
	}
	for _, q := range []string{"kind=session", "metric=peak_connections", "metric=bogus", "metric=errors:" + strings.Repeat("x", 40), "metric=frames_in%7D",
		"window=30m", "window=forever", "window=100000h", "limit=0", "limit=1001", "limit=ten"} {
		resp := u.do(req{method: "GET", path: "/api/v1/usage/top?" + q, header: adminHeader()})
		expect(t, resp, http.StatusBadRequest)
	}
	expect(t, u.do(req{method: "GET", path: "/api/v1/keys/not-a-key/usage", header: adminHeader()}), http.StatusNotFound)
	expect(t, u.do(req{method: "GET", path: "/api/v1/users/" + url.PathEscape("a\x01b") + "/usage", header: adminHeader()}), http.StatusBadRequest)
	expect(t, u.do(req{method: "GET", path: "/api/v1/connections?key_id=x", header: adminHeader()}), http.StatusBadRequest)
	expect(t, u.do(req{method: "GET", path: "/api/v1/connections?key_id=" + ik.ID + "&user_id=alice", header: adminHeader()}), http.StatusBadRequest)
	// Admin routes need the admin credential.
	expect(t, u.do(req{method: "GET", path: base}), http.StatusUnauthorized)
	expect(t, u.do(req{method: "GET", path: "/api/v1/usage/top"}), http.StatusUnauthorized)
}

func TestUsageTop(t *testing.T) {
	u := newUsageFixture(t)
	now := u.clock.Now()
	for id, n := range map[string]int64{"00aaaaaaaaaaaaaa": 5, "00bbbbbbbbbbbbbb": 50, "00cccccccccccccc": 20} {
		u.write(now, usage.Subject{Kind: usage.KindKey, ID: id}, map[string]int64{usage.FramesIn: n, usage.Error("forbidden"): 1}, 0)
	}
	u.write(now, usage.Subject{Kind: usage.KindUser, ID: "alice"}, map[string]int64{usage.FramesIn: 1000}, 0)
	resp := u.do(req{method: "GET", path: "/api/v1/usage/top?limit=2", header: adminHeader()})
	expect(t, resp, http.StatusOK)
	var v topView
	resp.json(t, &v)
	if v.Kind != "key" || v.Metric != usage.FramesIn || v.Window != "1h0m0s" || len(v.Top) != 2 ||
		v.Top[0] != (rankedView{ID: "00bbbbbbbbbbbbbb", Value: 50}) || v.Top[1] != (rankedView{ID: "00cccccccccccccc", Value: 20}) {
		t.Fatalf("top = %+v", v)
	}
	resp = u.do(req{method: "GET", path: "/api/v1/usage/top?kind=user&window=24h&metric=frames_in", header: adminHeader()})
	expect(t, resp, http.StatusOK)
	resp.json(t, &v)
	if len(v.Top) != 1 || v.Top[0] != (rankedView{ID: "alice", Value: 1000}) {
		t.Fatalf("top users = %+v", v)
	}
	resp = u.do(req{method: "GET", path: "/api/v1/usage/top?metric=errors:forbidden", header: adminHeader()})
	expect(t, resp, http.StatusOK)
	resp.json(t, &v)
	if len(v.Top) != 3 {
		t.Fatalf("top by errors:forbidden = %+v", v)
	}
}

// Users see their own usage and their own keys' usage, not others'.
func TestMyUsage(t *testing.T) {
	u := newUsageFixture(t)
	tok, _ := u.login("alice")
	bobTok, _ := u.login("bob")
	mine := u.createKey(`{"user_id":"alice","name":"mine"}`)
	theirs := u.createKey(`{"user_id":"bob","name":"theirs"}`)
	now := u.clock.Now()
	u.write(now, usage.Subject{Kind: usage.KindUser, ID: "alice"}, map[string]int64{usage.BytesOut: 99}, 1)
	u.write(now, usage.Subject{Kind: usage.KindUser, ID: "bob"}, map[string]int64{usage.BytesOut: 1}, 1)
	u.write(now, usage.Subject{Kind: usage.KindKey, ID: mine.ID}, map[string]int64{usage.FramesOut: 3}, 1)
	u.presence.conns = []sessionbridge.ConnInfo{{ID: "c1", UserID: "alice"}, {ID: "c2", UserID: "alice"}, {ID: "c3", UserID: "bob"}}

	v := u.usage("/auth/usage", nil, tok)
	if v.Kind != "user" || v.ID != "alice" || v.Totals[usage.BytesOut] != 99 || v.LiveConnections != 2 {
		t.Fatalf("my usage %+v", v)
	}
	v = u.usage("/auth/keys/"+mine.ID+"/usage?step=1h", nil, tok)
	if v.ID != mine.ID || v.Totals[usage.FramesOut] != 3 || len(v.Points) != 24 {
		t.Fatalf("my key's usage %+v", v)
	}
	expect(t, u.do(req{method: "GET", path: "/auth/keys/" + theirs.ID + "/usage", cookie: tok}), http.StatusNotFound)
	expect(t, u.do(req{method: "GET", path: "/auth/keys/" + mine.ID + "/usage", cookie: bobTok}), http.StatusNotFound)
	expect(t, u.do(req{method: "GET", path: "/auth/usage?step=2h", cookie: tok}), http.StatusBadRequest)
	expect(t, u.do(req{method: "GET", path: "/auth/usage"}), http.StatusUnauthorized)
}

// Without a usage store the routes answer 404.
func TestUsageNotConfigured(t *testing.T) {
	f := newKeyFixture(t)
	tok, _ := f.login("alice")
	ik := f.createKey(`{"user_id":"alice","name":"n"}`)
	expect(t, f.do(req{method: "GET", path: "/api/v1/keys/" + ik.ID + "/usage", header: adminHeader()}), http.StatusNotFound)
	expect(t, f.do(req{method: "GET", path: "/api/v1/users/alice/usage", header: adminHeader()}), http.StatusNotFound)
	expect(t, f.do(req{method: "GET", path: "/api/v1/usage/top", header: adminHeader()}), http.StatusNotFound)
	expect(t, f.do(req{method: "GET", path: "/auth/usage", cookie: tok}), http.StatusNotFound)
}
