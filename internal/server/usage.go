package server

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessionbridge/sessionbridge/usage"
)

// usageStore is where a node's usage is written and read: usage.Memory on
// the memory backend, the Redis buckets on the Redis one.
type usageStore interface {
	usage.Sink
	usage.Source
}

// Prometheus gets the node's usage totals by metric and the top values by
// rank, never a label per key or user: the metric label takes the bounded
// set of usage metric names (the gateway counts refusals by its own reasons
// and error frames by the known codes, any other code as "other"), and the
// rank label the values 1 to topRanks.
const (
	// topRanks is how many ranks the top gauge shows.
	topRanks = 10
	// topEvery is how often the top gauge is read from the store: one
	// small query per kind per node per interval.
	topEvery = time.Minute
	// topWindow is the window the top gauge ranks over.
	topWindow = time.Hour
)

// usageCollector exports usage to Prometheus:
// sessionbridge_usage_total{metric} counts everything this node's Recorder
// was handed since it started (every socket counts for its user, so the
// user totals are the node's), and sessionbridge_usage_top_frames_in{kind,
// rank} is the frames in of the rank-th busiest key or user over the last
// hour across the cluster, as last read.
type usageCollector struct {
	rec   *usage.Recorder
	src   usage.Source
	log   *slog.Logger
	total *prometheus.Desc
	top   *prometheus.Desc

	mu   sync.Mutex
	tops map[string][]int64 // by kind, highest first
}

func newUsageCollector(rec *usage.Recorder, src usage.Source, log *slog.Logger) *usageCollector {
	return &usageCollector{
		rec: rec, src: src, log: log,
		total: prometheus.NewDesc("sessionbridge_usage_total",
			"Usage counted by this node since it started, by metric (see docs/usage.md); no label per key or user.",
			[]string{"metric"}, nil),
		top: prometheus.NewDesc("sessionbridge_usage_top_frames_in",
			"Frames received from the rank-th busiest key or user over the last hour across the cluster, read each minute; the IDs are in GET /api/v1/usage/top.",
			[]string{"kind", "rank"}, nil),
		tops: map[string][]int64{},
	}
}

// Describe implements prometheus.Collector.
func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.total
	ch <- c.top
}

// Collect implements prometheus.Collector.
func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	for m, n := range c.rec.Totals(usage.KindUser) {
		ch <- prometheus.MustNewConstMetric(c.total, prometheus.CounterValue, float64(n), m)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for kind, values := range c.tops {
		for i, v := range values {
			ch <- prometheus.MustNewConstMetric(c.top, prometheus.GaugeValue, float64(v), kind, strconv.Itoa(i+1))
		}
	}
}

// refresh reads the top values once.
func (c *usageCollector) refresh(ctx context.Context) {
	for _, kind := range []string{usage.KindKey, usage.KindUser} {
		top, err := c.src.Top(ctx, kind, usage.FramesIn, topWindow, topRanks)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("usage: reading the top subjects for the metrics failed", "err", err)
			}
			continue
		}
		values := make([]int64, len(top))
		for i, t := range top {
			values[i] = t.Value
		}
		c.mu.Lock()
		c.tops[kind] = values
		c.mu.Unlock()
	}
}

// run refreshes the top values every topEvery until ctx is done.
func (c *usageCollector) run(ctx context.Context) {
	t := time.NewTicker(topEvery)
	defer t.Stop()
	for {
		c.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
