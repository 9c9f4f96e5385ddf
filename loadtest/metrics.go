package loadtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Metric names read from a node's /metrics.
const (
	metricRSS         = "process_resident_memory_bytes"
	metricHeapInuse   = "go_memstats_heap_inuse_bytes"
	metricStackInuse  = "go_memstats_stack_inuse_bytes"
	metricGoroutines  = "go_goroutines"
	metricCPU         = "process_cpu_seconds_total"
	metricConnections = "sessionbridge_connections"
	metricGCCount     = "go_gc_duration_seconds_count"
)

// NodeMetrics is what a run reads from one node's /metrics. A metric the node
// does not export reads as -1.
type NodeMetrics struct {
	RSS         float64 `json:"rss_bytes"`
	HeapInuse   float64 `json:"heap_inuse_bytes"`
	StackInuse  float64 `json:"stack_inuse_bytes"`
	Goroutines  float64 `json:"goroutines"`
	CPUSeconds  float64 `json:"cpu_seconds"`
	Connections float64 `json:"connections"`
	// GCCycles counts the node's completed garbage collections.
	GCCycles float64 `json:"gc_cycles"`
}

// HeapStack is the Go heap in use plus the goroutine stacks in use.
func (m NodeMetrics) HeapStack() float64 {
	if m.HeapInuse < 0 || m.StackInuse < 0 {
		return -1
	}
	return m.HeapInuse + m.StackInuse
}

// maxMetricsBody bounds how much of a /metrics answer is read.
const maxMetricsBody = 32 << 20

// scrapeMetrics reads baseURL/metrics.
func scrapeMetrics(ctx context.Context, hc *http.Client, baseURL string) (NodeMetrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/metrics", nil)
	if err != nil {
		return NodeMetrics{}, fmt.Errorf("loadtest: metrics: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return NodeMetrics{}, fmt.Errorf("loadtest: metrics of %s: %w", baseURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return NodeMetrics{}, fmt.Errorf("loadtest: metrics of %s: HTTP %d", baseURL, resp.StatusCode)
	}
	vals, err := ParseMetrics(io.LimitReader(resp.Body, maxMetricsBody),
		metricRSS, metricHeapInuse, metricStackInuse, metricGoroutines, metricCPU, metricConnections, metricGCCount)
	if err != nil {
		return NodeMetrics{}, fmt.Errorf("loadtest: metrics of %s: %w", baseURL, err)
	}
	get := func(name string) float64 {
		if v, ok := vals[name]; ok {
			return v
		}
		return -1
	}
	return NodeMetrics{
		RSS: get(metricRSS), HeapInuse: get(metricHeapInuse), StackInuse: get(metricStackInuse),
		Goroutines: get(metricGoroutines), CPUSeconds: get(metricCPU), Connections: get(metricConnections),
		GCCycles: get(metricGCCount),
	}, nil
}

// ParseMetrics reads the Prometheus text exposition format and returns, for
// each of names that appears, the sum of its samples over all label sets.
// Comments and other metrics are skipped.
func ParseMetrics(r io.Reader, names ...string) (map[string]float64, error) {
	out := make(map[string]float64)
	err := eachSample(r, names, func(name, _, value string) error {
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return fmt.Errorf("sample of %s: %w", name, err)
		}
		out[name] += v
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// eachSample calls fn with the name, the label text ("{...}" or "") and the
// value text of every sample line of names in the Prometheus text format.
func eachSample(r io.Reader, names []string, fn func(name, labels, value string) error) error {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ \t"); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if !want[name] {
			continue
		}
		labels := ""
		if strings.HasPrefix(rest, "{") {
			// Label values may hold spaces but the value never holds '}'.
			j := strings.LastIndexByte(rest, '}')
			if j < 0 {
				return fmt.Errorf("malformed sample line for %s", name)
			}
			labels, rest = rest[:j+1], rest[j+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return fmt.Errorf("sample of %s without value", name)
		}
		if err := fn(name, labels, fields[0]); err != nil {
			return err
		}
	}
	return sc.Err()
}
