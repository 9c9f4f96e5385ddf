package loadtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// ScenarioUsage keeps sockets sending frames and measures the Redis
// commands the nodes send meanwhile, from INFO commandstats. It needs
// Config.RedisURL and is run only when asked for.
const ScenarioUsage = "usage"

// Defaults of the usage scenario.
const (
	DefaultUsageSockets       = 2000
	DefaultUsageSubjects      = 100
	DefaultUsageDuration      = 20 * time.Second
	DefaultUsageFrameInterval = time.Second
)

// UsageResult is what the usage scenario measured. A baseline window with
// the sockets open and silent comes first, then an active one with every
// socket sending a ping each FrameInterval; the Redis commands of each
// window are INFO commandstats deltas (commands that scripts call count
// too, as Redis counts them).
type UsageResult struct {
	Sockets   int `json:"sockets"`
	Connected int `json:"connected"`
	// Subjects is the number of users the sockets belong to.
	Subjects        int     `json:"subjects"`
	Nodes           int     `json:"nodes"`
	FrameIntervalMS int64   `json:"frame_interval_ms"`
	WindowSeconds   float64 `json:"window_seconds"`
	FramesSent      int64   `json:"frames_sent"`
	// IdleCalls and ActiveCalls are the calls per command in each window.
	IdleCalls   map[string]int64 `json:"idle_calls"`
	ActiveCalls map[string]int64 `json:"active_calls"`
	// IdlePerNode and ActivePerNode are all commands per second per node in
	// each window; ScriptsPerNode the EVALSHA (and EVAL) calls per second per
	// node while active: the round trips' scripts, one per subject per flush.
	IdlePerNode    float64 `json:"idle_commands_per_second_per_node"`
	ActivePerNode  float64 `json:"active_commands_per_second_per_node"`
	ScriptsPerNode float64 `json:"active_scripts_per_second_per_node"`
	Errors         Errors  `json:"errors"`
}

// redisInfo reads INFO commandstats from the Redis at rawURL (loopback
// only unless allowRemote) and returns the calls per command.
func redisInfo(ctx context.Context, rawURL string, allowRemote bool, timeout time.Duration) (map[string]int64, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "redis") || u.Host == "" {
		return nil, fmt.Errorf("loadtest: redis URL must be redis://host:port")
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "6379")
	}
	pw, _ := u.User.Password()
	rc, err := dialRedis(ctx, host, pw, allowRemote, timeout)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	info, err := rc.doString("INFO", "commandstats")
	if err != nil {
		return nil, fmt.Errorf("loadtest: redis: INFO: %w", err)
	}
	out := map[string]int64{}
	for name, cs := range commandStats(infoFields(info)) {
		out[name] = cs.Calls
	}
	return out, nil
}

func deltaCalls(before, after map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

func sumCalls(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// usage runs the usage scenario: UsageSockets sockets of UsageSubjects users
// spread over every node, a silent window, then a window of pings.
func (r *runner) usage(ctx context.Context) *UsageResult {
	cfg := r.cfg
	res := &UsageResult{Sockets: cfg.UsageSockets, Subjects: cfg.UsageSubjects, Nodes: len(r.all),
		FrameIntervalMS: cfg.UsageFrameInterval.Milliseconds(), WindowSeconds: cfg.UsageDuration.Seconds()}
	var errs errSink
	if cfg.RedisURL == "" {
		errs.add(fmt.Errorf("no Redis URL given: the usage scenario reads INFO commandstats"))
		res.Errors = errs.get()
		return res
	}
	tokens := make([]string, cfg.UsageSubjects)
	r.prog.set("usage: create sessions", len(tokens))
	forEach(ctx, len(tokens), cfg.Concurrency, 0, func(ctx context.Context, i int) {
		cs, err := r.admin.createSession(ctx, r.a, r.user("usage", i), nil, sessionTTL)
		r.prog.step(err)
		if err != nil {
			errs.add(err)
			return
		}
		tokens[i] = cs.Token
	})
	conns := make([]*wsConn, cfg.UsageSockets)
	defer func() {
		forEach(context.Background(), len(conns), cfg.Concurrency*4, 0, func(_ context.Context, i int) {
			if conns[i] != nil {
				conns[i].Close(cfg.OpTimeout)
			}
		})
		for i := range tokens {
			cctx, cancel := context.WithTimeout(context.Background(), cfg.OpTimeout)
			_ = r.admin.deleteUserSessions(cctx, r.a, r.user("usage", i))
			cancel()
		}
	}()
	r.prog.set("usage: connect", len(conns))
	forEach(ctx, len(conns), cfg.Concurrency, cfg.ConnectRate, func(ctx context.Context, j int) {
		tok := tokens[j%len(tokens)]
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
	var live []*wsConn
	for _, c := range conns {
		if c != nil {
			live = append(live, c)
		}
	}
	res.Connected = len(live)
	if len(live) == 0 || ctx.Err() != nil {
		res.Errors = errs.get()
		return res
	}
	window := func(send bool) (map[string]int64, bool) {
		before, err := redisInfo(ctx, cfg.RedisURL, cfg.AllowRemote, cfg.OpTimeout)
		if err != nil {
			errs.add(err)
			return nil, false
		}
		wctx, cancel := context.WithTimeout(ctx, cfg.UsageDuration)
		defer cancel()
		if send {
			var sent atomic.Int64
			var wg sync.WaitGroup
			// Each socket pings once per interval, the sockets spread
			// evenly over it.
			for i, c := range live {
				wg.Go(func() {
					offset := cfg.UsageFrameInterval * time.Duration(i) / time.Duration(len(live))
					t := time.NewTimer(offset)
					defer t.Stop()
					for {
						select {
						case <-wctx.Done():
							return
						case <-t.C:
						}
						if err := c.ping(cfg.OpTimeout); err != nil {
							errs.add(err)
							return
						}
						sent.Add(1)
						t.Reset(cfg.UsageFrameInterval)
					}
				})
			}
			wg.Wait()
			res.FramesSent = sent.Load()
		} else {
			<-wctx.Done()
		}
		if ctx.Err() != nil {
			return nil, false
		}
		after, err := redisInfo(ctx, cfg.RedisURL, cfg.AllowRemote, cfg.OpTimeout)
		if err != nil {
			errs.add(err)
			return nil, false
		}
		return deltaCalls(before, after), true
	}
	r.prog.set("usage: silent window", 0)
	idle, ok := window(false)
	if !ok {
		res.Errors = errs.get()
		return res
	}
	r.prog.set("usage: active window", 0)
	active, ok := window(true)
	if !ok {
		res.Errors = errs.get()
		return res
	}
	secs, nodes := cfg.UsageDuration.Seconds(), float64(len(r.all))
	res.IdleCalls, res.ActiveCalls = idle, active
	res.IdlePerNode = float64(sumCalls(idle)) / secs / nodes
	res.ActivePerNode = float64(sumCalls(active)) / secs / nodes
	res.ScriptsPerNode = float64(active["evalsha"]+active["eval"]) / secs / nodes
	res.Errors = errs.get()
	return res
}

// ping writes a ping frame; the socket's reader drops the pong. One
// goroutine per socket calls it.
func (w *wsConn) ping(timeout time.Duration) error {
	return w.write(timeout, `{"type":"ping"}`)
}

// write sends one text frame. One goroutine at a time may call it (or
// ping) for a socket.
func (w *wsConn) write(timeout time.Duration, frame string) error {
	_ = w.c.SetWriteDeadline(time.Now().Add(timeout))
	return w.c.WriteMessage(websocket.TextMessage, []byte(frame))
}

// topCalls formats the commands with the most calls, for the text report.
func topCalls(m map[string]int64, n int) string {
	type kv struct {
		k string
		v int64
	}
	var l []kv
	for k, v := range m {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v || (l[i].v == l[j].v && l[i].k < l[j].k) })
	var parts []string
	for i, x := range l {
		if i == n {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %d", x.k, x.v))
	}
	return strings.Join(parts, ", ")
}
