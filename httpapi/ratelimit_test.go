package httpapi

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessionbridge/sessionbridge/limit"
	"github.com/sessionbridge/sessionbridge/metrics"
)

// withRequestLimits sets request rates on a fixture, on its clock.
func withRequestLimits(login, admin int, m *metrics.Metrics) func(*fixture) {
	return func(f *fixture) {
		f.api.RequestLimits = &RequestLimits{
			Limiter: &limit.Memory{Now: f.clock.Now}, LoginPerMinute: login, AdminPerMinute: admin, Metrics: m,
		}
	}
}

func expectRateHeaders(t *testing.T, resp response, rule, policy, state, retry string) {
	t.Helper()
	expect(t, resp, http.StatusTooManyRequests)
	if code := resp.errorCode(t); code != CodeRateLimited {
		t.Fatalf("code %s", code)
	}
	for h, want := range map[string]string{"RateLimit-Policy": policy, "RateLimit": state, "Retry-After": retry} {
		if got := resp.Header.Get(h); got != want {
			t.Fatalf("%s %q, want %q (rule %s)", h, got, want, rule)
		}
	}
}

func TestLoginRequestRate(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, withRequestLimits(3, 0, metrics.New(reg)))
	// Successes and failures alike count: it is a request rate.
	f.login("alice")
	bad := req{method: "POST", path: "/auth/login", body: `{"username":"alice","password":"wrong"}`}
	expect(t, f.do(bad), http.StatusUnauthorized)
	f.login("bob")
	for range 3 {
		expectRateHeaders(t, f.do(bad), RuleLoginPerMinute, `"login_per_minute";q=3;w=60`, `"login_per_minute";r=0;t=20`, "20")
	}
	if got := refusals(t, reg, RuleLoginPerMinute); got != 3 {
		t.Fatalf("refusals counted: %v", got)
	}
	// Refused requests were not charged: 20 s later one passes, one only.
	f.clock.Advance(20 * time.Second)
	f.login("alice")
	expect(t, f.do(bad), http.StatusTooManyRequests)
	// Other routes are not limited.
	expect(t, f.do(req{method: "GET", path: "/healthz"}), http.StatusOK)
}

func TestAdminRequestRate(t *testing.T) {
	f := newFixture(t, withRequestLimits(0, 2, nil))
	s, _ := f.create("alice")
	get := req{method: "GET", path: "/api/v1/sessions/" + s.ID, header: adminHeader()}
	expect(t, f.do(get), http.StatusOK)
	// A request with a wrong token counts too: the limit comes first.
	expect(t, f.do(req{method: "GET", path: get.path, header: map[string]string{"Authorization": "Bearer nope"}}), http.StatusUnauthorized)
	expectRateHeaders(t, f.do(get), RuleAdminPerMinute, `"admin_per_minute";q=2;w=60`, `"admin_per_minute";r=0;t=30`, "30")
	// One allowance for the whole admin API.
	expectRateHeaders(t, f.do(req{method: "POST", path: "/api/v1/publish", header: adminHeader(), body: `{}`}), RuleAdminPerMinute, `"admin_per_minute";q=2;w=60`, `"admin_per_minute";r=0;t=30`, "30")
	// The login route has its own (off here).
	f.login("alice")
}

// refusals reads sessionbridge_rate_limited_total{rule, result="refused"}.
func refusals(t *testing.T, reg *prometheus.Registry, rule string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sessionbridge_rate_limited_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["rule"] == rule && labels["result"] == "refused" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
