package loadtest

import (
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	const text = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
go_goroutines_extra 7
process_resident_memory_bytes 1.2345e+07
sessionbridge_connections{node="a",auth="session"} 10
sessionbridge_connections{node="a",auth="jwt label with } brace"} 5 1700000000000
go_gc_duration_seconds{quantile="0.5"} 0.0001
go_gc_duration_seconds_count 12
weird_inf +Inf
`
	got, err := ParseMetrics(strings.NewReader(text), "go_goroutines", "process_resident_memory_bytes",
		"sessionbridge_connections", "go_gc_duration_seconds_count", "absent", "weird_inf")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"go_goroutines": 42, "process_resident_memory_bytes": 12345000,
		"sessionbridge_connections": 15, "go_gc_duration_seconds_count": 12}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if _, ok := got["absent"]; ok {
		t.Error("absent metric reported")
	}
	if _, err := ParseMetrics(strings.NewReader("go_goroutines abc\n"), "go_goroutines"); err == nil {
		t.Error("bad value accepted")
	}
	if _, err := ParseMetrics(strings.NewReader("go_goroutines{a=\"b\" 1\n"), "go_goroutines"); err == nil {
		t.Error("unterminated labels accepted")
	}
}
