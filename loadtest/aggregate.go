package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

// UnmarshalJSON reads the form MarshalJSON writes, so that saved reports can
// be read back and aggregated.
func (s *Summary) UnmarshalJSON(b []byte) error {
	var v struct {
		Count  int     `json:"count"`
		MinUS  float64 `json:"min_us"`
		MeanUS float64 `json:"mean_us"`
		P50US  float64 `json:"p50_us"`
		P90US  float64 `json:"p90_us"`
		P95US  float64 `json:"p95_us"`
		P99US  float64 `json:"p99_us"`
		MaxUS  float64 `json:"max_us"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	d := func(x float64) time.Duration { return time.Duration(x * float64(time.Microsecond)) }
	*s = Summary{Count: v.Count, Min: d(v.MinUS), Mean: d(v.MeanUS), P50: d(v.P50US), P90: d(v.P90US),
		P95: d(v.P95US), P99: d(v.P99US), Max: d(v.MaxUS)}
	return nil
}

// ReadReport reads a report written with --json.
func ReadReport(r io.Reader) (*Report, error) {
	var rep Report
	if err := json.NewDecoder(r).Decode(&rep); err != nil {
		return nil, fmt.Errorf("loadtest: reading report: %w", err)
	}
	return &rep, nil
}

// Figure is one number a report holds: its name, unit, and how to read it
// (ok is false when the run did not measure it).
type Figure struct {
	Name string
	Unit string
	Get  func(*Report) (v float64, ok bool)
}

func latencyFig(name string, pick func(*Report) *Summary, q func(Summary) time.Duration) Figure {
	return Figure{Name: name, Unit: "µs", Get: func(r *Report) (float64, bool) {
		s := pick(r)
		if s == nil || s.Count == 0 {
			return 0, false
		}
		return us(q(*s)), true
	}}
}

func memFig(name, unit string, pick func(MemoryResult) *float64) Figure {
	return Figure{Name: name, Unit: unit, Get: func(r *Report) (float64, bool) {
		if len(r.Memory) == 0 || r.Memory[0].MetricsUnavailableErr != "" {
			return 0, false
		}
		v := pick(r.Memory[0])
		if v == nil {
			return 0, false
		}
		return *v, true
	}}
}

func churnFig(name, unit string, pick func(ChurnNode) *float64) Figure {
	return Figure{Name: name, Unit: unit, Get: func(r *Report) (float64, bool) {
		if r.Churn == nil || len(r.Churn.Nodes) == 0 || r.Churn.Nodes[0].MetricsError != "" {
			return 0, false
		}
		v := pick(r.Churn.Nodes[0])
		if v == nil {
			return 0, false
		}
		return *v, true
	}}
}

// Figures lists the numbers Aggregate compares across runs. Memory and churn
// figures are those of the first B node.
func Figures() []Figure {
	p50 := func(s Summary) time.Duration { return s.P50 }
	p99 := func(s Summary) time.Duration { return s.P99 }
	maxOf := func(s Summary) time.Duration { return s.Max }
	minOf := func(s Summary) time.Duration { return s.Min }
	conn := func(r *Report) *Summary {
		if r.Connect == nil {
			return nil
		}
		return &r.Connect.Handshake
	}
	seq := func(r *Report) *Summary {
		if r.Connect == nil {
			return nil
		}
		return &r.Connect.HandshakeSequential
	}
	upd := func(r *Report) *Summary {
		if r.Update == nil {
			return nil
		}
		return &r.Update.Latency
	}
	rev := func(r *Report) *Summary {
		if r.Revoke == nil {
			return nil
		}
		return &r.Revoke.Latency
	}
	revHTTP := func(r *Report) *Summary {
		if r.Revoke == nil {
			return nil
		}
		return &r.Revoke.HTTP
	}
	keyRev := func(r *Report) *Summary {
		if r.KeyRevoke == nil {
			return nil
		}
		return &r.KeyRevoke.Latency
	}
	keyRevHTTP := func(r *Report) *Summary {
		if r.KeyRevoke == nil {
			return nil
		}
		return &r.KeyRevoke.HTTP
	}
	keyConn := func(r *Report) *Summary {
		if r.KeyRevoke == nil {
			return nil
		}
		return &r.KeyRevoke.Handshake
	}
	fan := func(r *Report) *Summary {
		if r.Fanout == nil {
			return nil
		}
		return &r.Fanout.Latency
	}
	figs := []Figure{
		{Name: "connect rate", Unit: "sockets/s", Get: func(r *Report) (float64, bool) {
			return fieldOf(r.Connect != nil && r.Connect.Connected > 0, func() float64 { return r.Connect.SocketsPerSec })
		}},
		latencyFig("connect+auth p50", conn, p50),
		latencyFig("connect+auth p99", conn, p99),
		latencyFig("connect+auth one at a time p50", seq, p50),
		latencyFig("connect+auth one at a time p99", seq, p99),
		{Name: "server CPU per connect", Unit: "µs", Get: func(r *Report) (float64, bool) {
			return fieldOf(r.Connect != nil && r.Connect.CPUPerConnectUS >= 0, func() float64 { return r.Connect.CPUPerConnectUS })
		}},
		{Name: "client CPU per connect", Unit: "µs", Get: func(r *Report) (float64, bool) {
			return fieldOf(r.Connect != nil && r.Connect.ClientCPUPerConnectUS >= 0, func() float64 { return r.Connect.ClientCPUPerConnectUS })
		}},
		memFig("RSS per socket", "B", func(m MemoryResult) *float64 { return m.RSSPerSocket }),
		memFig("heap+stack per socket", "B", func(m MemoryResult) *float64 { return m.HeapStackPerSocket }),
		memFig("heap per socket", "B", func(m MemoryResult) *float64 { return m.HeapPerSocket }),
		memFig("stack per socket", "B", func(m MemoryResult) *float64 { return m.StackPerSocket }),
		memFig("goroutines per socket", "", func(m MemoryResult) *float64 { return m.GoroutinesPerSocket }),
		latencyFig("update A→B p50", upd, p50),
		latencyFig("update A→B p99", upd, p99),
		latencyFig("update A→B max", upd, maxOf),
		latencyFig("revoke A→B p50", rev, p50),
		latencyFig("revoke A→B p99", rev, p99),
		latencyFig("revoke A→B max", rev, maxOf),
		latencyFig("revoke DELETE (HTTP) p50", revHTTP, p50),
		latencyFig("connect+auth with a key p50", keyConn, p50),
		latencyFig("key revoke A→B p50", keyRev, p50),
		latencyFig("key revoke A→B p99", keyRev, p99),
		latencyFig("key revoke A→B max", keyRev, maxOf),
		latencyFig("key revoke DELETE (HTTP) p50", keyRevHTTP, p50),
		latencyFig("fan-out first close", fan, minOf),
		latencyFig("fan-out median close", fan, p50),
		latencyFig("fan-out last close", fan, maxOf),
		{Name: "churn achieved rate", Unit: "connects/s", Get: func(r *Report) (float64, bool) {
			return fieldOf(r.Churn != nil && r.Churn.Connects > 0, func() float64 { return r.Churn.AchievedRate })
		}},
		churnFig("churn RSS growth (steady)", "B", func(n ChurnNode) *float64 { return n.RSSGrowth }),
		churnFig("churn heap+stack left after drain", "B", func(n ChurnNode) *float64 { return n.HeapStackLeft }),
		churnFig("churn goroutines left after drain", "", func(n ChurnNode) *float64 { return n.GoroutinesLeft }),
	}
	figs = append(figs, limitFigures()...)
	return append(figs, scalingFigures()...)
}

func fieldOf(ok bool, get func() float64) (float64, bool) {
	if !ok {
		return 0, false
	}
	return get(), true
}

// Aggregate is one figure over several runs.
type Aggregate struct {
	Name   string  `json:"name"`
	Unit   string  `json:"unit"`
	Runs   int     `json:"runs"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// AggregateRuns returns, for every figure that at least one report holds, its
// median, minimum and maximum over the reports that hold it. The median of an
// even number of runs is the mean of the middle two.
func AggregateRuns(reps []*Report) []Aggregate {
	var out []Aggregate
	for _, f := range Figures() {
		var vs []float64
		for _, r := range reps {
			if v, ok := f.Get(r); ok {
				vs = append(vs, v)
			}
		}
		if len(vs) == 0 {
			continue
		}
		slices.Sort(vs)
		med := vs[len(vs)/2]
		if len(vs)%2 == 0 {
			med = (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
		}
		out = append(out, Aggregate{Name: f.Name, Unit: f.Unit, Runs: len(vs), Median: med, Min: vs[0], Max: vs[len(vs)-1]})
	}
	return out
}

// WriteAggregates prints aggregates as a Markdown table.
func WriteAggregates(w io.Writer, aggs []Aggregate) error {
	tw := tabwriter.NewWriter(w, 2, 4, 1, ' ', 0)
	fmt.Fprintln(tw, "| figure\t| median\t| min\t| max\t| runs\t|")
	fmt.Fprintln(tw, "|---\t|---\t|---\t|---\t|---\t|")
	for _, a := range aggs {
		fmt.Fprintf(tw, "| %s\t| %s\t| %s\t| %s\t| %d\t|\n", a.Name, fv(a.Median, a.Unit), fv(a.Min, a.Unit), fv(a.Max, a.Unit), a.Runs)
	}
	return tw.Flush()
}

// fv formats a value in its unit.
func fv(v float64, unit string) string {
	switch unit {
	case "µs":
		return fd(time.Duration(v * float64(time.Microsecond)))
	case "B":
		return fb(v)
	case "":
		return fmt.Sprintf("%.2f", v)
	case "ratio":
		return fmt.Sprintf("%.4f", v)
	default:
		return fmt.Sprintf("%.0f %s", v, unit)
	}
}
