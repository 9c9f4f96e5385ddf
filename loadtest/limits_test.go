package loadtest

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

// tinyLimits is the limits scenario with small numbers. The keys send for
// three seconds: twice the limit for longer than two seconds is more than
// the burst (two seconds' worth) and the rate can admit, so that frames
// are refused.
var tinyLimits = LimitsConfig{Keys: 2, SocketsPerNode: 1, FramesPerSecond: 50, Duration: 3 * time.Second, Connects: 10, Samples: 10}

// checkLimits asserts that the limits scenario of a tinyConfig run against
// real nodes measured every part and that the server held its limits:
// connection attempts admitted exactly, every 429 with its headers, every
// frame answered and the frames admitted within the documented bound.
func checkLimits(t *testing.T, rep *Report, nodes int) {
	t.Helper()
	l := rep.Limits
	if l == nil {
		t.Fatal("no limits result")
	}
	if l.Nodes != nodes {
		t.Errorf("limits drove %d nodes, want %d", l.Nodes, nodes)
	}
	lc := tinyLimits
	u := l.Upgrade
	if u == nil || u.Samples != lc.Samples || u.With.Count != lc.Samples || u.Without.Count != lc.Samples ||
		!u.With.Ordered() || !u.Without.Ordered() || u.Without.Min <= 0 || u.Errors.Count != 0 {
		t.Errorf("upgrade timings: %+v", u)
	}
	c := l.Connects
	if c == nil {
		t.Fatal("no connects result")
	}
	// The burst is the whole limit; more passes only as the minute goes by.
	if c.Limit != lc.Connects || c.Attempts != 2*lc.Connects || !c.Exact || c.Admitted < c.Limit || c.Admitted > c.Allowed ||
		c.Allowed < c.Limit || c.WindowS <= 0 || c.Errors.Count != 0 {
		t.Errorf("connection attempts: %+v", c)
	}
	if c.Refused != c.Attempts-c.Admitted || c.Refused == 0 || c.WithHeaders != c.Refused || c.BadHeaders.Count != 0 {
		t.Errorf("429s: %d refused, %d with headers, bad %+v", c.Refused, c.WithHeaders, c.BadHeaders)
	}
	f := l.Frames
	if f == nil {
		t.Fatal("no frames result")
	}
	perKey := lc.SocketsPerNode * nodes
	perSock := int(2 * float64(lc.FramesPerSecond) * lc.Duration.Seconds() / float64(perKey))
	// A socket closed 4429 (refused more than 32 times in a row, which a
	// key over its limit may see) sends no more; the others send all.
	planned := lc.Keys * perKey * perSock
	if f.Keys != lc.Keys || f.SocketsPerKey != perKey || f.Limit != lc.FramesPerSecond || f.Burst != 2*lc.FramesPerSecond ||
		f.Sent+f.Skipped > planned || f.Closed4429 == 0 && f.Sent+f.Skipped != planned || math.Abs(f.SendRate-float64(f.Sent)/float64(lc.Keys*lc.FramesPerSecond*3)) > 1e-9 || f.Bound != frameBound(lc.FramesPerSecond, f.Burst, nodes) {
		t.Errorf("frames shape: %+v", f)
	}
	if f.Admitted+f.Refused+f.Unanswered != f.Sent || f.Unanswered > 0 && f.Closed4429 == 0 || f.Errors.Count != 0 {
		t.Errorf("frames answered: %+v", f)
	}
	if len(f.Nodes) != nodes {
		t.Fatalf("frames split over %d nodes, want %d", len(f.Nodes), nodes)
	}
	var sent, admitted, closed int
	for _, n := range f.Nodes {
		sent, admitted, closed = sent+n.Sent, admitted+n.Admitted, closed+n.Closed4429
		if n.Sockets != lc.Keys*lc.SocketsPerNode || n.Sent == 0 {
			t.Errorf("frames on node %s: %+v", n.Node, n)
		}
	}
	if sent != f.Sent || admitted != f.Admitted || closed != f.Closed4429 {
		t.Errorf("nodes add up to %d sent, %d admitted, %d closed; totals %+v", sent, admitted, closed, f)
	}
	// Twice the limit for three seconds is more than the burst and the
	// rate admit, whatever the timing: 300 frames a key against 100 + 50 a
	// second.
	if f.Refused == 0 || f.Admitted == 0 || f.Allowed < lc.Keys*f.Burst {
		t.Errorf("frames admitted and refused: %+v", f)
	}
	if !f.WithinBound || f.MaxOver > f.Bound || f.Ratio <= 0 || f.Ratio > f.MaxKeyRatio+1e-9 ||
		f.Ratio != float64(f.Admitted)/float64(f.Allowed) {
		t.Errorf("over-admission: %+v", f)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"added by connects_per_minute", "connects_per_minute 10", "exact", "key_frames_per_second 50", "admitted / allowed", "within"} {
		if !strings.Contains(table.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, table.String())
		}
	}
	for _, s := range []string{"NOT EXACT", "ABOVE"} {
		if strings.Contains(table.String(), s) {
			t.Errorf("table says %q:\n%s", s, table.String())
		}
	}
}

func TestLimitsConfigDefaults(t *testing.T) {
	c, err := LimitsConfig{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := LimitsConfig{Keys: DefaultLimitKeys, SocketsPerNode: DefaultLimitSocketsPerNode, FramesPerSecond: DefaultLimitFrames,
		Duration: DefaultLimitDuration, Connects: DefaultLimitConnects, Samples: DefaultLimitSamples}
	if c != want {
		t.Errorf("defaults %+v, want %+v", c, want)
	}
	c, err = LimitsConfig{Duration: time.Hour}.withDefaults()
	if err != nil || c.Duration != MaxLimitDuration {
		t.Errorf("an hour: %v, %v; want capped at %s", c.Duration, err, MaxLimitDuration)
	}
	for _, bad := range []LimitsConfig{
		{Keys: -1}, {FramesPerSecond: -5}, {Duration: -time.Second}, {Connects: maxLimitRate + 1},
		{FramesPerSecond: maxLimitRate + 1}, {Keys: 1000, SocketsPerNode: 1000},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := (Config{Nodes: []string{"http://127.0.0.1:1"}, AdminToken: "t", Limits: LimitsConfig{Samples: -1}}).withDefaults(); err == nil {
		t.Error("a run with negative limits samples accepted")
	}
}

// TestFrameBound: the documented bound is max(1 % of the limit, one lease
// per node), a lease 1 % of the burst (at least one token); the allowance
// is the burst and the rate over the window, in whole frames.
func TestFrameBound(t *testing.T) {
	for _, tc := range []struct{ limit, burst, nodes, want int }{
		{200, 400, 2, 8},         // a lease of 4 on each of two nodes, against 2
		{200, 400, 1, 4},         // one node
		{50, 100, 2, 2},          // leases of one token; 1 % of 50 rounds up to 1
		{10_000, 100, 1, 100},    // a small burst: 1 % of the limit wins
		{10_000, 20_000, 3, 600}, // three leases of 200
	} {
		if got := frameBound(tc.limit, tc.burst, tc.nodes); got != tc.want {
			t.Errorf("frameBound(%d, %d, %d) = %d, want %d", tc.limit, tc.burst, tc.nodes, got, tc.want)
		}
	}
	for _, tc := range []struct {
		limit, burst int
		window       time.Duration
		want         int
	}{
		{200, 400, 0, 400},
		{200, 400, 10 * time.Second, 2400},
		{200, 400, 10*time.Second + 4999*time.Microsecond, 2400}, // one more frame after 5 ms
		{200, 400, 10*time.Second + 5*time.Millisecond, 2401},
	} {
		if got := frameAllowance(tc.limit, tc.burst, tc.window); got != tc.want {
			t.Errorf("frameAllowance(%d, %d, %s) = %d, want %d", tc.limit, tc.burst, tc.window, got, tc.want)
		}
	}
}

// TestCheckRefusal: a 429 passes only with the body, Retry-After and the
// two RateLimit fields docs/rate-limits.md gives it.
func TestCheckRefusal(t *testing.T) {
	good := func() *upgradeRefused {
		h := http.Header{}
		h.Set("Retry-After", "1")
		h.Set("RateLimit-Policy", `"connects_per_minute";q=10;w=60`)
		h.Set("RateLimit", `"connects_per_minute";r=0;t=6`)
		return &upgradeRefused{Status: http.StatusTooManyRequests, Header: h,
			Body: `{"error":"rate_limited","message":"too many connection attempts (at most 10 a minute)","rule":"connects_per_minute"}`}
	}
	if err := checkRefusal(good(), "connects_per_minute", 10); err != nil {
		t.Fatalf("a well-formed 429: %v", err)
	}
	for name, spoil := range map[string]func(*upgradeRefused){
		"no Retry-After":        func(u *upgradeRefused) { u.Header.Del("Retry-After") },
		"Retry-After 0":         func(u *upgradeRefused) { u.Header.Set("Retry-After", "0") },
		"Retry-After a date":    func(u *upgradeRefused) { u.Header.Set("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT") },
		"no RateLimit-Policy":   func(u *upgradeRefused) { u.Header.Del("RateLimit-Policy") },
		"policy of another q":   func(u *upgradeRefused) { u.Header.Set("RateLimit-Policy", `"connects_per_minute";q=60;w=60`) },
		"policy without window": func(u *upgradeRefused) { u.Header.Set("RateLimit-Policy", `"connects_per_minute";q=10`) },
		"policy of another rule": func(u *upgradeRefused) {
			u.Header.Set("RateLimit-Policy", `"max_connections";q=10;w=60`)
		},
		"two policies": func(u *upgradeRefused) {
			u.Header.Set("RateLimit-Policy", `"connects_per_minute";q=10;w=60, "x";q=1`)
		},
		"no RateLimit":         func(u *upgradeRefused) { u.Header.Del("RateLimit") },
		"RateLimit r=3":        func(u *upgradeRefused) { u.Header.Set("RateLimit", `"connects_per_minute";r=3;t=6`) },
		"RateLimit t=0":        func(u *upgradeRefused) { u.Header.Set("RateLimit", `"connects_per_minute";r=0;t=0`) },
		"RateLimit unquoted":   func(u *upgradeRefused) { u.Header.Set("RateLimit", `connects_per_minute;r=0;t=6`) },
		"body of another code": func(u *upgradeRefused) { u.Body = `{"error":"too_many_connections","rule":"connects_per_minute"}` },
		"body without rule":    func(u *upgradeRefused) { u.Body = `{"error":"rate_limited"}` },
		"body not JSON":        func(u *upgradeRefused) { u.Body = `Too Many Requests` },
	} {
		u := good()
		spoil(u)
		if err := checkRefusal(u, "connects_per_minute", 10); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestAggregateLimits: the limits figures survive the JSON report and
// aggregate over runs, a negative added latency included.
func TestAggregateLimits(t *testing.T) {
	var reps []*Report
	for i, added := range []time.Duration{120 * time.Microsecond, -10 * time.Microsecond, 80 * time.Microsecond} {
		without := Summary{Count: 5, P50: time.Millisecond, P99: 2 * time.Millisecond}
		with := Summary{Count: 5, P50: time.Millisecond + added, P99: 2*time.Millisecond + added}
		r := &Report{Limits: &LimitsResult{Nodes: 2,
			Upgrade:  &UpgradeLimitResult{Samples: 5, Without: without, With: with, AddedP50US: us(added), AddedP99US: us(added)},
			Connects: &ConnectLimitResult{Limit: 100, Attempts: 200, Admitted: 100 + i%2, Refused: 100 - i%2, WithHeaders: 100 - i%2, Allowed: 101, Exact: true},
			Frames:   &FrameLimitResult{Keys: 4, Limit: 200, Burst: 400, Sent: 16000, Admitted: 9590 + i, Allowed: 9600, Ratio: float64(9590+i) / 9600, MaxKeyRatio: 1, MaxOver: i - 2, Bound: 8, WithinBound: true},
		}}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"limits":{"nodes":2`) || !strings.Contains(string(b), `"refused_with_headers"`) {
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
	if a := got["limits: added upgrade latency p50"]; a.Runs != 3 || a.Median != 80 || a.Min != -10 || a.Max != 120 {
		t.Errorf("added p50 aggregate = %+v", a)
	}
	if a := got["limits: upgrade p99, no rate rule"]; a.Median != 2000 {
		t.Errorf("p99 without aggregate = %+v", a)
	}
	if a := got["limits: connects admitted"]; a.Median != 100 || a.Max != 101 {
		t.Errorf("connects admitted aggregate = %+v", a)
	}
	if a := got["limits: frames over-admitted, largest key"]; a.Median != -1 || a.Min != -2 || a.Max != 0 {
		t.Errorf("over-admitted aggregate = %+v", a)
	}
	if a := got["limits: frames admitted / allowed"]; a.Median != 9591.0/9600 {
		t.Errorf("ratio aggregate = %+v", a)
	}
	var out bytes.Buffer
	if err := WriteAggregates(&out, AggregateRuns(reps)); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"-10.0µs", "0.9991", "8 frames"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("aggregates lack %q:\n%s", s, out.String())
		}
	}
}
