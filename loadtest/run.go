package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// sessionTTL is the lifetime of the sessions a run creates: long enough for
// any run, short enough that sessions a crashed run leaves behind go away.
const sessionTTL = time.Hour

// Run executes the scenarios of cfg against the nodes and returns the report.
// It returns an error only when it cannot start (bad configuration, a target
// that is not loopback without AllowRemote); failures inside scenarios are
// counted in the report. Every loop is bounded by a count and by cfg.Timeout,
// and every socket it opened is closed when it returns.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var nodes []*url.URL
	for _, raw := range cfg.Nodes {
		u, err := ParseNode(raw)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, u)
	}
	if err := checkTargets(ctx, cfg, nodes); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	r := &runner{cfg: cfg, log: cfg.Logger}
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for _, u := range nodes {
		r.all = append(r.all, u.String())
	}
	r.a = r.all[0]
	r.b = r.all[1:]
	if len(r.b) == 0 {
		r.b = r.all[:1]
	}
	sources := cfg.Sources
	if sources == nil {
		peak := cfg.Sockets*len(r.b) + cfg.FanoutSockets + cfg.ChurnRate*int(max(cfg.ChurnHold, time.Second)/time.Second)*2
		if cfg.has(ScenarioScaling) {
			peak = max(peak, cfg.Scaling.Sockets)
		}
		sources = DefaultSources(ctx, cfg.Resolver, nodes, peak, defaultPerSource)
	}
	r.hc = newHTTPClient(cfg.Concurrency, cfg.OpTimeout)
	defer r.hc.CloseIdleConnections()
	r.admin = &adminClient{hc: r.hc, token: cfg.AdminToken}
	r.ws = newWSDialers(sources, cfg.OpTimeout)
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	r.runID = hex.EncodeToString(rnd[:])

	rep := &Report{
		Started: time.Now(), NodeA: r.a, NodesB: r.b, SocketsPerNode: cfg.Sockets,
		Scenarios: cfg.Scenarios, LoadStart: loadAverage(), RevokeGapMS: msOf(cfg.RevokeGap),
	}
	for _, s := range sources {
		rep.Sources = append(rep.Sources, s.String())
	}
	r.prog = startProgress(cfg.Progress, cfg.ProgressInterval)
	defer r.prog.close()

	if cfg.has(ScenarioConnect) || cfg.has(ScenarioMemory) || cfg.has(ScenarioUpdate) || cfg.has(ScenarioRevoke) {
		r.hold(ctx, rep)
	}
	if cfg.has(ScenarioKeyRevoke) && ctx.Err() == nil {
		rep.KeyRevoke = r.keyRevoke(ctx)
	}
	if cfg.has(ScenarioFanout) && ctx.Err() == nil {
		rep.Fanout = r.fanout(ctx)
	}
	if cfg.has(ScenarioChurn) && ctx.Err() == nil {
		rep.Churn = r.churn(ctx, rep)
	}
	if cfg.has(ScenarioUsage) && ctx.Err() == nil {
		rep.Usage = r.usage(ctx)
	}
	if cfg.has(ScenarioLimits) && ctx.Err() == nil {
		rep.Limits = r.limits(ctx)
	}
	if cfg.has(ScenarioScaling) && ctx.Err() == nil {
		rep.Scaling = r.scaling(ctx)
	}
	if ctx.Err() != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("run cut short: %v (timeout %s)", context.Cause(ctx), cfg.Timeout))
	}
	rep.ElapsedSeconds = time.Since(rep.Started).Seconds()
	rep.LoadEnd = loadAverage()
	return rep, nil
}

// loadAverage returns the 1, 5 and 15 minute load averages from
// /proc/loadavg, or "" where there is no such file.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// checkTargets refuses non-loopback nodes unless cfg.AllowRemote.
func checkTargets(ctx context.Context, cfg Config, nodes []*url.URL) error {
	if cfg.AllowRemote {
		return nil
	}
	return CheckLoopback(ctx, cfg.Resolver, nodes)
}

type runner struct {
	cfg   Config
	log   *slog.Logger
	a     string   // node A: admin calls
	b     []string // nodes B: idle sockets
	all   []string
	hc    *http.Client
	admin *adminClient
	ws    *wsDialers
	prog  *progress
	runID string
	dials atomic.Int64 // spreads dials over the source addresses
}

// user names a bench user; the run ID keeps concurrent or repeated runs apart.
func (r *runner) user(kind string, i int) string {
	return fmt.Sprintf("bench-%s-%s-%d", r.runID, kind, i)
}

func (r *runner) dial(ctx context.Context, node, token string) (*wsConn, error) {
	return r.ws.dial(ctx, int(r.dials.Add(1)), wsURL(node), token, r.cfg.OpTimeout)
}

// forEach calls fn(i) for i in [0, n) on at most workers goroutines, starting
// at most rate calls per second when rate > 0. It stops starting calls when
// ctx is done and returns when every call has returned.
func forEach(ctx context.Context, n, workers, rate int, fn func(ctx context.Context, i int)) {
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if rate > 0 {
					due := start.Add(time.Duration(int64(i) * int64(time.Second) / int64(rate)))
					if d := time.Until(due); d > 0 {
						t := time.NewTimer(d)
						select {
						case <-ctx.Done():
							t.Stop()
							return
						case <-t.C:
						}
					}
				}
				fn(ctx, i)
			}
		})
	}
	wg.Wait()
}

// idle is one idle socket of the hold phase and its session.
type idle struct {
	node      string
	id, token string
	conn      *wsConn
	revoked   bool
}

// hold runs the connect, memory, update and revoke scenarios on one set of
// idle sockets, then closes them and deletes their sessions.
func (r *runner) hold(ctx context.Context, rep *Report) {
	cfg := r.cfg
	n := cfg.Sockets * len(r.b)
	socks := make([]idle, n)
	res := &ConnectResult{Sessions: n, Sockets: n, CPUPerConnectUS: -1, ClientCPUPerConnectUS: -1}
	rep.Connect = res

	r.prog.set("create sessions", n)
	createLat := make([]time.Duration, n)
	var serr errSink
	t0 := time.Now()
	forEach(ctx, n, cfg.Concurrency, 0, func(ctx context.Context, i int) {
		socks[i].node = r.b[i%len(r.b)]
		st := time.Now()
		cs, err := r.admin.createSession(ctx, r.a, r.user("idle", i), map[string]any{"bench": 0}, sessionTTL)
		d := time.Since(st)
		r.prog.step(err)
		if err != nil {
			serr.add(err)
			return
		}
		socks[i].id, socks[i].token, createLat[i] = cs.ID, cs.Token, d
	})
	if el := time.Since(t0); el > 0 {
		res.SessionsPerSec = float64(n-serr.get().Count) / el.Seconds()
	}
	res.SessionErrors = serr.get()
	res.SessionCreate = Summarize(nonZero(createLat))
	defer r.release(socks)

	// The baseline is read once the sessions exist, so that the memory delta
	// is the sockets' alone.
	var before []NodeMetrics
	var beforeErr []error
	if cfg.has(ScenarioMemory) {
		r.prog.set("memory baseline (waiting for GC on B nodes)", 0)
		before, beforeErr = r.settleAll(ctx, r.b, nil)
	} else {
		before, beforeErr = r.scrapeAll(ctx, r.b)
	}

	r.prog.set("connect", n)
	hsLat := make([]time.Duration, n)
	var cerr errSink
	cpu0 := selfCPU()
	t1 := time.Now()
	forEach(ctx, n, cfg.Concurrency, cfg.ConnectRate, func(ctx context.Context, i int) {
		if socks[i].token == "" {
			cerr.add(fmt.Errorf("no session to connect with"))
			r.prog.step(fmt.Errorf("no session"))
			return
		}
		st := time.Now()
		c, err := r.dial(ctx, socks[i].node, socks[i].token)
		d := time.Since(st)
		r.prog.step(err)
		if err != nil {
			cerr.add(err)
			return
		}
		socks[i].conn, hsLat[i] = c, d
	})
	el := time.Since(t1)
	cpu1 := selfCPU()
	afterCPU, afterErr := r.scrapeAll(ctx, r.b)
	lat := nonZero(hsLat)
	res.Connected = len(lat)
	res.Errors = cerr.get()
	res.ElapsedSeconds = el.Seconds()
	if el > 0 {
		res.SocketsPerSec = float64(res.Connected) / el.Seconds()
	}
	res.Handshake = Summarize(lat)
	cpu, cpuOK := 0.0, res.Connected > 0
	for j := range r.b {
		if beforeErr[j] != nil || afterErr[j] != nil || afterCPU[j].CPUSeconds < 0 || before[j].CPUSeconds < 0 {
			cpuOK = false
			continue
		}
		cpu += afterCPU[j].CPUSeconds - before[j].CPUSeconds
	}
	if cpu0 >= 0 && cpu1 >= 0 && res.Connected > 0 {
		res.ClientCPUPerConnectUS = us(cpu1-cpu0) / float64(res.Connected)
	}
	if cpuOK {
		res.ServerCPUSecond = cpu
		res.CPUPerConnectUS = cpu / float64(res.Connected) * 1e6
	}

	if cfg.has(ScenarioMemory) && ctx.Err() == nil {
		rep.Memory = r.memory(ctx, socks, before, beforeErr)
	}
	var conns []int
	for i := range socks {
		if socks[i].conn != nil {
			conns = append(conns, i)
		}
	}
	if cfg.has(ScenarioUpdate) && ctx.Err() == nil {
		rep.Update = r.update(ctx, socks, conns)
	}
	if cfg.has(ScenarioRevoke) && ctx.Err() == nil {
		rep.Revoke = r.revoke(ctx, socks, conns)
	}
	if cfg.has(ScenarioConnect) && ctx.Err() == nil {
		res.HandshakeSequential = r.sequentialConnects(ctx, socks, conns)
	}
}

// maxSequentialConnects bounds the one-at-a-time handshakes of the connect
// scenario.
const maxSequentialConnects = 200

// sequentialConnects times connect+auth one socket at a time, with the idle
// sockets still open, so that the figure is the cost of one handshake rather
// than the queueing of many: each dial opens a second socket for a session
// that has one and closes it again.
func (r *runner) sequentialConnects(ctx context.Context, socks []idle, conns []int) Summary {
	n := min(r.cfg.Samples, maxSequentialConnects, len(conns))
	r.prog.set("connect one at a time", n)
	lat := make([]time.Duration, 0, n)
	var errs errSink
	for _, i := range conns {
		if len(lat)+errs.get().Count >= n || ctx.Err() != nil {
			break
		}
		s := &socks[i]
		if s.revoked {
			continue
		}
		st := time.Now()
		c, err := r.dial(ctx, s.node, s.token)
		d := time.Since(st)
		r.prog.step(err)
		if err != nil {
			errs.add(err)
			continue
		}
		lat = append(lat, d)
		c.Close(r.cfg.OpTimeout)
	}
	if e := errs.get(); e.Count > 0 {
		r.log.Warn("one-at-a-time connects failed", "count", e.Count, "first", e.First[0])
	}
	return Summarize(lat)
}

// nonZero returns the recorded durations of xs (failed steps leave zero).
func nonZero(xs []time.Duration) []time.Duration {
	out := make([]time.Duration, 0, len(xs))
	for _, d := range xs {
		if d > 0 {
			out = append(out, d)
		}
	}
	return out
}

// release closes the sockets still open and deletes the sessions not yet
// revoked. It runs even after the overall timeout, bounded on its own.
func (r *runner) release(socks []idle) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r.prog.set("close sockets", len(socks))
	forEach(ctx, len(socks), r.cfg.Concurrency*4, 0, func(ctx context.Context, i int) {
		if c := socks[i].conn; c != nil {
			c.Close(r.cfg.OpTimeout)
		}
		r.prog.step(nil)
	})
	r.prog.set("delete sessions", len(socks))
	forEach(ctx, len(socks), r.cfg.Concurrency, 0, func(ctx context.Context, i int) {
		if socks[i].id != "" && !socks[i].revoked {
			err := r.admin.deleteSession(ctx, r.a, socks[i].id)
			if ae, ok := err.(*apiError); ok && ae.Status == http.StatusNotFound {
				err = nil
			}
			if err != nil {
				r.log.Warn("deleting bench session", "session_id", socks[i].id, "err", err)
			}
		}
		r.prog.step(nil)
	})
}

// scrapeAll reads /metrics of every node once.
func (r *runner) scrapeAll(ctx context.Context, nodes []string) ([]NodeMetrics, []error) {
	ms := make([]NodeMetrics, len(nodes))
	errs := make([]error, len(nodes))
	for j, n := range nodes {
		ms[j], errs[j] = scrapeMetrics(ctx, r.hc, n)
	}
	return ms, errs
}

// settleAll settles every node (see settle) one after the other.
func (r *runner) settleAll(ctx context.Context, nodes []string, ready func(int, NodeMetrics) bool) ([]NodeMetrics, []error) {
	ms := make([]NodeMetrics, len(nodes))
	errs := make([]error, len(nodes))
	for j, n := range nodes {
		var cond func(NodeMetrics) bool
		if ready != nil {
			cond = func(m NodeMetrics) bool { return ready(j, m) }
		}
		ms[j], _, _, errs[j] = r.settle(ctx, n, cond)
	}
	return ms, errs
}

// settle returns a reading of node's /metrics that reflects live memory
// rather than garbage waiting for collection, once ready (if not nil) holds.
//
// The server cannot be told to collect garbage, so settle scrapes /metrics
// back to back: every scrape allocates a little on the server, which brings
// its next collection closer. The reading returned is the first one after
// two more collections have completed (the first may have started before the
// call). A node that exports no GC count is read once its heap+stack stopped
// moving (less than 0.5% over three readings 100 ms apart). It reports
// whether it settled before cfg.SettleTimeout and how long it took; on
// timeout it returns the last reading.
func (r *runner) settle(ctx context.Context, node string, ready func(NodeMetrics) bool) (NodeMetrics, bool, time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.SettleTimeout)
	defer cancel()
	first, err := scrapeMetrics(ctx, r.hc, node)
	if err != nil {
		return first, false, time.Since(start), err
	}
	last := first
	base := -1.0 // GC count when ready first held
	var recent []float64
	for ctx.Err() == nil {
		m, err := scrapeMetrics(ctx, r.hc, node)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return last, false, time.Since(start), err
		}
		last = m
		if ready != nil && !ready(m) {
			base, recent = -1, recent[:0]
			if !r.pause(ctx, 20*time.Millisecond) {
				break
			}
			continue
		}
		if first.GCCycles >= 0 && m.GCCycles >= 0 {
			if base < 0 {
				base = m.GCCycles
				if ready == nil {
					base = first.GCCycles
				}
			}
			if m.GCCycles >= base+2 {
				return r.swept(ctx, node, m), true, time.Since(start), nil
			}
			continue
		}
		recent = append(recent, m.HeapStack())
		if n := len(recent); n >= 3 {
			lo, hi := recent[n-3], recent[n-3]
			for _, v := range recent[n-3:] {
				lo, hi = min(lo, v), max(hi, v)
			}
			if hi-lo <= 0.005*hi {
				return m, true, time.Since(start), nil
			}
		}
		if !r.pause(ctx, 100*time.Millisecond) {
			break
		}
	}
	return last, false, time.Since(start), nil
}

// swept waits, after a collection, until the node's heap stops shrinking and
// returns the last reading. Right after a collection the heap in use still
// counts dead objects that the background sweeper has not freed yet; reads
// 100 ms apart, which allocate next to nothing, let it finish. It gives up
// after two seconds or if the node stops answering, returning the best
// reading so far.
func (r *runner) swept(ctx context.Context, node string, m NodeMetrics) NodeMetrics {
	best := m
	for range 20 {
		if !r.pause(ctx, 100*time.Millisecond) {
			break
		}
		next, err := scrapeMetrics(ctx, r.hc, node)
		if err != nil {
			break
		}
		shrunk := next.HeapInuse < best.HeapInuse-0.001*best.HeapInuse
		if next.HeapInuse <= best.HeapInuse {
			best = next
		}
		if !shrunk {
			break
		}
	}
	return best
}

// pause waits d or until ctx is done; it reports whether d passed.
func (r *runner) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// memory reads each B node once its heap settled with the sockets open and
// compares with the baseline.
func (r *runner) memory(ctx context.Context, socks []idle, before []NodeMetrics, beforeErr []error) []MemoryResult {
	out := make([]MemoryResult, len(r.b))
	for j, node := range r.b {
		mr := MemoryResult{Node: node, Before: before[j]}
		for i := range socks {
			if socks[i].node == node && socks[i].conn != nil {
				mr.Sockets++
			}
		}
		if beforeErr[j] != nil {
			mr.MetricsUnavailableErr = beforeErr[j].Error()
			out[j] = mr
			continue
		}
		r.prog.set("memory: waiting for GC on "+node, 0)
		after, ok, took, err := r.settle(ctx, node, nil)
		if err != nil {
			mr.MetricsUnavailableErr = err.Error()
			out[j] = mr
			continue
		}
		mr.After, mr.Settled, mr.SettleSeconds = after, ok, took.Seconds()
		mr.ConnectionsReported = after.Connections
		if mr.Sockets > 0 {
			per := func(a, b float64) *float64 {
				d := delta(a, b)
				if d != nil {
					*d /= float64(mr.Sockets)
				}
				return d
			}
			mr.RSSPerSocket = per(after.RSS, before[j].RSS)
			mr.HeapStackPerSocket = per(after.HeapStack(), before[j].HeapStack())
			mr.HeapPerSocket = per(after.HeapInuse, before[j].HeapInuse)
			mr.StackPerSocket = per(after.StackInuse, before[j].StackInuse)
			mr.GoroutinesPerSocket = per(after.Goroutines, before[j].Goroutines)
		}
		out[j] = mr
	}
	return out
}

// delta returns a-b, or nil if either is a missing metric (negative).
func delta(a, b float64) *float64 {
	if a < 0 || b < 0 {
		return nil
	}
	d := a - b
	return &d
}

// update times PATCH on node A until session.updated reaches the socket on
// a B node, one sample at a time so that it measures latency, not queueing.
func (r *runner) update(ctx context.Context, socks []idle, conns []int) *LatencyResult {
	n := min(r.cfg.Samples, len(conns))
	res := &LatencyResult{Samples: n}
	var errs errSink
	lat := make([]time.Duration, 0, n)
	httpLat := make([]time.Duration, 0, n)
	r.prog.set("update A→B", n)
	for k := range n {
		if ctx.Err() != nil {
			break
		}
		s := &socks[conns[k]]
		c := s.conn
		c.drainUpdates()
		t0 := time.Now()
		v, err := r.admin.patchSession(ctx, r.a, s.id, map[string]any{"bench": k + 1})
		httpLat = append(httpLat, time.Since(t0))
		if err != nil {
			errs.add(err)
			r.prog.step(err)
			continue
		}
		d, err := waitUpdate(ctx, c, v, t0, r.cfg.OpTimeout)
		r.prog.step(err)
		if err != nil {
			errs.add(err)
			continue
		}
		lat = append(lat, d)
	}
	res.OK = len(lat)
	res.Errors = errs.get()
	res.Latency = Summarize(lat)
	res.HTTP = Summarize(httpLat)
	return res
}

// waitUpdate waits for a session.updated frame of at least version v (any
// version when v is 0) and returns its arrival time since t0.
func waitUpdate(ctx context.Context, c *wsConn, v uint64, t0 time.Time, timeout time.Duration) (time.Duration, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case u := <-c.updates:
			if v == 0 || u.Version >= v {
				return u.At.Sub(t0), nil
			}
		case <-c.done:
			return 0, fmt.Errorf("socket closed with code %d before session.updated", c.code)
		case <-t.C:
			return 0, fmt.Errorf("no session.updated within %s", timeout)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// revoke times DELETE on node A until the socket on a B node is closed with
// 4401 session_revoked, one sample at a time.
func (r *runner) revoke(ctx context.Context, socks []idle, conns []int) *LatencyResult {
	n := min(r.cfg.Samples, len(conns))
	return r.timeRevocations(ctx, "revoke A→B", n, reasonSessionRevoked, func(k int) (*wsConn, func(context.Context) error) {
		// From the end, so that a run with both scenarios revokes the
		// sessions updated last.
		s := &socks[conns[len(conns)-1-k]]
		return s.conn, func(ctx context.Context) error {
			err := r.admin.deleteSession(ctx, r.a, s.id)
			if err == nil {
				s.revoked = true
			}
			return err
		}
	})
}

// timeRevocations takes n samples one at a time: sample k revokes, through
// the call target(k) returns, the credential of the socket it returns, and
// times from just before the call until that socket is closed with 4401 and
// reason. Each sample waits for its close before the next begins, and
// Config.RevokeGap more besides, so that the figure is latency, not queueing.
func (r *runner) timeRevocations(ctx context.Context, phase string, n int, reason string, target func(k int) (*wsConn, func(context.Context) error)) *LatencyResult {
	res := &LatencyResult{Samples: n}
	var errs errSink
	lat := make([]time.Duration, 0, n)
	httpLat := make([]time.Duration, 0, n)
	r.prog.set(phase, n)
	for k := range n {
		if ctx.Err() != nil {
			break
		}
		if k > 0 && r.cfg.RevokeGap > 0 && !r.pause(ctx, r.cfg.RevokeGap) {
			break
		}
		c, del := target(k)
		if c.closed() {
			err := fmt.Errorf("socket already closed with code %d before the revocation", c.code)
			errs.add(err)
			r.prog.step(err)
			continue
		}
		t0 := time.Now()
		err := del(ctx)
		httpLat = append(httpLat, time.Since(t0))
		if err != nil {
			errs.add(err)
			r.prog.step(err)
			continue
		}
		d, err := waitClose(ctx, c, t0, r.cfg.OpTimeout, reason)
		r.prog.step(err)
		if err != nil {
			errs.add(err)
			continue
		}
		lat = append(lat, d)
	}
	res.OK = len(lat)
	res.Errors = errs.get()
	res.Latency = Summarize(lat)
	res.HTTP = Summarize(httpLat)
	return res
}

// closeRevoked is the close code of a revoked session or API key, and the
// reasons that go with it.
const (
	closeRevoked         = 4401
	reasonSessionRevoked = "session_revoked"
	reasonKeyRevoked     = "api_key_revoked"
)

// waitClose waits until the server closes c with 4401 and reason (any
// reason if empty) and returns the time from t0 to the close frame's
// arrival.
func waitClose(ctx context.Context, c *wsConn, t0 time.Time, timeout time.Duration, reason string) (time.Duration, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
		if c.code != closeRevoked || reason != "" && c.reason != reason {
			return 0, fmt.Errorf("socket closed with code %d %q, want %d %q", c.code, c.reason, closeRevoked, reason)
		}
		return c.closedAt.Sub(t0), nil
	case <-t.C:
		return 0, fmt.Errorf("socket not closed within %s", timeout)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// fanout gives one user FanoutSessions sessions and FanoutSockets sockets
// spread over every node, deletes all the user's sessions on node A and
// times the close of every socket.
func (r *runner) fanout(ctx context.Context) *FanoutResult {
	m, k := r.cfg.FanoutSockets, r.cfg.FanoutSessions
	res := &FanoutResult{Sockets: m, Sessions: k}
	if m == 0 || k == 0 {
		return res
	}
	user := r.user("fanout", 0)
	var errs errSink
	tokens := make([]string, k)
	r.prog.set("fan-out: create sessions", k)
	forEach(ctx, k, r.cfg.Concurrency, 0, func(ctx context.Context, i int) {
		cs, err := r.admin.createSession(ctx, r.a, user, nil, sessionTTL)
		r.prog.step(err)
		if err != nil {
			errs.add(err)
			return
		}
		tokens[i] = cs.Token
	})
	conns := make([]*wsConn, m)
	defer func() {
		// Sockets the logout did not reach are closed here.
		forEach(context.Background(), m, r.cfg.Concurrency*4, 0, func(_ context.Context, i int) {
			if conns[i] != nil {
				conns[i].Close(r.cfg.OpTimeout)
			}
		})
		cctx, cancel := context.WithTimeout(context.Background(), r.cfg.OpTimeout)
		defer cancel()
		_ = r.admin.deleteUserSessions(cctx, r.a, user)
	}()
	r.prog.set("fan-out: connect", m)
	forEach(ctx, m, r.cfg.Concurrency, r.cfg.ConnectRate, func(ctx context.Context, j int) {
		tok := tokens[j%k]
		if tok == "" {
			r.prog.step(fmt.Errorf("no session"))
			return
		}
		c, err := r.dial(ctx, r.all[j%len(r.all)], tok)
		r.prog.step(err)
		if err != nil {
			errs.add(err)
			return
		}
		conns[j] = c
	})
	for _, c := range conns {
		if c != nil {
			res.Connected++
		}
	}
	if res.Connected == 0 || ctx.Err() != nil {
		res.Errors = errs.get()
		return res
	}
	r.prog.set("fan-out: logout", res.Connected)
	t0 := time.Now()
	err := r.admin.deleteUserSessions(ctx, r.a, user)
	res.HTTPUS = us(time.Since(t0))
	if err != nil {
		errs.add(err)
		res.Errors = errs.get()
		return res
	}
	wctx, cancel := context.WithTimeout(ctx, r.cfg.OpTimeout)
	defer cancel()
	lat := make([]time.Duration, 0, res.Connected)
	for _, c := range conns {
		if c == nil {
			continue
		}
		select {
		case <-c.done:
			res.Closed++
			lat = append(lat, c.closedAt.Sub(t0))
			if c.code == closeRevoked {
				res.Closed4401++
			} else {
				errs.add(fmt.Errorf("socket closed with code %d %q, want %d", c.code, c.reason, closeRevoked))
			}
			r.prog.step(nil)
		case <-wctx.Done():
			errs.add(fmt.Errorf("socket not closed within %s of the logout", r.cfg.OpTimeout))
			r.prog.step(wctx.Err())
		}
	}
	res.Latency = Summarize(lat)
	res.Errors = errs.get()
	return res
}

// churn connects and disconnects at ChurnRate for ChurnDuration, spread over
// the B nodes, sampling their /metrics every SampleInterval.
func (r *runner) churn(ctx context.Context, rep *Report) *ChurnResult {
	cfg := r.cfg
	res := &ChurnResult{TargetRate: cfg.ChurnRate, HoldSeconds: cfg.ChurnHold.Seconds()}
	if cfg.ChurnRate == 0 || cfg.ChurnDuration == 0 {
		return res
	}
	var errs errSink
	pool := min(max(cfg.ChurnRate, 10), 2000)
	tokens := make([]string, pool)
	ids := make([]string, pool)
	r.prog.set("churn: create sessions", pool)
	forEach(ctx, pool, cfg.Concurrency, 0, func(ctx context.Context, i int) {
		cs, err := r.admin.createSession(ctx, r.a, r.user("churn", i), nil, sessionTTL)
		r.prog.step(err)
		if err != nil {
			errs.add(err)
			return
		}
		tokens[i], ids[i] = cs.Token, cs.ID
	})
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		forEach(cctx, pool, cfg.Concurrency, 0, func(ctx context.Context, i int) {
			if ids[i] != "" {
				_ = r.admin.deleteSession(ctx, r.a, ids[i])
			}
		})
	}()

	nodes := make([]ChurnNode, len(r.b))
	r.prog.set("churn: baseline (waiting for GC on B nodes)", 0)
	before, beforeErr := r.settleAll(ctx, r.b, nil)
	for j := range nodes {
		nodes[j] = ChurnNode{Node: r.b[j], Before: before[j]}
		if beforeErr[j] != nil {
			nodes[j].MetricsError = beforeErr[j].Error()
		}
	}

	// The sampler reads every node each SampleInterval while churn runs.
	start := time.Now()
	stopSampler := make(chan struct{})
	var samplerWG sync.WaitGroup
	samplerWG.Go(func() {
		t := time.NewTicker(cfg.SampleInterval)
		defer t.Stop()
		for {
			select {
			case <-stopSampler:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			at := time.Since(start).Seconds()
			for j, node := range r.b {
				m, err := scrapeMetrics(ctx, r.hc, node)
				if err == nil {
					nodes[j].Samples = append(nodes[j].Samples, ChurnSample{AtSeconds: at, NodeMetrics: m})
				}
			}
		}
	})

	inflight := min(cfg.ChurnRate*int(max(cfg.ChurnHold, time.Second)/time.Second)*2+cfg.Concurrency, 20000)
	sem := make(chan struct{}, inflight)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var hs []time.Duration
	var connects, launched, skipped int
	r.prog.set("churn", int(cfg.ChurnDuration.Seconds()*float64(cfg.ChurnRate)))
	tickEvery := max(time.Second/time.Duration(cfg.ChurnRate), time.Millisecond)
	tick := time.NewTicker(tickEvery)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		el := time.Since(start)
		if el >= cfg.ChurnDuration {
			break
		}
		due := int(el.Seconds() * float64(cfg.ChurnRate))
		for ; launched < due; launched++ {
			i := launched
			select {
			case sem <- struct{}{}:
			default:
				skipped++
				continue
			}
			wg.Go(func() {
				defer func() { <-sem }()
				tok := tokens[i%pool]
				if tok == "" {
					r.prog.step(fmt.Errorf("no session"))
					return
				}
				st := time.Now()
				c, err := r.dial(ctx, r.b[i%len(r.b)], tok)
				d := time.Since(st)
				r.prog.step(err)
				if err != nil {
					errs.add(err)
					return
				}
				mu.Lock()
				hs = append(hs, d)
				connects++
				mu.Unlock()
				t := time.NewTimer(cfg.ChurnHold)
				select {
				case <-ctx.Done():
				case <-t.C:
				case <-c.done:
					errs.add(fmt.Errorf("churn socket closed by the server with code %d %q", c.code, c.reason))
				}
				t.Stop()
				c.Close(cfg.OpTimeout)
			})
		}
	}
	tick.Stop()
	window := min(time.Since(start), cfg.ChurnDuration)
	wg.Wait()
	close(stopSampler)
	samplerWG.Wait()

	res.DurationSeconds = window.Seconds()
	res.Connects = connects
	res.Skipped = skipped
	if window > 0 {
		res.AchievedRate = float64(connects) / window.Seconds()
	}
	res.Handshake = Summarize(hs)

	r.prog.set("churn: drain (waiting for sockets to close and GC on B nodes)", 0)
	drained, drainErr := r.settleAll(ctx, r.b, func(j int, m NodeMetrics) bool {
		// Back to the connections and goroutines before churn, with a little
		// slack for the HTTP connections of the scrapes themselves.
		return (m.Connections < 0 || m.Connections <= before[j].Connections) &&
			(m.Goroutines < 0 || m.Goroutines <= before[j].Goroutines+4)
	})
	for j := range nodes {
		n := &nodes[j]
		if n.MetricsError != "" {
			continue
		}
		if drainErr[j] != nil {
			n.MetricsError = drainErr[j].Error()
			continue
		}
		n.Drained = drained[j]
		n.DrainedOK = (drained[j].Connections < 0 || drained[j].Connections <= before[j].Connections) &&
			(drained[j].Goroutines < 0 || drained[j].Goroutines <= before[j].Goroutines+4)
		n.GoroutinesLeft = delta(drained[j].Goroutines, before[j].Goroutines)
		n.HeapStackLeft = delta(drained[j].HeapStack(), before[j].HeapStack())
		if len(n.Samples) > 0 {
			n.First, n.Last = n.Samples[0].NodeMetrics, n.Samples[len(n.Samples)-1].NodeMetrics
			n.RSSGrowth = delta(n.Last.RSS, n.First.RSS)
			n.HeapStackGrowth = delta(n.Last.HeapStack(), n.First.HeapStack())
			n.GoroutineGrowth = delta(n.Last.Goroutines, n.First.Goroutines)
		} else {
			rep.Problems = append(rep.Problems, fmt.Sprintf("churn: no /metrics sample of %s during the run (duration %s, sample interval %s)", n.Node, cfg.ChurnDuration, cfg.SampleInterval))
		}
	}
	res.Nodes = nodes
	res.Errors = errs.get()
	return res
}
