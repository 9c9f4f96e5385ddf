package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// checkReport asserts that a run of every scenario with the given sizes
// measured what it should, without errors.
func checkReport(t *testing.T, rep *Report, bNodes, sockets, samples, fanout int) {
	t.Helper()
	c := rep.Connect
	if c == nil {
		t.Fatal("no connect result")
	}
	want := sockets * bNodes
	if c.Sessions != want || c.SessionErrors.Count != 0 || c.SessionCreate.Count != want {
		t.Errorf("sessions: %+v", c)
	}
	if c.Connected != want || c.Errors.Count != 0 || c.Handshake.Count != want || !c.Handshake.Ordered() || c.SocketsPerSec <= 0 {
		t.Errorf("connect: %+v", c)
	}
	if c.HandshakeSequential.Count != samples || !c.HandshakeSequential.Ordered() {
		t.Errorf("one-at-a-time connects: %+v", c.HandshakeSequential)
	}
	if c.CPUPerConnectUS < 0 {
		t.Errorf("no server CPU per connect: %+v", c)
	}
	if len(rep.Memory) != bNodes {
		t.Fatalf("memory results for %d nodes, want %d", len(rep.Memory), bNodes)
	}
	total := 0
	for _, m := range rep.Memory {
		total += m.Sockets
		if m.MetricsUnavailableErr != "" || m.After.RSS <= 0 || m.After.HeapStack() <= 0 || m.Before.Goroutines <= 0 {
			t.Errorf("memory of %s: %+v", m.Node, m)
		}
		if m.ConnectionsReported < float64(m.Sockets) {
			t.Errorf("memory of %s: node reports %v connections, want at least %d", m.Node, m.ConnectionsReported, m.Sockets)
		}
		// Every idle socket costs the server at least one goroutine.
		if m.GoroutinesPerSocket == nil || *m.GoroutinesPerSocket < 1 || m.RSSPerSocket == nil || m.HeapStackPerSocket == nil {
			t.Errorf("memory of %s: per-socket figures missing or below one goroutine: %+v", m.Node, m)
		}
	}
	if total != want {
		t.Errorf("memory counted %d sockets, want %d", total, want)
	}
	for name, l := range map[string]*LatencyResult{"update": rep.Update, "revoke": rep.Revoke} {
		if l == nil {
			t.Fatalf("no %s result", name)
		}
		if l.Samples != samples || l.OK != samples || l.Errors.Count != 0 || l.Latency.Count != samples ||
			l.HTTP.Count != samples || !l.Latency.Ordered() || !l.HTTP.Ordered() || l.Latency.Min <= 0 {
			t.Errorf("%s: %+v", name, l)
		}
	}
	checkKeyRevoke(t, rep, want, samples)
	f := rep.Fanout
	if f == nil {
		t.Fatal("no fan-out result")
	}
	if f.Connected != fanout || f.Closed != fanout || f.Closed4401 != fanout || f.Errors.Count != 0 ||
		f.Latency.Count != fanout || !f.Latency.Ordered() || f.HTTPUS <= 0 {
		t.Errorf("fan-out: %+v", f)
	}
	ch := rep.Churn
	if ch == nil {
		t.Fatal("no churn result")
	}
	if ch.Connects == 0 || ch.Errors.Count != 0 || ch.AchievedRate <= 0 || ch.Handshake.Count != ch.Connects || !ch.Handshake.Ordered() {
		t.Errorf("churn: %+v", ch)
	}
	if len(ch.Nodes) != bNodes {
		t.Fatalf("churn results for %d nodes, want %d", len(ch.Nodes), bNodes)
	}
	for _, n := range ch.Nodes {
		if n.MetricsError != "" || len(n.Samples) == 0 || !n.DrainedOK || n.Drained.Connections != n.Before.Connections {
			t.Errorf("churn node %s: %+v", n.Node, n)
		}
	}
	if runtime.GOOS == "linux" && (len(strings.Fields(rep.LoadStart)) != 3 || len(strings.Fields(rep.LoadEnd)) != 3) {
		t.Errorf("load averages %q, %q", rep.LoadStart, rep.LoadEnd)
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems: %q", rep.Problems)
	}

	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"revoke A→B (close 4401)", "key revoke A→B (close 4401)", "update A→B (session.updated)", "connect+auth", "memory ", "fan-out", "churn "} {
		if !strings.Contains(table.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, table.String())
		}
	}
	if testing.Verbose() {
		t.Log("\n" + table.String())
	}
	if strings.Contains(table.String(), "problem") {
		t.Errorf("table reports problems:\n%s", table.String())
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"connect", "memory", "update", "revoke", "key_revoke", "fanout", "churn"} {
		if back[k] == nil {
			t.Errorf("JSON report lacks %q", k)
		}
	}
}

// checkKeyRevoke asserts that the keyrevoke scenario created a key per
// socket, connected every socket and timed samples revocations, without
// errors.
func checkKeyRevoke(t *testing.T, rep *Report, sockets, samples int) {
	t.Helper()
	k := rep.KeyRevoke
	if k == nil {
		t.Fatal("no key revocation result")
	}
	if k.Keys != sockets || k.KeyErrors.Count != 0 || k.KeyCreate.Count != sockets || !k.KeyCreate.Ordered() {
		t.Errorf("keys: %+v", k)
	}
	if k.Sockets != sockets || k.Connected != sockets || k.ConnectErrors.Count != 0 || k.Handshake.Count != sockets || !k.Handshake.Ordered() {
		t.Errorf("key sockets: %+v", k)
	}
	if k.Samples != samples || k.OK != samples || k.Errors.Count != 0 || k.Latency.Count != samples ||
		k.HTTP.Count != samples || !k.Latency.Ordered() || !k.HTTP.Ordered() || k.Latency.Min <= 0 {
		t.Errorf("key revocations: %+v", k.LatencyResult)
	}
}

// tinyConfig runs every scenario with small numbers.
func tinyConfig(nodes []string, token string) Config {
	return Config{
		Nodes: nodes, AdminToken: token,
		Sockets: 20, Samples: 10, FanoutSockets: 12, FanoutSessions: 3,
		ChurnDuration: 2 * time.Second, ChurnRate: 50, ChurnHold: 200 * time.Millisecond,
		SampleInterval: 500 * time.Millisecond, SettleTimeout: 20 * time.Second,
		Concurrency: 8, Timeout: 2 * time.Minute, OpTimeout: 5 * time.Second,
		Limits: tinyLimits,
	}
}

func TestRunAgainstFakeNode(t *testing.T) {
	f := newFakeNode(t, "admin-secret")
	var progress bytes.Buffer
	cfg := tinyConfig([]string{f.srv.URL, f.srv.URL}, "admin-secret")
	// The fake node has no rate limits; the real ones are driven end to end.
	cfg.Scenarios = slices.DeleteFunc(slices.Clone(AllScenarios), func(s string) bool { return s == ScenarioLimits })
	cfg.Progress, cfg.ProgressInterval = &syncWriter{w: &progress}, 100*time.Millisecond
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep, 1, 20, 10, 12)
	if !strings.Contains(progress.String(), "connect") {
		t.Errorf("no progress output: %q", progress.String())
	}
	// Every session and key the run created is gone again.
	f.mu.Lock()
	left := len(f.sessions)
	f.mu.Unlock()
	if left != 0 {
		t.Errorf("%d bench sessions and keys left on the node", left)
	}
}

// TestKeyRevokeWithGap: the keyrevoke scenario alone, with a pause between
// revocations that the report records; its sockets carry their keys as
// bearer tokens (the fake node takes keys no other way), and every key is
// deleted again, the revoked ones by the samples and the rest on release.
func TestKeyRevokeWithGap(t *testing.T) {
	f := newFakeNode(t, "admin-secret")
	cfg := tinyConfig([]string{f.srv.URL}, "admin-secret")
	cfg.Scenarios = []string{ScenarioKeyRevoke, ScenarioRevoke}
	cfg.RevokeGap = 5 * time.Millisecond
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkKeyRevoke(t, rep, 20, 10)
	if rep.RevokeGapMS != 5 {
		t.Errorf("revoke gap %v ms in the report, want 5", rep.RevokeGapMS)
	}
	if rep.Revoke == nil || rep.Revoke.OK != 10 {
		t.Errorf("session revocations beside the key ones: %+v", rep.Revoke)
	}
	if n := f.keys(); n != 0 {
		t.Errorf("%d bench keys left on the node", n)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "5.00ms apart") || !strings.Contains(table.String(), "key revoke A→B") {
		t.Errorf("table:\n%s", table.String())
	}
}

// TestKeyRevokeWrongReason: a key socket closed with 4401 but a reason other
// than api_key_revoked is an error of the sample, not a measurement.
func TestKeyRevokeWrongReason(t *testing.T) {
	f := newFakeNode(t, "admin-secret")
	f.keyReason = "session_revoked"
	cfg := tinyConfig([]string{f.srv.URL}, "admin-secret")
	cfg.Scenarios = []string{ScenarioKeyRevoke}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	k := rep.KeyRevoke
	if k == nil || k.OK != 0 || k.Errors.Count != 10 || len(k.Errors.First) == 0 || !strings.Contains(k.Errors.First[0], "api_key_revoked") {
		t.Fatalf("revocations closed with the wrong reason: %+v", k)
	}
}

func TestRunWrongAdminTokenReportsErrors(t *testing.T) {
	f := newFakeNode(t, "admin-secret")
	cfg := tinyConfig([]string{f.srv.URL}, "wrong")
	cfg.Scenarios = []string{ScenarioConnect}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := rep.Connect
	if c.SessionErrors.Count != 20 || c.Connected != 0 || len(c.SessionErrors.First) == 0 ||
		!strings.Contains(c.SessionErrors.First[0], "HTTP 401") {
		t.Fatalf("connect with a wrong admin token: %+v", c)
	}
	if strings.Contains(c.SessionErrors.First[0], "wrong") {
		t.Fatalf("error message holds the admin token: %q", c.SessionErrors.First[0])
	}
}
