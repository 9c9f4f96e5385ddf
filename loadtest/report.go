package loadtest

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// FileLimit is the process's RLIMIT_NOFILE.
type FileLimit struct {
	Soft uint64 `json:"soft"`
	Hard uint64 `json:"hard"`
}

// Errors counts the failures of a scenario and keeps the first few distinct
// messages. Messages never hold a credential.
type Errors struct {
	Count int      `json:"count"`
	First []string `json:"first,omitempty"`
}

const maxErrorSamples = 5

// errSink collects Errors from many goroutines.
type errSink struct {
	mu sync.Mutex
	e  Errors
}

func (s *errSink) add(err error) {
	if err == nil {
		return
	}
	msg := err.Error()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.e.Count++
	if len(s.e.First) < maxErrorSamples {
		for _, m := range s.e.First {
			if m == msg {
				return
			}
		}
		s.e.First = append(s.e.First, msg)
	}
}

func (s *errSink) get() Errors {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Errors{Count: s.e.Count, First: append([]string(nil), s.e.First...)}
}

// Report is the outcome of a run. Results of scenarios that were not run are
// nil.
type Report struct {
	Started        time.Time `json:"started"`
	ElapsedSeconds float64   `json:"elapsed_s"`
	NodeA          string    `json:"node_a"`
	NodesB         []string  `json:"nodes_b"`
	// SocketsPerNode is the number of idle sockets asked for on each B node.
	SocketsPerNode int      `json:"sockets_per_node"`
	Sources        []string `json:"sources,omitempty"`
	// FileLimit is the open-files limit of the process that ran; Run leaves
	// it zero (it does not change process limits) and the command fills it
	// in after RaiseFileLimit.
	FileLimit FileLimit `json:"file_limit"`
	Scenarios []string  `json:"scenarios"`
	// LoadStart and LoadEnd are the machine's load averages (1, 5, 15
	// minutes) when the run started and ended, where the system tells: on a
	// machine shared with other work, latencies are only as good as these.
	LoadStart string `json:"load_start,omitempty"`
	LoadEnd   string `json:"load_end,omitempty"`
	// RevokeGapMS is Config.RevokeGap in milliseconds.
	RevokeGapMS float64 `json:"revoke_gap_ms"`

	Connect *ConnectResult `json:"connect,omitempty"`
	Memory  []MemoryResult `json:"memory,omitempty"`
	Update  *LatencyResult `json:"update,omitempty"`
	Revoke  *LatencyResult `json:"revoke,omitempty"`
	// KeyRevoke is the keyrevoke scenario.
	KeyRevoke *KeyRevokeResult `json:"key_revoke,omitempty"`
	Fanout    *FanoutResult    `json:"fanout,omitempty"`
	Usage     *UsageResult     `json:"usage,omitempty"`
	Churn     *ChurnResult     `json:"churn,omitempty"`
	// Limits is the limits scenario.
	Limits *LimitsResult `json:"limits,omitempty"`
	// Scaling is the scaling scenario.
	Scaling *ScalingResult `json:"scaling,omitempty"`
	// Problems lists what kept part of the run from measuring (a node without
	// /metrics, a scenario cut short by the overall timeout).
	Problems []string `json:"problems,omitempty"`
}

// ConnectResult measures session creation through the admin API and
// connect+auth of the idle sockets.
type ConnectResult struct {
	Sessions       int     `json:"sessions"`
	SessionErrors  Errors  `json:"session_errors"`
	SessionCreate  Summary `json:"session_create"`
	SessionsPerSec float64 `json:"sessions_per_s"`
	Sockets        int     `json:"sockets"`
	Connected      int     `json:"connected"`
	Errors         Errors  `json:"errors"`
	ElapsedSeconds float64 `json:"elapsed_s"`
	SocketsPerSec  float64 `json:"sockets_per_s"`
	Handshake      Summary `json:"handshake"`
	// HandshakeSequential times up to 200 further connects made one at a
	// time while the idle sockets are open: the latency of one handshake
	// without the queueing of Concurrency parallel dials.
	HandshakeSequential Summary `json:"handshake_sequential"`
	ServerCPUSecond     float64 `json:"server_cpu_s"`
	// CPUPerConnectUS is the B nodes' process CPU spent during the connect
	// phase divided by the sockets connected, in microseconds; -1 if the
	// nodes do not export process_cpu_seconds_total.
	CPUPerConnectUS float64 `json:"server_cpu_per_connect_us"`
	// ClientCPUPerConnectUS is this tool's own CPU per connected socket over
	// the same phase, in microseconds (-1 if unknown): on a machine shared
	// with the nodes it is CPU the nodes could not use.
	ClientCPUPerConnectUS float64 `json:"client_cpu_per_connect_us"`
}

// MemoryResult is the memory one B node spends on its idle sockets.
type MemoryResult struct {
	Node    string      `json:"node"`
	Sockets int         `json:"sockets"`
	Before  NodeMetrics `json:"before"`
	After   NodeMetrics `json:"after"`
	// Settled says whether the heap stopped moving before SettleTimeout.
	Settled       bool    `json:"settled"`
	SettleSeconds float64 `json:"settle_s"`
	// Per-socket figures are nil when the node does not export the metric.
	RSSPerSocket          *float64 `json:"rss_per_socket_bytes"`
	HeapStackPerSocket    *float64 `json:"heap_stack_per_socket_bytes"`
	HeapPerSocket         *float64 `json:"heap_per_socket_bytes"`
	StackPerSocket        *float64 `json:"stack_per_socket_bytes"`
	GoroutinesPerSocket   *float64 `json:"goroutines_per_socket"`
	ConnectionsReported   float64  `json:"connections_reported"`
	MetricsUnavailableErr string   `json:"metrics_error,omitempty"`
}

// LatencyResult is a distribution of cross-node propagation times: from just
// before the admin call on node A to the event at a client of a B node.
type LatencyResult struct {
	Samples int     `json:"samples"`
	OK      int     `json:"ok"`
	Errors  Errors  `json:"errors"`
	Latency Summary `json:"latency"`
	// HTTP is the duration of the admin call itself.
	HTTP Summary `json:"http"`
}

// KeyRevokeResult measures API key revocation across nodes: one key per
// idle socket, created through the admin API on node A (scopes ws:connect),
// the sockets opened with them on the B nodes, and keys revoked on A one at
// a time. The embedded LatencyResult is the revocation: from just before
// DELETE /api/v1/keys/{id} on A until the client on B holds the 4401
// api_key_revoked close frame.
type KeyRevokeResult struct {
	Keys          int     `json:"keys"`
	KeyErrors     Errors  `json:"key_errors"`
	KeyCreate     Summary `json:"key_create"`
	Sockets       int     `json:"sockets"`
	Connected     int     `json:"connected"`
	ConnectErrors Errors  `json:"connect_errors"`
	// Handshake is connect+auth with a key, dial to welcome, with
	// Concurrency dials in flight.
	Handshake Summary `json:"handshake"`
	LatencyResult
}

// FanoutResult measures a user-wide logout reaching sockets on every node.
type FanoutResult struct {
	Sockets    int     `json:"sockets"`
	Sessions   int     `json:"sessions"`
	Connected  int     `json:"connected"`
	Closed     int     `json:"closed"`
	Closed4401 int     `json:"closed_4401"`
	Errors     Errors  `json:"errors"`
	HTTPUS     float64 `json:"http_us"`
	// Latency is the distribution of close times over the closed sockets:
	// Min is the first socket, P50 the median, Max the last.
	Latency Summary `json:"latency"`
}

// ChurnResult is the outcome of connecting and disconnecting at a steady
// rate.
type ChurnResult struct {
	DurationSeconds float64     `json:"duration_s"`
	TargetRate      int         `json:"target_rate"`
	AchievedRate    float64     `json:"achieved_rate"`
	HoldSeconds     float64     `json:"hold_s"`
	Connects        int         `json:"connects"`
	Skipped         int         `json:"skipped"`
	Errors          Errors      `json:"errors"`
	Handshake       Summary     `json:"handshake"`
	Nodes           []ChurnNode `json:"nodes"`
}

// ChurnNode is one node's resources through churn. Growth compares the last
// sample taken while churning with the first one (both under the same steady
// load); Left compares the node after churn stopped and its sockets drained
// with the node before churn.
type ChurnNode struct {
	Node      string      `json:"node"`
	Before    NodeMetrics `json:"before"`
	First     NodeMetrics `json:"first"`
	Last      NodeMetrics `json:"last"`
	Drained   NodeMetrics `json:"drained"`
	DrainedOK bool        `json:"drained_ok"`
	// Differences are nil when the node does not export the metric.
	RSSGrowth       *float64      `json:"rss_growth_bytes"`
	HeapStackGrowth *float64      `json:"heap_stack_growth_bytes"`
	GoroutineGrowth *float64      `json:"goroutine_growth"`
	GoroutinesLeft  *float64      `json:"goroutines_left"`
	HeapStackLeft   *float64      `json:"heap_stack_left_bytes"`
	Samples         []ChurnSample `json:"samples"`
	MetricsError    string        `json:"metrics_error,omitempty"`
}

// ChurnSample is one reading of a node's /metrics during churn.
type ChurnSample struct {
	AtSeconds float64 `json:"at_s"`
	NodeMetrics
}

// WriteTable prints r as aligned text tables.
func (r *Report) WriteTable(out io.Writer) error {
	var w *tabwriter.Writer
	section := func() {
		if w != nil {
			_ = w.Flush()
			fmt.Fprintln(out)
		}
		w = tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	}
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	section()
	p("sessionbridge bench\t%s, %.1f s", r.Started.UTC().Format(time.RFC3339), r.ElapsedSeconds)
	if r.Connect != nil || r.Memory != nil || r.Update != nil || r.Revoke != nil {
		p("node A\t%s", r.NodeA)
		p("nodes B\t%s (%d sockets each)", strings.Join(r.NodesB, ", "), r.SocketsPerNode)
	} else {
		p("nodes\t%s", strings.Join(append([]string{r.NodeA}, r.NodesB...), ", "))
	}
	if len(r.Sources) > 0 {
		p("sources\t%s", strings.Join(r.Sources, ", "))
	}
	p("open files limit\t%d (hard %d)", r.FileLimit.Soft, r.FileLimit.Hard)
	if r.LoadStart != "" {
		p("load average\t%s at start, %s at end", r.LoadStart, r.LoadEnd)
	}
	if r.Revoke != nil || r.KeyRevoke != nil {
		gap := "back to back"
		if r.RevokeGapMS > 0 {
			gap = fd(time.Duration(r.RevokeGapMS*float64(time.Millisecond))) + " apart"
		}
		p("revocations\tone at a time, %s", gap)
	}

	lat := func(name string, s Summary) {
		p("%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s", name, s.Count, fd(s.Min), fd(s.P50), fd(s.P95), fd(s.P99), fd(s.Max), fd(s.Mean))
	}
	if r.Connect != nil || r.Update != nil || r.Revoke != nil || r.KeyRevoke != nil || r.Fanout != nil || r.Churn != nil {
		section()
		p("latency\tcount\tmin\tp50\tp95\tp99\tmax\tmean")
		if c := r.Connect; c != nil {
			lat("session create (HTTP)", c.SessionCreate)
			lat("connect+auth (dial→welcome)", c.Handshake)
			if c.HandshakeSequential.Count > 0 {
				lat("connect+auth, one at a time", c.HandshakeSequential)
			}
		}
		if u := r.Update; u != nil {
			lat("update PATCH on A (HTTP)", u.HTTP)
			lat("update A→B (session.updated)", u.Latency)
		}
		if v := r.Revoke; v != nil {
			lat("revoke DELETE on A (HTTP)", v.HTTP)
			lat("revoke A→B (close 4401)", v.Latency)
		}
		if v := r.KeyRevoke; v != nil {
			lat("key create (HTTP)", v.KeyCreate)
			lat("connect+auth with a key", v.Handshake)
			lat("key revoke DELETE on A (HTTP)", v.HTTP)
			lat("key revoke A→B (close 4401)", v.Latency)
		}
		if f := r.Fanout; f != nil {
			lat("user logout fan-out (close)", f.Latency)
		}
		if c := r.Churn; c != nil {
			lat("churn connect+auth", c.Handshake)
		}
	}
	section()
	if c := r.Connect; c != nil {
		p("sessions\t%d/%d created\t%.0f/s\terrors %d", c.SessionCreate.Count, c.Sessions, c.SessionsPerSec, c.SessionErrors.Count)
		p("connect\t%d/%d sockets in %.2f s\t%.0f/s\terrors %d", c.Connected, c.Sockets, c.ElapsedSeconds, c.SocketsPerSec, c.Errors.Count)
		if c.CPUPerConnectUS >= 0 {
			p("server CPU per connect\t%.1f µs\t(%.3f s in all)", c.CPUPerConnectUS, c.ServerCPUSecond)
		}
		if c.ClientCPUPerConnectUS >= 0 {
			p("client CPU per connect\t%.1f µs\t(this tool)", c.ClientCPUPerConnectUS)
		}
	}
	if u := r.Update; u != nil {
		p("update\t%d/%d ok\t\terrors %d", u.OK, u.Samples, u.Errors.Count)
	}
	if v := r.Revoke; v != nil {
		p("revoke\t%d/%d ok\t\terrors %d", v.OK, v.Samples, v.Errors.Count)
	}
	if v := r.KeyRevoke; v != nil {
		p("keys\t%d/%d created, %d/%d sockets connected (one key each)\t\terrors %d, %d", v.KeyCreate.Count, v.Keys, v.Connected, v.Sockets, v.KeyErrors.Count, v.ConnectErrors.Count)
		p("key revoke\t%d/%d ok\t\terrors %d", v.OK, v.Samples, v.Errors.Count)
	}
	if f := r.Fanout; f != nil {
		p("fan-out\t%d/%d sockets closed (%d with 4401), %d sessions\tfirst %s, median %s, last %s; DELETE took %s\terrors %d",
			f.Closed, f.Connected, f.Closed4401, f.Sessions, fd(f.Latency.Min), fd(f.Latency.P50), fd(f.Latency.Max),
			fd(time.Duration(f.HTTPUS*float64(time.Microsecond))), f.Errors.Count)
	}
	if c := r.Churn; c != nil {
		p("churn\t%d connects in %.0f s (target %d/s, hold %.1f s)\t%.1f/s achieved, %d skipped\terrors %d",
			c.Connects, c.DurationSeconds, c.TargetRate, c.HoldSeconds, c.AchievedRate, c.Skipped, c.Errors.Count)
	}
	if len(r.Memory) > 0 {
		section()
		p("memory per idle socket\tsockets\tRSS\theap+stack\t(heap\tstack)\tgoroutines\tsettled")
		for _, m := range r.Memory {
			if m.MetricsUnavailableErr != "" {
				p("%s\t%d\tunavailable: %s", m.Node, m.Sockets, m.MetricsUnavailableErr)
				continue
			}
			p("%s\t%d\t%s\t%s\t(%s\t%s)\t%s\t%v (%.1f s)", m.Node, m.Sockets, fbp(m.RSSPerSocket), fbp(m.HeapStackPerSocket),
				fbp(m.HeapPerSocket), fbp(m.StackPerSocket), fnp(m.GoroutinesPerSocket, "%.2f"), m.Settled, m.SettleSeconds)
		}
	}
	if u := r.Usage; u != nil && u.IdleCalls != nil {
		section()
		p("usage, Redis commands/s per node	sockets	users	nodes	frames/s	silent	active	scripts (active)")
		p("	%d	%d	%d	%.0f	%.1f	%.1f	%.1f", u.Connected, u.Subjects, u.Nodes, float64(u.FramesSent)/u.WindowSeconds,
			u.IdlePerNode, u.ActivePerNode, u.ScriptsPerNode)
		p("usage, busiest commands (active window)	%s", topCalls(u.ActiveCalls, 8))
	}
	if c := r.Churn; c != nil && len(c.Nodes) > 0 {
		section()
		p("churn, steady growth\tRSS\theap+stack\tgoroutines\tleft after drain: heap+stack\tgoroutines\tdrained")
		for _, n := range c.Nodes {
			if n.MetricsError != "" {
				p("%s\tunavailable: %s", n.Node, n.MetricsError)
				continue
			}
			p("%s\t%s\t%s\t%s\t%s\t%s\t%v", n.Node, fbp(n.RSSGrowth), fbp(n.HeapStackGrowth), fnp(n.GoroutineGrowth, "%+.0f"),
				fbp(n.HeapStackLeft), fnp(n.GoroutinesLeft, "%+.0f"), n.DrainedOK)
		}
	}
	if l := r.Limits; l != nil {
		l.writeTable(section, p)
	}
	if sc := r.Scaling; sc != nil {
		sc.writeTable(section, p)
	}
	var errs []string
	add := func(name string, e Errors) {
		for _, m := range e.First {
			errs = append(errs, name+": "+m)
		}
	}
	if c := r.Connect; c != nil {
		add("sessions", c.SessionErrors)
		add("connect", c.Errors)
	}
	if r.Update != nil {
		add("update", r.Update.Errors)
	}
	if r.Revoke != nil {
		add("revoke", r.Revoke.Errors)
	}
	if v := r.KeyRevoke; v != nil {
		add("keys", v.KeyErrors)
		add("key connect", v.ConnectErrors)
		add("key revoke", v.Errors)
	}
	if r.Fanout != nil {
		add("fanout", r.Fanout.Errors)
	}
	if r.Churn != nil {
		add("churn", r.Churn.Errors)
	}
	if r.Usage != nil {
		add("usage", r.Usage.Errors)
	}
	if l := r.Limits; l != nil {
		l.addErrors(add)
	}
	if sc := r.Scaling; sc != nil {
		add("scaling", sc.Errors)
		if sc.Revoke != nil {
			add("scaling revoke", sc.Revoke.Errors)
		}
	}
	errs = append(errs, r.Problems...)
	if len(errs) > 0 {
		section()
		for _, e := range errs {
			p("problem\t%s", e)
		}
	}
	return w.Flush()
}

// fd formats a duration with three significant digits.
func fd(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + fd(-d)
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", us(d))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

// fb formats a byte count.
func fb(b float64) string {
	switch {
	case b < 0:
		return "-" + fb(-b)
	case b < 1024:
		return fmt.Sprintf("%.0f B", b)
	case b < 1<<20:
		return fmt.Sprintf("%.2f KiB", b/1024)
	default:
		return fmt.Sprintf("%.2f MiB", b/(1<<20))
	}
}

// fbp formats an optional byte count.
func fbp(b *float64) string {
	if b == nil {
		return "n/a"
	}
	return fb(*b)
}

// fnp formats an optional number.
func fnp(v *float64, format string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}
