package loadtest

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestAggregateRunsRoundTrip(t *testing.T) {
	mk := func(revP99 time.Duration, rss float64, cpu float64) *Report {
		return &Report{
			Connect: &ConnectResult{Connected: 10, SocketsPerSec: 100, CPUPerConnectUS: cpu, ClientCPUPerConnectUS: -1},
			Memory:  []MemoryResult{{Node: "b", Sockets: 10, RSSPerSocket: &rss}},
			Revoke:  &LatencyResult{Latency: Summary{Count: 5, Min: time.Microsecond, P50: revP99 / 2, P99: revP99, Max: revP99}},
		}
	}
	var reps []*Report
	for _, r := range []*Report{mk(900*time.Microsecond, 8000, 80), mk(700*time.Microsecond, 9000, 120), mk(2*time.Millisecond, 7000, 100)} {
		// Through JSON, as the summarize command reads reports.
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ReadReport(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		reps = append(reps, back)
	}
	got := map[string]Aggregate{}
	for _, a := range AggregateRuns(reps) {
		got[a.Name] = a
	}
	if a := got["revoke A→B p99"]; a.Runs != 3 || a.Median != 900 || a.Min != 700 || a.Max != 2000 {
		t.Errorf("revoke p99 aggregate = %+v", a)
	}
	if a := got["RSS per socket"]; a.Median != 8000 || a.Min != 7000 || a.Max != 9000 {
		t.Errorf("RSS aggregate = %+v", a)
	}
	if a := got["server CPU per connect"]; a.Median != 100 {
		t.Errorf("CPU aggregate = %+v", a)
	}
	if _, ok := got["client CPU per connect"]; ok {
		t.Error("a figure no run measured was aggregated")
	}
	if _, ok := got["update A→B p50"]; ok {
		t.Error("update aggregated though no run had it")
	}
	// Even run counts take the mean of the middle two.
	if a := AggregateRuns(reps[:2]); a[0].Name != "connect rate" || a[0].Median != 100 {
		t.Errorf("first aggregate = %+v", a[0])
	}
	var buf bytes.Buffer
	if err := WriteAggregates(&buf, AggregateRuns(reps)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "| revoke A→B p99") || !strings.Contains(buf.String(), "900.0µs") {
		t.Errorf("table:\n%s", buf.String())
	}
}

// TestAggregateKeyRevoke: the key revocation figures survive the JSON
// report and aggregate beside the session ones.
func TestAggregateKeyRevoke(t *testing.T) {
	var reps []*Report
	for _, p99 := range []time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond} {
		r := &Report{RevokeGapMS: 10, KeyRevoke: &KeyRevokeResult{Keys: 5, Handshake: Summary{Count: 5, P50: 400 * time.Microsecond},
			LatencyResult: LatencyResult{Samples: 5, OK: 5, Latency: Summary{Count: 5, P50: p99 / 2, P99: p99, Max: p99},
				HTTP: Summary{Count: 5, P50: 300 * time.Microsecond}}}}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"key_revoke":{"keys":5`) || !strings.Contains(string(b), `"revoke_gap_ms":10`) {
			t.Fatalf("JSON report %s", b)
		}
		back, err := ReadReport(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		reps = append(reps, back)
	}
	got := map[string]Aggregate{}
	for _, a := range AggregateRuns(reps) {
		got[a.Name] = a
	}
	if a := got["key revoke A→B p99"]; a.Runs != 3 || a.Median != 2000 || a.Min != 1000 || a.Max != 3000 {
		t.Errorf("key revoke p99 aggregate = %+v", a)
	}
	if a := got["key revoke DELETE (HTTP) p50"]; a.Median != 300 {
		t.Errorf("key revoke HTTP aggregate = %+v", a)
	}
	if a := got["connect+auth with a key p50"]; a.Median != 400 {
		t.Errorf("key connect aggregate = %+v", a)
	}
	if _, ok := got["revoke A→B p99"]; ok {
		t.Error("session revocation aggregated though no run had it")
	}
}
