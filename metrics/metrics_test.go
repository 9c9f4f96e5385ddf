package metrics

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

func newTest(t *testing.T) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	return New(reg), reg
}

func TestConnections(t *testing.T) {
	m, _ := newTest(t)
	m.ConnOpened("session")
	m.ConnOpened("session")
	m.ConnOpened("jwt")
	m.ConnOpened("password-guess")
	m.ConnClosed("session", 4401, "session_revoked")
	m.ConnClosed("password-guess", 1000, "")

	for auth, want := range map[string]float64{"session": 1, "jwt": 1, "apikey": 0, Other: 0} {
		if got := testutil.ToFloat64(m.connections.WithLabelValues(auth)); got != want {
			t.Errorf("connections{auth=%q} = %v, want %v", auth, got, want)
		}
	}
	if got := testutil.ToFloat64(m.disconnects.WithLabelValues("4401", "session_revoked")); got != 1 {
		t.Errorf("disconnects{4401,session_revoked} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.disconnects.WithLabelValues("1000", "none")); got != 1 {
		t.Errorf("disconnects{1000,none} = %v, want 1", got)
	}
}

func TestCloseCodeClamping(t *testing.T) {
	m, _ := newTest(t)
	for _, code := range []int{-1, 0, 999, 1016, 3000, 5000} {
		m.ConnClosed("session", code, "x")
	}
	if got := testutil.ToFloat64(m.disconnects.WithLabelValues(Other, "x")); got != 6 {
		t.Errorf("out-of-range codes counted %v times as other, want 6", got)
	}
	for code := 4000; code < 4000+MaxCloseCodes+10; code++ {
		m.ConnClosed("session", code, "y")
	}
	if got := testutil.CollectAndCount(m.disconnects); got != 1+MaxCloseCodes+1 {
		t.Errorf("%d disconnect series, want %d", got, 1+MaxCloseCodes+1)
	}
	if got := testutil.ToFloat64(m.disconnects.WithLabelValues(Other, "y")); got != 10 {
		t.Errorf("codes beyond the limit counted %v times, want 10", got)
	}
}

func TestConnect(t *testing.T) {
	m, _ := newTest(t)
	for _, r := range []string{"ok", "ok", "unauthorized", "forbidden", "rate_limited", "too_many_connections", "unavailable", "bad_request", "weird", ""} {
		m.Connect(r)
	}
	want := map[string]float64{"ok": 2, "unauthorized": 1, "forbidden": 1, "rate_limited": 1, "too_many_connections": 1, "unavailable": 1, "bad_request": 1, Other: 2}
	for r, w := range want {
		if got := testutil.ToFloat64(m.connects.WithLabelValues(r)); got != w {
			t.Errorf("connects{result=%q} = %v, want %v", r, got, w)
		}
	}
	if got := testutil.CollectAndCount(m.connects); got != len(want) {
		t.Errorf("%d connect series, want %d", got, len(want))
	}
}

func TestJWTRejected(t *testing.T) {
	m, _ := newTest(t)
	for _, r := range []string{"expired", "expired", "bad_signature", "bad_audience", "unknown_key", "made-up", ""} {
		m.JWTRejected(r)
	}
	want := map[string]float64{"expired": 2, "bad_signature": 1, "bad_audience": 1, "unknown_key": 1, "malformed": 0, Other: 2}
	for r, w := range want {
		if got := testutil.ToFloat64(m.jwtRejections.WithLabelValues(r)); got != w {
			t.Errorf("jwt_rejections{reason=%q} = %v, want %v", r, got, w)
		}
	}
	// Every reason has a series from the start, plus the one "other": the
	// label is bounded whatever the callers pass.
	if got, want := testutil.CollectAndCount(m.jwtRejections), len(jwtReasons)+1; got != want {
		t.Errorf("%d jwt rejection series, want %d", got, want)
	}
}

func TestAuthDuration(t *testing.T) {
	m, reg := newTest(t)
	m.AuthDuration("jwt", 120*time.Microsecond)
	m.AuthDuration("jwt", 3*time.Millisecond)
	m.AuthDuration("nonsense", time.Second)
	h := histogram(t, reg, "sessionbridge_auth_duration_seconds", "jwt")
	if h.GetSampleCount() != 2 || h.GetSampleSum() != 0.00312 {
		t.Errorf("auth_duration{jwt} count %d sum %v, want 2 and 0.00312", h.GetSampleCount(), h.GetSampleSum())
	}
	wantBuckets := map[float64]uint64{50e-6: 0, 100e-6: 0, 250e-6: 1, 2.5e-3: 1, 5e-3: 2, 1: 2}
	bs := h.GetBucket()
	if len(bs) != len(authBuckets) || bs[0].GetUpperBound() != 50e-6 || bs[len(bs)-1].GetUpperBound() != 1 {
		t.Fatalf("buckets %v, want 50µs..1s", bs)
	}
	for _, b := range bs {
		if want, ok := wantBuckets[b.GetUpperBound()]; ok && b.GetCumulativeCount() != want {
			t.Errorf("bucket le=%v holds %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	if got := histCount(t, reg, "sessionbridge_auth_duration_seconds", Other); got != 1 {
		t.Errorf("auth_duration{auth=other} count = %d, want 1", got)
	}
}

func TestFrames(t *testing.T) {
	m, _ := newTest(t)
	m.Frame("session.update", "ok")
	m.Frame("session.update", "ok")
	m.Frame("ping", "ok")
	m.Frame("unknown", "unknown_type")
	m.Frame("bad\ntype", "ok")
	m.Frame(strings.Repeat("a", 65), "ok")
	m.Frame("ping", "result with spaces")
	if got := testutil.ToFloat64(m.frames.WithLabelValues("session.update", "ok")); got != 2 {
		t.Errorf("frames{session.update,ok} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.frames.WithLabelValues(Other, "ok")); got != 2 {
		t.Errorf("malformed types counted %v times as other, want 2", got)
	}
	if got := testutil.ToFloat64(m.frames.WithLabelValues("ping", Other)); got != 1 {
		t.Errorf("malformed result counted %v times as other, want 1", got)
	}
}

func TestFrameTypeCap(t *testing.T) {
	m, _ := newTest(t)
	for i := range MaxFrameTypes + 100 {
		m.Frame(fmt.Sprintf("t%d", i), "ok")
	}
	// The first MaxFrameTypes types keep their names; everything after is
	// one "other" series, and known types still count by name.
	if got := testutil.CollectAndCount(m.frames); got != MaxFrameTypes+1 {
		t.Errorf("%d frame series, want %d", got, MaxFrameTypes+1)
	}
	if got := testutil.ToFloat64(m.frames.WithLabelValues(Other, "ok")); got != 100 {
		t.Errorf("other = %v, want 100", got)
	}
	m.Frame("t0", "ok")
	if got := testutil.ToFloat64(m.frames.WithLabelValues("t0", "ok")); got != 2 {
		t.Errorf("t0 = %v, want 2", got)
	}
}

func TestLabelSetConcurrent(t *testing.T) {
	s := newLabelSet(10)
	var wg sync.WaitGroup
	var mu sync.Mutex
	named := map[string]bool{}
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				v := fmt.Sprintf("v%d", (g*100+i)%50)
				if got := s.clamp(v); got != Other {
					if got != v {
						t.Errorf("clamp(%q) = %q", v, got)
					}
					mu.Lock()
					named[got] = true
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(named) != 10 {
		t.Errorf("%d distinct values admitted, want 10", len(named))
	}
}

func TestEvents(t *testing.T) {
	m, _ := newTest(t)
	m.EventPublished("updated")
	m.EventReceived("updated")
	m.EventReceived("updated")
	m.EventApplied("deleted")
	m.EventApplied("bogus")
	cases := []struct {
		typ, stage string
		want       float64
	}{
		{"updated", "published", 1}, {"updated", "received", 2}, {"updated", "applied", 0},
		{"deleted", "applied", 1}, {Other, "applied", 1},
	}
	for _, c := range cases {
		if got := testutil.ToFloat64(m.events.WithLabelValues(c.typ, c.stage)); got != c.want {
			t.Errorf("events{%s,%s} = %v, want %v", c.typ, c.stage, got, c.want)
		}
	}
}

func TestClusterMetrics(t *testing.T) {
	m, reg := newTest(t)
	m.ApplyLag(2 * time.Millisecond)
	m.ApplyLag(-time.Second) // skewed clocks
	m.Resync("reconnect")
	m.Resync("sweep")
	m.Resync("sweep")
	m.Resync("cosmic-ray")
	m.ResyncClosed(3)
	m.ResyncClosed(0)
	m.ResyncClosed(-5)
	m.RedisError("publish")
	m.RedisError("publish")
	m.RedisError("")
	m.Reconnect()
	m.SessionEvent("created")
	m.SessionEvent("touched")
	m.SessionEvent("exploded")

	if got := histCount(t, reg, "sessionbridge_event_apply_lag_seconds", ""); got != 2 {
		t.Errorf("apply lag count = %d, want 2", got)
	}
	lag := histogram(t, reg, "sessionbridge_event_apply_lag_seconds", "")
	if b := lag.GetBucket(); b[0].GetUpperBound() != 10e-6 || b[len(b)-1].GetUpperBound() != 10 {
		t.Errorf("apply lag buckets %v, want 10µs..10s", b)
	}
	if got := lag.GetSampleSum(); got != 0.002 {
		t.Errorf("apply lag sum = %v, want 0.002 (negative lag counts as 0)", got)
	}
	checks := []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"resyncs reconnect", m.resyncs.WithLabelValues("reconnect"), 1},
		{"resyncs sweep", m.resyncs.WithLabelValues("sweep"), 2},
		{"resyncs gap", m.resyncs.WithLabelValues("gap"), 0},
		{"resyncs other", m.resyncs.WithLabelValues(Other), 1},
		{"resync closed", m.resyncClosed, 3},
		{"redis errors publish", m.redisErrors.WithLabelValues("publish"), 2},
		{"redis errors other", m.redisErrors.WithLabelValues(Other), 1},
		{"redis reconnects", m.redisReconnects, 1},
		{"session created", m.sessionChanges.WithLabelValues("created"), 1},
		{"session touched", m.sessionChanges.WithLabelValues("touched"), 1},
		{"session other", m.sessionChanges.WithLabelValues(Other), 1},
	}
	for _, c := range checks {
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestNamesAndRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.Frame("ping", "ok")
	m.ConnClosed("session", 1000, "normal")
	m.RedisError("get")
	m.ApplyLag(time.Millisecond)
	m.ResyncClosed(1)
	m.Reconnect()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"sessionbridge_auth_duration_seconds", "sessionbridge_connections", "sessionbridge_connects_total",
		"sessionbridge_disconnects_total", "sessionbridge_event_apply_lag_seconds", "sessionbridge_events_total",
		"sessionbridge_frames_total", "sessionbridge_jwt_rejections_total", "sessionbridge_rate_limited_total", "sessionbridge_redis_errors_total", "sessionbridge_redis_reconnects_total",
		"sessionbridge_resync_closed_total", "sessionbridge_resyncs_total", "sessionbridge_session_changes_total",
	}
	var got []string
	for _, mf := range mfs {
		got = append(got, mf.GetName())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("gathered %v, want %v", got, want)
	}

	// A second Metrics on the same registry shares the series.
	m2 := New(reg)
	m2.Connect("ok")
	m.Connect("ok")
	if got := testutil.ToFloat64(m.connects.WithLabelValues("ok")); got != 2 {
		t.Errorf("shared connects{ok} = %v, want 2", got)
	}

	// Without a registry the metrics still record.
	m3 := New(nil)
	m3.Connect("ok")
	if got := testutil.ToFloat64(m3.connects.WithLabelValues("ok")); got != 1 {
		t.Errorf("unregistered connects{ok} = %v, want 1", got)
	}
}

func TestRegisterConflictPanics(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "sessionbridge_connects_total", Help: "something else"}))
	defer func() {
		if recover() == nil {
			t.Error("New did not panic on a conflicting metric")
		}
	}()
	New(reg)
}

func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.ConnOpened("session")
	m.ConnClosed("session", 1000, "normal")
	m.Connect("ok")
	m.AuthDuration("jwt", time.Millisecond)
	m.Frame("ping", "ok")
	m.EventPublished("updated")
	m.EventReceived("updated")
	m.EventApplied("updated")
	m.ApplyLag(time.Millisecond)
	m.Resync("sweep")
	m.ResyncClosed(1)
	m.RedisError("get")
	m.Reconnect()
	m.SessionEvent("created")
	m.JWTRejected("expired")
}

// histogram returns the histogram name for the series whose only label value
// is label ("" for an unlabelled histogram).
func histogram(t *testing.T, reg *prometheus.Registry, name, label string) *dto.Histogram {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			if label == "" && len(mt.GetLabel()) == 0 || len(mt.GetLabel()) == 1 && mt.GetLabel()[0].GetValue() == label {
				return mt.GetHistogram()
			}
		}
	}
	t.Fatalf("no histogram %s{%s}", name, label)
	return nil
}

func histCount(t *testing.T, reg *prometheus.Registry, name, label string) uint64 {
	t.Helper()
	return histogram(t, reg, name, label).GetSampleCount()
}

func BenchmarkFrame(b *testing.B) {
	m := New(prometheus.NewRegistry())
	b.ReportAllocs()
	for b.Loop() {
		m.Frame("session.update", "ok")
	}
}

func BenchmarkConnect(b *testing.B) {
	m := New(prometheus.NewRegistry())
	b.ReportAllocs()
	for b.Loop() {
		m.Connect("ok")
	}
}
