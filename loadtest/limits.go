package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Defaults and bounds of a LimitsConfig.
const (
	DefaultLimitKeys           = 4
	DefaultLimitSocketsPerNode = 2
	DefaultLimitFrames         = 200
	DefaultLimitDuration       = 10 * time.Second
	MaxLimitDuration           = 10 * time.Minute
	DefaultLimitConnects       = 100
	DefaultLimitSamples        = 500
	// maxLimitRate bounds FramesPerSecond and Connects: the client sends
	// twice as many, and must keep up.
	maxLimitRate = 100_000
	// maxLimitSockets bounds Keys × SocketsPerNode.
	maxLimitSockets = 10_000
)

// generousConnects is the connects_per_minute of the key whose upgrades are
// timed with the rule on: an attempt every 60 µs, more than a client making
// one upgrade at a time reaches, so that the rule decides every upgrade and
// refuses none.
const generousConnects = 1_000_000

// Rule names and codes of docs/rate-limits.md the scenario checks.
const (
	ruleConnectsPerMinute  = "connects_per_minute"
	ruleKeyFramesPerSecond = "key_frames_per_second"
	codeRateLimited        = "rate_limited"
	closeRateLimited       = 4429
)

// LimitsConfig shapes the limits scenario. Zero fields take their defaults.
type LimitsConfig struct {
	// Keys is how many API keys send frames at once, each with
	// key_frames_per_second FramesPerSecond; SocketsPerNode is how many
	// sockets each of them opens on every node.
	Keys           int
	SocketsPerNode int
	// FramesPerSecond is those keys' key_frames_per_second; each key sends
	// twice as many, spread over its sockets on every node, for Duration
	// (capped at MaxLimitDuration).
	FramesPerSecond int
	Duration        time.Duration
	// Connects is the connects_per_minute of the key whose attempts are
	// counted; it makes twice as many attempts, spread over every node.
	Connects int
	// Samples is how many upgrades are timed with connects_per_minute on,
	// and as many with no rate rule.
	Samples int
}

func (c LimitsConfig) withDefaults() (LimitsConfig, error) {
	if c.Keys < 0 || c.SocketsPerNode < 0 || c.FramesPerSecond < 0 || c.Duration < 0 || c.Connects < 0 || c.Samples < 0 {
		return c, fmt.Errorf("loadtest: limits: counts, rates and durations must not be negative")
	}
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.Keys, DefaultLimitKeys)
	def(&c.SocketsPerNode, DefaultLimitSocketsPerNode)
	def(&c.FramesPerSecond, DefaultLimitFrames)
	def(&c.Connects, DefaultLimitConnects)
	def(&c.Samples, DefaultLimitSamples)
	if c.Duration == 0 {
		c.Duration = DefaultLimitDuration
	}
	switch {
	case c.FramesPerSecond > maxLimitRate || c.Connects > maxLimitRate:
		return c, fmt.Errorf("loadtest: limits: rates must be at most %d", maxLimitRate)
	case c.Keys*c.SocketsPerNode > maxLimitSockets:
		return c, fmt.Errorf("loadtest: limits: keys × sockets per node must be at most %d", maxLimitSockets)
	}
	c.Duration = min(c.Duration, MaxLimitDuration)
	return c, nil
}

// LimitsResult is the limits scenario: rate limits driven at and above
// their limits across every node (see docs/rate-limits.md). Parts that did
// not run are nil.
type LimitsResult struct {
	// Nodes is how many distinct nodes were driven.
	Nodes    int                 `json:"nodes"`
	Upgrade  *UpgradeLimitResult `json:"upgrade,omitempty"`
	Connects *ConnectLimitResult `json:"connects,omitempty"`
	Frames   *FrameLimitResult   `json:"frames,omitempty"`
}

// UpgradeLimitResult is the cost of the connects_per_minute decision on the
// upgrade: upgrades (dial to welcome) made one at a time, alternately with
// an API key whose connects_per_minute is generous (the rule decides, for
// the client IP, the user and the key, and refuses nothing) and with one
// that has no rate rule, over every node in turn.
type UpgradeLimitResult struct {
	Samples           int     `json:"samples"`
	ConnectsPerMinute int     `json:"connects_per_minute"`
	Without           Summary `json:"without"`
	With              Summary `json:"with"`
	// AddedP50US and AddedP99US are With minus Without, in microseconds.
	AddedP50US float64 `json:"added_p50_us"`
	AddedP99US float64 `json:"added_p99_us"`
	Errors     Errors  `json:"errors"`
}

// ConnectLimitResult is connects_per_minute held exactly across nodes: one
// API key with a limit of Limit makes twice as many attempts at once,
// spread over every node.
type ConnectLimitResult struct {
	Limit    int `json:"limit"`
	Attempts int `json:"attempts"`
	Admitted int `json:"admitted"`
	// Refused counts the 429 answers; WithHeaders those of them that carry
	// Retry-After, RateLimit-Policy and RateLimit as docs/rate-limits.md
	// says, and a body naming the rule.
	Refused     int `json:"refused_429"`
	WithHeaders int `json:"refused_with_headers"`
	// WindowS runs from the first attempt to the end of the last; Allowed
	// is the most the rule may admit in it: the burst (Limit) and the rate
	// over the window.
	WindowS float64 `json:"window_s"`
	Allowed int     `json:"allowed"`
	// Exact says Limit <= Admitted <= Allowed, with no attempt failing
	// otherwise.
	Exact      bool   `json:"exact"`
	BadHeaders Errors `json:"bad_headers"`
	Errors     Errors `json:"errors"`
}

// FrameLimitResult is key_frames_per_second held across nodes: Keys API
// keys with a limit of Limit frames a second (burst Burst) each send twice
// as many JSON ping frames as they may, spread over their sockets on every
// node, for DurationS. Every frame is answered: pong when admitted, error
// rate_limited when not.
type FrameLimitResult struct {
	Keys          int     `json:"keys"`
	SocketsPerKey int     `json:"sockets_per_key"`
	Limit         int     `json:"limit"`
	Burst         int     `json:"burst"`
	DurationS     float64 `json:"duration_s"`
	Sent          int     `json:"sent"`
	// Skipped counts frames not sent because they fell due while the
	// client was late by more than one interval (on a loaded machine);
	// SendRate is what was sent as a multiple of the keys' limits over
	// DurationS (2 when nothing was skipped).
	Skipped  int     `json:"skipped"`
	SendRate float64 `json:"send_rate"`
	Admitted int     `json:"admitted"`
	Refused  int     `json:"refused"`
	// Unanswered are frames sent without an answer: those of sockets the
	// server closed, Closed4429 of them with 4429 for sending past the
	// limit (docs/rate-limits.md: more than 32 refused in a row). Such a
	// socket sends no more, so its key sends less than twice its limit
	// from then on.
	Unanswered int `json:"unanswered"`
	Closed4429 int `json:"closed_4429"`
	// Nodes splits the frames by node: how the keys' tokens were shared.
	Nodes []FrameNodeResult `json:"nodes"`
	// Allowed is, summed over the keys, the most the rule may admit: the
	// burst and the rate over each key's window, from its first frame sent
	// to its last answer received (an upper bound of the time the servers
	// spent deciding).
	Allowed int `json:"allowed"`
	// Ratio is Admitted / Allowed; MaxKeyRatio the largest of one key.
	Ratio       float64 `json:"ratio"`
	MaxKeyRatio float64 `json:"max_key_ratio"`
	// MaxOver is the largest over-admission of one key, in frames
	// (negative when every key got less than allowed); Bound is the
	// documented bound, max(1 % of the limit, one lease per node), a lease
	// being 1 % of the burst.
	MaxOver     int    `json:"max_over"`
	Bound       int    `json:"bound"`
	WithinBound bool   `json:"within_bound"`
	Errors      Errors `json:"errors"`
}

// FrameNodeResult is one node's part of a FrameLimitResult.
type FrameNodeResult struct {
	Node       string `json:"node"`
	Sockets    int    `json:"sockets"`
	Sent       int    `json:"sent"`
	Admitted   int    `json:"admitted"`
	Refused    int    `json:"refused"`
	Closed4429 int    `json:"closed_4429"`
}

// limits runs the limits scenario: the upgrade timings first (they charge
// the client IP at a generous rate only), then the connection attempts
// (which use the IP's whole burst at a small rate), then the frames (no
// rule of the upgrade). The IP's state outlives the run by up to a minute,
// and an earlier run's lowers what the attempts of the next may get: run
// it on fresh nodes, or a minute apart.
func (r *runner) limits(ctx context.Context) *LimitsResult {
	nodes := distinct(r.all)
	res := &LimitsResult{Nodes: len(nodes)}
	res.Upgrade = r.limitUpgrade(ctx, nodes)
	if ctx.Err() == nil {
		res.Connects = r.limitConnects(ctx, nodes)
	}
	if ctx.Err() == nil {
		res.Frames = r.limitFrames(ctx, nodes)
	}
	return res
}

// distinct returns ss without repeats, in order.
func distinct(ss []string) []string {
	var out []string
	for _, s := range ss {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// dropKeys deletes the keys a scenario created, bounded on its own like
// releaseKeys.
func (r *runner) dropKeys(ids []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	forEach(ctx, len(ids), r.cfg.Concurrency, 0, func(ctx context.Context, i int) {
		if ids[i] == "" {
			return
		}
		err := r.admin.deleteKey(ctx, r.a, ids[i])
		if ae, ok := err.(*apiError); ok && ae.Status == http.StatusNotFound {
			err = nil
		}
		if err != nil {
			r.log.Warn("deleting bench key", "key_id", ids[i], "err", err)
		}
	})
}

// limitUpgrade times Samples upgrades with connects_per_minute on and as
// many without, one at a time, alternating the two (which goes first
// alternates too) and the nodes, so that both see the same machine.
func (r *runner) limitUpgrade(ctx context.Context, nodes []string) *UpgradeLimitResult {
	n := r.cfg.Limits.Samples
	res := &UpgradeLimitResult{Samples: n, ConnectsPerMinute: generousConnects}
	var errs errSink
	r.prog.set("limits: create keys", 2)
	with, err := r.admin.createLimitedKey(ctx, r.a, r.user("limit-upgrade", 0), keyTTL, map[string]any{ruleConnectsPerMinute: generousConnects})
	r.prog.step(err)
	errs.add(err)
	without, err2 := r.admin.createKey(ctx, r.a, r.user("limit-upgrade", 1), keyTTL)
	r.prog.step(err2)
	errs.add(err2)
	defer r.dropKeys([]string{with.ID, without.ID})
	if err != nil || err2 != nil {
		res.Errors = errs.get()
		return res
	}

	// A few upgrades of each first, not counted: the first connections of
	// a process pay for warming up what every later one reuses.
	const warmup = 4
	lat := [2][]time.Duration{make([]time.Duration, 0, n), make([]time.Duration, 0, n)}
	keys := [2]string{with.Key, without.Key}
	r.prog.set("limits: upgrades with and without connects_per_minute, one at a time", 2*n)
	for i := range 2*n + warmup {
		if ctx.Err() != nil {
			break
		}
		pair := i / 2
		kind := (i + pair) % 2 // which of the pair goes first alternates
		st := time.Now()
		c, err := r.dial(ctx, nodes[pair%len(nodes)], keys[kind])
		d := time.Since(st)
		if i >= warmup {
			r.prog.step(err)
		}
		if err != nil {
			errs.add(err)
			continue
		}
		c.Close(r.cfg.OpTimeout)
		if i >= warmup {
			lat[kind] = append(lat[kind], d)
		}
	}
	res.With, res.Without = Summarize(lat[0]), Summarize(lat[1])
	if res.With.Count > 0 && res.Without.Count > 0 {
		res.AddedP50US = us(res.With.P50 - res.Without.P50)
		res.AddedP99US = us(res.With.P99 - res.Without.P99)
	}
	res.Errors = errs.get()
	return res
}

// limitConnects makes twice Connects attempts at once with one key whose
// connects_per_minute is Connects, spread over every node, and counts what
// was admitted and how the refusals were answered.
func (r *runner) limitConnects(ctx context.Context, nodes []string) *ConnectLimitResult {
	c := r.cfg.Limits.Connects
	res := &ConnectLimitResult{Limit: c, Attempts: 2 * c}
	var errs, bad errSink
	k, err := r.admin.createLimitedKey(ctx, r.a, r.user("limit-connects", 0), keyTTL, map[string]any{ruleConnectsPerMinute: c})
	defer r.dropKeys([]string{k.ID})
	if err != nil {
		errs.add(err)
		res.Errors = errs.get()
		return res
	}
	var mu sync.Mutex
	var conns []*wsConn
	defer func() {
		forEach(context.Background(), len(conns), r.cfg.Concurrency*4, 0, func(_ context.Context, i int) {
			conns[i].Close(r.cfg.OpTimeout)
		})
	}()
	var refused, withHeaders atomic.Int64
	r.prog.set("limits: connection attempts at twice connects_per_minute", res.Attempts)
	t0 := time.Now()
	forEach(ctx, res.Attempts, r.cfg.Concurrency, 0, func(ctx context.Context, i int) {
		conn, err := r.dial(ctx, nodes[i%len(nodes)], k.Key)
		r.prog.step(nil)
		if err == nil {
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			return
		}
		var ur *upgradeRefused
		if !errors.As(err, &ur) || ur.Status != http.StatusTooManyRequests {
			errs.add(err)
			return
		}
		refused.Add(1)
		if herr := checkRefusal(ur, ruleConnectsPerMinute, c); herr != nil {
			bad.add(herr)
			return
		}
		withHeaders.Add(1)
	})
	window := time.Since(t0)
	res.Admitted = len(conns)
	res.Refused, res.WithHeaders = int(refused.Load()), int(withHeaders.Load())
	res.WindowS = window.Seconds()
	res.Allowed = c + int(int64(window)*int64(c)/int64(time.Minute))
	res.Errors, res.BadHeaders = errs.get(), bad.get()
	res.Exact = res.Errors.Count == 0 && res.Admitted >= c && res.Admitted <= res.Allowed
	return res
}

// checkRefusal checks a 429 of rule against docs/rate-limits.md: a JSON
// body {"error": "rate_limited", "rule": rule}, Retry-After in whole
// seconds (at least 1), RateLimit-Policy naming the rule with q=limit and
// w=60, and RateLimit naming it with r=0 and t at least 1.
func checkRefusal(ur *upgradeRefused, rule string, limit int) error {
	var body struct {
		Error string `json:"error"`
		Rule  string `json:"rule"`
	}
	if err := json.Unmarshal([]byte(ur.Body), &body); err != nil || body.Error != codeRateLimited || body.Rule != rule {
		return fmt.Errorf("429 body %q, want error %q and rule %q", ur.Body, codeRateLimited, rule)
	}
	ra := ur.Header.Get("Retry-After")
	if s, err := strconv.Atoi(ra); err != nil || s < 1 {
		return fmt.Errorf("429 Retry-After %q, want whole seconds, at least 1", ra)
	}
	pol := ur.Header.Get("RateLimit-Policy")
	name, params := parseRateLimitItem(pol)
	if name != rule || params["q"] != strconv.Itoa(limit) || params["w"] != "60" {
		return fmt.Errorf("429 RateLimit-Policy %q, want %q;q=%d;w=60", pol, rule, limit)
	}
	st := ur.Header.Get("RateLimit")
	name, params = parseRateLimitItem(st)
	if t, err := strconv.Atoi(params["t"]); name != rule || params["r"] != "0" || err != nil || t < 1 {
		return fmt.Errorf("429 RateLimit %q, want %q;r=0;t=<seconds>", st, rule)
	}
	return nil
}

// parseRateLimitItem reads one item of the RateLimit and RateLimit-Policy
// fields, `"name";k=v;k=v`: its name unquoted and its parameters. A field
// that is not one such item gives an empty name.
func parseRateLimitItem(v string) (string, map[string]string) {
	parts := strings.Split(strings.TrimSpace(v), ";")
	name, err := strconv.Unquote(strings.TrimSpace(parts[0]))
	if err != nil || strings.Contains(v, ",") {
		return "", nil
	}
	params := make(map[string]string, len(parts)-1)
	for _, p := range parts[1:] {
		k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok {
			return "", nil
		}
		params[k] = val
	}
	return name, params
}

// leaseOf is the tokens a node leases at a time from a cluster frame
// rule's bucket, per docs/rate-limits.md: 1 % of the burst, at least one.
func leaseOf(burst int) int { return max(1, burst/100) }

// frameBound is the documented bound of over-admission of a cluster frame
// rule of limit frames a second and burst burst on nodes nodes, in frames:
// max(1 % of the limit, one lease per node).
func frameBound(limit, burst, nodes int) int {
	return max(int(math.Ceil(float64(limit)/100)), nodes*leaseOf(burst))
}

// frameAllowance is the most a GCRA bucket of limit a second and burst
// burst admits, from full, over window: the burst and the rate over the
// window.
func frameAllowance(limit, burst int, window time.Duration) int {
	return burst + int(int64(window)*int64(limit)/int64(time.Second))
}

// frameSock is one socket of the frames part: a sender paces ping frames,
// a reader counts the answers.
type frameSock struct {
	key  int
	node int // index in the nodes driven
	c    *websocket.Conn
	done chan struct{}
	sent int // written by the sender, read after it returned
	// skipped counts the frames the sender was too late for.
	skipped int
	first   time.Time // when the first frame was written
	// closedByServer says the socket had ended before the scenario closed it.
	closedByServer bool

	pong, limited, other atomic.Int64
	lastReply            atomic.Int64 // Unix ns of the last answer
	code                 int          // close code; set before done closes
	wrong                string       // the first answer that was neither
}

func (s *frameSock) answers() int64 { return s.pong.Load() + s.limited.Load() + s.other.Load() }

// ended reports whether the socket was closed.
func (s *frameSock) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// read counts the answers until the socket ends.
func (s *frameSock) read() {
	defer close(s.done)
	s.code = websocket.CloseAbnormalClosure
	for {
		_, msg, err := s.c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				s.code = ce.Code
			}
			return
		}
		var f struct {
			Type string `json:"type"`
			Data struct {
				Code string `json:"code"`
				Rule string `json:"rule"`
			} `json:"data"`
		}
		_ = json.Unmarshal(msg, &f)
		switch {
		case f.Type == "pong":
			s.pong.Add(1)
		case f.Type == "error" && f.Data.Code == codeRateLimited && f.Data.Rule == ruleKeyFramesPerSecond:
			s.limited.Add(1)
		default:
			if s.other.Load() == 0 {
				s.wrong = string(msg[:min(len(msg), 200)])
			}
			s.other.Add(1)
		}
		s.lastReply.Store(time.Now().UnixNano())
	}
}

// close ends the socket with a normal close, bounded by timeout, and waits
// for its reader.
func (s *frameSock) close(timeout time.Duration) {
	_ = s.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(timeout))
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		s.c.Close()
		<-s.done
	}
}

// limitFrames floods Keys keys at twice their key_frames_per_second from
// sockets on every node and compares what was admitted with what the rule
// allows.
func (r *runner) limitFrames(ctx context.Context, nodes []string) *FrameLimitResult {
	lc := r.cfg.Limits
	perKey := lc.SocketsPerNode * len(nodes)
	res := &FrameLimitResult{
		Keys: lc.Keys, SocketsPerKey: perKey, Limit: lc.FramesPerSecond, Burst: 2 * lc.FramesPerSecond,
		DurationS: lc.Duration.Seconds(), Bound: frameBound(lc.FramesPerSecond, 2*lc.FramesPerSecond, len(nodes)),
	}
	var errs errSink
	// frames_per_second of each socket is set to the key's whole rate, so
	// that the key's rule alone refuses.
	limits := map[string]any{ruleKeyFramesPerSecond: lc.FramesPerSecond, "frames_per_second": 2 * lc.FramesPerSecond}
	keys := make([]createdKey, lc.Keys)
	r.prog.set("limits: create frame keys", lc.Keys)
	forEach(ctx, lc.Keys, r.cfg.Concurrency, 0, func(ctx context.Context, i int) {
		k, err := r.admin.createLimitedKey(ctx, r.a, r.user("limit-frames", i), keyTTL, limits)
		r.prog.step(err)
		errs.add(err)
		keys[i] = k
	})
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	defer r.dropKeys(ids)

	socks := make([]*frameSock, lc.Keys*perKey)
	r.prog.set("limits: connect frame sockets", len(socks))
	forEach(ctx, len(socks), r.cfg.Concurrency, 0, func(ctx context.Context, i int) {
		k := keys[i/perKey]
		if k.Key == "" {
			r.prog.step(fmt.Errorf("no key"))
			return
		}
		node := (i % perKey) % len(nodes)
		c, err := r.ws.handshake(ctx, int(r.dials.Add(1)), wsURL(nodes[node]), k.Key, r.cfg.OpTimeout)
		r.prog.step(err)
		if err != nil {
			errs.add(err)
			return
		}
		s := &frameSock{key: i / perKey, node: node, c: c, done: make(chan struct{})}
		go s.read()
		socks[i] = s
	})
	closeAll := sync.OnceFunc(func() {
		forEach(context.Background(), len(socks), r.cfg.Concurrency*4, 0, func(_ context.Context, i int) {
			if socks[i] != nil {
				socks[i].close(r.cfg.OpTimeout)
			}
		})
	})
	defer closeAll()
	if errs.get().Count > 0 || ctx.Err() != nil {
		// A key short of sockets would send less than twice its limit.
		res.Errors = errs.get()
		return res
	}

	// Each key sends 2 × limit frames a second, its sockets taking turns:
	// socket j of a key sends every perKey/(2 × limit) seconds, offset by
	// j/(2 × limit).
	every := time.Duration(float64(time.Second) * float64(perKey) / float64(2*lc.FramesPerSecond))
	step := every / time.Duration(perKey)
	n := int(math.Round(2 * float64(lc.FramesPerSecond) * lc.Duration.Seconds() / float64(perKey)))
	r.prog.set("limits: frames at twice key_frames_per_second", n*len(socks))
	t0 := time.Now().Add(20 * time.Millisecond)
	var wg sync.WaitGroup
	for i, s := range socks {
		wg.Go(func() {
			r.sendFrames(ctx, s, t0.Add(time.Duration(i%perKey)*step), every, n, &errs)
		})
	}
	wg.Wait()

	// Every frame is answered; wait for the answers.
	r.prog.set("limits: waiting for the answers", 0)
	deadline := time.Now().Add(r.cfg.OpTimeout)
	for _, s := range socks {
		// A socket the server closed answers no more.
		for s.answers() < int64(s.sent) && !s.ended() && time.Now().Before(deadline) {
			if !r.pause(ctx, 5*time.Millisecond) {
				break
			}
		}
	}
	for _, s := range socks {
		s.closedByServer = s.ended()
	}
	// Once closed, every reader has returned: what they wrote is settled.
	closeAll()

	type keySum struct {
		admitted, answered, sent int
		first, last              time.Time
	}
	sums := make([]keySum, lc.Keys)
	res.Nodes = make([]FrameNodeResult, len(nodes))
	for j, node := range nodes {
		res.Nodes[j].Node = node
	}
	lost := 0 // unanswered frames of sockets still open
	for _, s := range socks {
		k, nr := &sums[s.key], &res.Nodes[s.node]
		pong, limited, other := int(s.pong.Load()), int(s.limited.Load()), int(s.other.Load())
		k.admitted += pong
		k.sent += s.sent
		res.Sent += s.sent
		res.Skipped += s.skipped
		res.Admitted += pong
		res.Refused += limited
		nr.Sockets++
		nr.Sent += s.sent
		nr.Admitted += pong
		nr.Refused += limited
		unanswered := max(0, s.sent-pong-limited-other)
		res.Unanswered += unanswered
		if s.closedByServer {
			if s.code == closeRateLimited {
				res.Closed4429++
				nr.Closed4429++
			} else {
				errs.add(fmt.Errorf("a frame socket closed by the server with code %d", s.code))
			}
		} else {
			lost += unanswered
		}
		if other > 0 {
			errs.add(fmt.Errorf("%d answers neither pong nor rate_limited by %s, first %s", other, ruleKeyFramesPerSecond, s.wrong))
		}
		if s.sent > 0 && (k.first.IsZero() || s.first.Before(k.first)) {
			k.first = s.first
		}
		if last := time.Unix(0, s.lastReply.Load()); last.After(k.last) {
			k.last = last
		}
	}
	res.MaxOver = math.MinInt
	for _, k := range sums {
		window := k.last.Sub(k.first)
		if k.first.IsZero() || window < 0 {
			window = 0
		}
		allowed := frameAllowance(lc.FramesPerSecond, res.Burst, window)
		res.Allowed += allowed
		res.MaxOver = max(res.MaxOver, k.admitted-allowed)
		res.MaxKeyRatio = max(res.MaxKeyRatio, float64(k.admitted)/float64(allowed))
	}
	if res.Allowed > 0 {
		res.Ratio = float64(res.Admitted) / float64(res.Allowed)
	}
	res.WithinBound = res.MaxOver <= res.Bound
	if d := float64(lc.Keys*lc.FramesPerSecond) * lc.Duration.Seconds(); d > 0 {
		res.SendRate = float64(res.Sent) / d
	}
	if lost > 0 {
		errs.add(fmt.Errorf("%d frames unanswered on sockets still open", lost))
	}
	res.Errors = errs.get()
	return res
}

// sendFrames writes up to n ping frames on s, the k-th due at start + k ×
// every. A frame more than one interval late (the client was not
// scheduled in time) is skipped and counted rather than sent in a burst
// with the next: a burst of one socket's frames is refused in a row, and
// more than 32 in a row close the socket.
func (r *runner) sendFrames(ctx context.Context, s *frameSock, start time.Time, every time.Duration, n int, errs *errSink) {
	t := time.NewTimer(time.Until(start))
	defer t.Stop()
	var buf []byte
	for k := range n {
		d := time.Until(start.Add(time.Duration(k) * every))
		if d < -every {
			s.skipped++
			continue
		}
		if d > 0 {
			t.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-s.done:
				return
			case <-t.C:
			}
		}
		buf = append(buf[:0], `{"type":"ping","id":"`...)
		buf = strconv.AppendInt(buf, int64(k), 10)
		buf = append(buf, `"}`...)
		now := time.Now()
		_ = s.c.SetWriteDeadline(now.Add(r.cfg.OpTimeout))
		if s.sent == 0 {
			// Before the write: the server cannot decide the frame earlier.
			s.first = now
		}
		if err := s.c.WriteMessage(websocket.TextMessage, buf); err != nil {
			select {
			case <-s.done:
				// The server closed the socket; counted as unanswered.
			default:
				errs.add(fmt.Errorf("sending a frame: %w", err))
			}
			return
		}
		s.sent++
		r.prog.step(nil)
	}
}

// writeTable prints the scenario's sections of the report's table.
func (l *LimitsResult) writeTable(section func(), p func(format string, a ...any)) {
	section()
	p("limits\tacross %d node(s)", l.Nodes)
	if u := l.Upgrade; u != nil {
		section()
		p("upgrade, one at a time\tcount\tmin\tp50\tp95\tp99\tmax\tmean")
		lat := func(name string, s Summary) {
			p("%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s", name, s.Count, fd(s.Min), fd(s.P50), fd(s.P95), fd(s.P99), fd(s.Max), fd(s.Mean))
		}
		lat("API key, no rate rule", u.Without)
		lat(fmt.Sprintf("API key, connects_per_minute %d", u.ConnectsPerMinute), u.With)
		if u.With.Count > 0 && u.Without.Count > 0 {
			p("added by connects_per_minute\t\t\t%s\t\t%s", fd(durUS(u.AddedP50US)), fd(durUS(u.AddedP99US)))
		}
	}
	if c, f := l.Connects, l.Frames; c != nil || f != nil {
		section()
	}
	if c := l.Connects; c != nil {
		verdict := "exact"
		if !c.Exact {
			verdict = "NOT EXACT"
		}
		p("connects_per_minute %d\t%d admitted of %d attempts in %.2f s (at most %d allowed)\t%s", c.Limit, c.Admitted, c.Attempts, c.WindowS, c.Allowed, verdict)
		p("upgrade 429s\t%d, %d with Retry-After, RateLimit-Policy and RateLimit\terrors %d", c.Refused, c.WithHeaders, c.Errors.Count)
	}
	if f := l.Frames; f != nil {
		verdict := "within"
		if !f.WithinBound {
			verdict = "ABOVE"
		}
		p("key_frames_per_second %d\t%d keys × %d sockets, twice the limit for %.1f s (burst %d)", f.Limit, f.Keys, f.SocketsPerKey, f.DurationS, f.Burst)
		p("frames\t%d sent (%.2f × the limit, %d skipped), %d admitted, %d refused rate_limited, %d unanswered, %d sockets closed 4429",
			f.Sent, f.SendRate, f.Skipped, f.Admitted, f.Refused, f.Unanswered, f.Closed4429)
		for _, n := range f.Nodes {
			p("  on %s\t%d sockets: %d sent, %d admitted, %d refused, %d closed 4429", n.Node, n.Sockets, n.Sent, n.Admitted, n.Refused, n.Closed4429)
		}
		p("admitted / allowed\t%.4f (largest key %.4f) of %d allowed\tover-admission at most %d frames a key, bound %d: %s", f.Ratio, f.MaxKeyRatio, f.Allowed, f.MaxOver, f.Bound, verdict)
	}
}

// addErrors hands the scenario's errors to the report's problem list.
func (l *LimitsResult) addErrors(add func(name string, e Errors)) {
	if u := l.Upgrade; u != nil {
		add("limits upgrade", u.Errors)
	}
	if c := l.Connects; c != nil {
		add("limits connects", c.Errors)
		add("limits 429 headers", c.BadHeaders)
	}
	if f := l.Frames; f != nil {
		add("limits frames", f.Errors)
	}
}

func durUS(v float64) time.Duration { return time.Duration(v * float64(time.Microsecond)) }

// limitFigures are the limits scenario's numbers for AggregateRuns.
func limitFigures() []Figure {
	p50 := func(s Summary) time.Duration { return s.P50 }
	p99 := func(s Summary) time.Duration { return s.P99 }
	up := func(pick func(*UpgradeLimitResult) *Summary) func(*Report) *Summary {
		return func(r *Report) *Summary {
			if r.Limits == nil || r.Limits.Upgrade == nil {
				return nil
			}
			return pick(r.Limits.Upgrade)
		}
	}
	without := up(func(u *UpgradeLimitResult) *Summary { return &u.Without })
	with := up(func(u *UpgradeLimitResult) *Summary { return &u.With })
	added := func(name string, get func(*UpgradeLimitResult) float64) Figure {
		return Figure{Name: name, Unit: "µs", Get: func(r *Report) (float64, bool) {
			if r.Limits == nil || r.Limits.Upgrade == nil || r.Limits.Upgrade.With.Count == 0 || r.Limits.Upgrade.Without.Count == 0 {
				return 0, false
			}
			return get(r.Limits.Upgrade), true
		}}
	}
	conn := func(name, unit string, get func(*ConnectLimitResult) float64) Figure {
		return Figure{Name: name, Unit: unit, Get: func(r *Report) (float64, bool) {
			if r.Limits == nil || r.Limits.Connects == nil {
				return 0, false
			}
			return get(r.Limits.Connects), true
		}}
	}
	frames := func(name, unit string, get func(*FrameLimitResult) float64) Figure {
		return Figure{Name: name, Unit: unit, Get: func(r *Report) (float64, bool) {
			if r.Limits == nil || r.Limits.Frames == nil || r.Limits.Frames.Allowed == 0 {
				return 0, false
			}
			return get(r.Limits.Frames), true
		}}
	}
	return []Figure{
		latencyFig("limits: upgrade p50, no rate rule", without, p50),
		latencyFig("limits: upgrade p99, no rate rule", without, p99),
		latencyFig("limits: upgrade p50, connects_per_minute", with, p50),
		latencyFig("limits: upgrade p99, connects_per_minute", with, p99),
		added("limits: added upgrade latency p50", func(u *UpgradeLimitResult) float64 { return u.AddedP50US }),
		added("limits: added upgrade latency p99", func(u *UpgradeLimitResult) float64 { return u.AddedP99US }),
		conn("limits: connects admitted", "connects", func(c *ConnectLimitResult) float64 { return float64(c.Admitted) }),
		conn("limits: connects limit", "connects", func(c *ConnectLimitResult) float64 { return float64(c.Limit) }),
		conn("limits: upgrade 429s", "responses", func(c *ConnectLimitResult) float64 { return float64(c.Refused) }),
		conn("limits: upgrade 429s with RateLimit headers", "responses", func(c *ConnectLimitResult) float64 { return float64(c.WithHeaders) }),
		frames("limits: frames admitted / allowed", "ratio", func(f *FrameLimitResult) float64 { return f.Ratio }),
		frames("limits: frames admitted / allowed, largest key", "ratio", func(f *FrameLimitResult) float64 { return f.MaxKeyRatio }),
		frames("limits: frames over-admitted, largest key", "frames", func(f *FrameLimitResult) float64 { return float64(f.MaxOver) }),
		frames("limits: frame over-admission bound", "frames", func(f *FrameLimitResult) float64 { return float64(f.Bound) }),
		frames("limits: frames sent / limit", "ratio", func(f *FrameLimitResult) float64 { return f.SendRate }),
		frames("limits: frame sockets closed 4429", "sockets", func(f *FrameLimitResult) float64 { return float64(f.Closed4429) }),
	}
}
