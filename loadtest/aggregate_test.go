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
