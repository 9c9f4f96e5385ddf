package loadtest

import (
	"bufio"
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge/internal/redistest"
	"github.com/sessionbridge/sessionbridge/internal/server"
)

func TestCRC16MatchesRedisCluster(t *testing.T) {
	// The check value of CRC16/XMODEM, and slots Redis Cluster documents.
	if got := crc16([]byte("123456789")); got != 0x31C3 {
		t.Fatalf("crc16(123456789) = %#x, want 0x31c3", got)
	}
	if got := crc16([]byte("foo")) % 16384; got != 12182 {
		t.Fatalf("slot of foo = %d, want 12182", got)
	}
}

func TestReadRESP(t *testing.T) {
	in := "*3\r\n$10\r\nssubscribe\r\n$-1\r\n:7\r\n" + "-MOVED 1 127.0.0.1:1\r\n" + "+OK\r\n" + "$99999999999\r\n"
	br := bufio.NewReader(strings.NewReader(in))
	v, err := readRESP(br, 0)
	a, ok := v.([]any)
	if err != nil || !ok || len(a) != 3 || a[0] != "ssubscribe" || a[1] != nil || a[2] != int64(7) {
		t.Fatalf("array: %#v, %v", v, err)
	}
	if _, err := readRESP(br, 0); err == nil || !strings.Contains(err.Error(), "MOVED") {
		t.Fatalf("error reply: %v", err)
	}
	if v, err := readRESP(br, 0); err != nil || v != "OK" {
		t.Fatalf("simple string: %#v, %v", v, err)
	}
	if _, err := readRESP(br, 0); err == nil {
		t.Fatal("a bulk string above the bound was accepted")
	}
	deep := strings.Repeat("*1\r\n", maxRESPDepth+2) + ":1\r\n"
	if _, err := readRESP(bufio.NewReader(strings.NewReader(deep)), 0); err == nil {
		t.Fatal("a reply nested beyond the bound was accepted")
	}
}

func TestParseLabeledMetrics(t *testing.T) {
	text := `# HELP sessionbridge_events_total x
sessionbridge_events_total{type="updated",stage="received"} 12
sessionbridge_events_total{stage="published",type="deleted"} 3
sessionbridge_session_changes_total{type="touched"} 5
sessionbridge_connections{auth="session"} 2
other_metric{a="b"} 9
sessionbridge_connections 1
`
	got, err := ParseLabeledMetrics(strings.NewReader(text), metricEvents, metricSessionChanges, metricConnections)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("samples: %+v", got)
	}
	if got[0].Labels["type"] != "updated" || got[0].Labels["stage"] != "received" || got[0].Value != 12 {
		t.Fatalf("first sample: %+v", got[0])
	}
	if got[1].Labels["type"] != "deleted" || got[1].Labels["stage"] != "published" {
		t.Fatalf("labels in another order: %+v", got[1])
	}
	if len(got[4].Labels) != 0 || got[4].Value != 1 {
		t.Fatalf("sample without labels: %+v", got[4])
	}
	for _, bad := range []string{`{type="x}`, `{type=x}`, `type="x"`, `{type="\q"}`} {
		if _, err := parseLabels(bad); err == nil {
			t.Errorf("parseLabels(%q) accepted", bad)
		}
	}
	if ls, err := parseLabels(`{a="x\"y",b="z"}`); err != nil || ls["a"] != `x"y` || ls["b"] != "z" {
		t.Fatalf("escaped quote: %v, %v", ls, err)
	}
}

func TestScalingSummary(t *testing.T) {
	phase := func(pub float64, recv ...float64) *measured {
		p := &measured{ScalingPhase: ScalingPhase{Published: map[string]float64{"updated": pub}, Seconds: 1}}
		for _, r := range recv {
			p.Received = append(p.Received, map[string]float64{"updated": r})
		}
		p.Totals.CPUSeconds = 0.5
		return p
	}
	snap := func(mem float64) *scaleSnap {
		return &scaleSnap{redis: []redisCounters{{role: "master", usedMemory: mem}, {role: "replica", usedMemory: 1e9}}}
	}
	created := &measured{ScalingPhase: ScalingPhase{Name: "create", Ops: 100}, before: snap(1000), after: snap(1000 + 100*500)}
	connected := &measured{ScalingPhase: ScalingPhase{Name: "connect", Ops: 100}, before: created.after, after: snap(1000 + 100*500 + 100*200)}
	connected.Totals.Subscribe = CommandStat{Calls: 200, USec: 300}
	idle := &measured{ScalingPhase: ScalingPhase{Name: "idle", Seconds: 2}}
	idle.Totals.CPUSeconds = 0.2
	res := &ScalingResult{Nodes: []string{"a", "b", "c", "d"}}
	res.Phases = []ScalingPhase{created.ScalingPhase, connected.ScalingPhase}
	res.summarize(created, connected, idle, []*measured{phase(100, 25, 30, 20, 25), phase(100, 25, 30, 20, 25)}, phase(40, 0, 0, 0, 0))
	if res.EventsPublished != 200 || res.MaxRatio != 0.3 || math.Abs(res.MeanRatio-0.25) > 1e-9 {
		t.Fatalf("ratios: published %v, max %v, mean %v", res.EventsPublished, res.MaxRatio, res.MeanRatio)
	}
	if res.DeleteRatio != 0 {
		t.Fatalf("delete ratio %v", res.DeleteRatio)
	}
	// 0.5 s per phase less 0.1 s/s of background, over 200 events.
	if math.Abs(res.RedisCPUPerEventUS-4000) > 1e-6 {
		t.Fatalf("CPU per event %v µs", res.RedisCPUPerEventUS)
	}
	if res.MemoryPerSession != 500 || res.MemoryPerSocket != 200 || res.SubscribesPerConnect != 2 || res.SubscribeUSPerConnect != 3 {
		t.Fatalf("per session %v, per socket %v, subscribes %v (%v µs)", res.MemoryPerSession, res.MemoryPerSocket, res.SubscribesPerConnect, res.SubscribeUSPerConnect)
	}
}

// TestScalingScenario runs the scaling scenario against two real nodes that
// share a private Redis, and checks that every event it asked for was made
// and counted, on the nodes and on the server.
func TestScalingScenario(t *testing.T) {
	rs := redistest.Start(t)
	touch := 300 * time.Millisecond
	// Unsubscribed soon after the sockets leave, so that the disconnect
	// phase settles well within its timeout.
	unfollow := 300 * time.Millisecond
	a := startNode(t, server.Config{NodeID: "a", RedisURL: rs.URL(), TouchInterval: touch, RedisUnfollowDelay: unfollow})
	b := startNode(t, server.Config{NodeID: "b", RedisURL: rs.URL(), TouchInterval: touch, RedisUnfollowDelay: unfollow})
	cfg := Config{
		Nodes: []string{a, b}, AdminToken: e2eAdminToken, Scenarios: []string{ScenarioScaling},
		RedisNodes: []string{rs.Addr()}, Timeout: 2 * time.Minute, OpTimeout: 10 * time.Second,
		Scaling: ScalingConfig{Sockets: 20, Updates: 6, Messages: 5, Touches: 4, Revokes: 3,
			TouchInterval: touch, IdleWindow: 200 * time.Millisecond, SettleTimeout: 10 * time.Second, CalibrationChannels: 300},
	}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	sc := rep.Scaling
	if sc == nil {
		t.Fatal("no scaling result")
	}
	if sc.Errors.Count != 0 || sc.Revoke == nil || sc.Revoke.Errors.Count != 0 {
		t.Fatalf("errors: %+v, revoke %+v", sc.Errors, sc.Revoke)
	}
	if sc.Connected != 20 || sc.Revoke.OK != 3 || sc.Masters != 1 {
		t.Fatalf("connected %d, revoked %d, masters %d", sc.Connected, sc.Revoke.OK, sc.Masters)
	}
	byName := map[string]ScalingPhase{}
	for _, p := range sc.Phases {
		byName[p.Name] = p
	}
	want := map[string][2]float64{ // ops, events published
		"create": {20, 20}, "update": {6, 6}, "message": {5, 5}, "touch": {4, 4}, "revoke": {3, 3}, "delete": {17, 17},
	}
	for name, w := range want {
		p, ok := byName[name]
		if !ok {
			t.Fatalf("no phase %s in %+v", name, sc.Phases)
		}
		if float64(p.Ops) != w[0] || sumValues(p.Published) != w[1] {
			t.Errorf("phase %s: %d ops, %v published; want %v, %v", name, p.Ops, p.Published, w[0], w[1])
		}
		// The server saw the publications too: session events are
		// SPUBLISHed by the scripts; a plain PUBLISH is an expiry hint, at
		// most one per session written into an index (see docs/redis.md).
		if got := float64(p.Totals.SPublish.Calls); got != w[1] {
			t.Errorf("phase %s: Redis counted %v SPUBLISH, want %v", name, got, w[1])
		}
		hints := 0.0
		if name == "create" {
			hints = w[0]
		}
		if got := float64(p.Totals.Publish.Calls); got > hints {
			t.Errorf("phase %s: Redis counted %v PUBLISH, want at most %v expiry hints", name, got, hints)
		}
	}
	if byName["touch"].Touched != 4 {
		t.Errorf("touched %v, want 4", byName["touch"].Touched)
	}
	if sc.EventsPublished != 18 || len(sc.RatioPerNode) != 2 {
		t.Fatalf("published %v, ratios %v", sc.EventsPublished, sc.RatioPerNode)
	}
	for j, r := range sc.RatioPerNode {
		// Each node holds half the sockets: it receives at least the
		// events of its own sessions, and never more than all of them.
		if r < 0.3 || r > 1 {
			t.Errorf("node %d received %v of the events", j, r)
		}
	}
	if sc.MemoryPerSession <= 0 || sc.Calibration == nil || sc.Calibration.BytesPerShardSubscription <= 0 {
		t.Errorf("memory per session %v, calibration %+v", sc.MemoryPerSession, sc.Calibration)
	}
	var out strings.Builder
	if err := rep.WriteTable(&out); err != nil || !strings.Contains(out.String(), "received/published per node") {
		t.Fatalf("table: %v\n%s", err, out.String())
	}
	aggs := AggregateRuns([]*Report{rep, rep})
	found := false
	for _, ag := range aggs {
		found = found || ag.Name == "scaling received/published, highest node" && ag.Runs == 2
	}
	if !found {
		t.Fatalf("summarize lacks the scaling figures: %+v", aggs)
	}
}
