// Command sessionbridge-bench drives a running sessionbridge node or cluster
// over real HTTP and WebSocket connections and reports connect throughput,
// memory per idle socket, cross-node revocation and update latency, user-wide
// logout fan-out, stability under churn, and rate limits held across nodes.
//
// It refuses targets that are not loopback addresses unless --allow-remote is
// given. See docs/benchmarks.md for how the published figures were measured.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sessionbridge/sessionbridge/loadtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sessionbridge-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "summarize" {
		return summarize(args[1:], stdout)
	}
	fs := flag.NewFlagSet("sessionbridge-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		nodes       = fs.String("nodes", "http://127.0.0.1:8080", "comma-separated node base URLs; the first (A) takes admin calls, the rest (B) hold the sockets; one node is both")
		adminToken  = fs.String("admin-token", os.Getenv("SESSIONBRIDGE_ADMIN_TOKEN"), "admin bearer token (default $SESSIONBRIDGE_ADMIN_TOKEN)")
		sockets     = fs.Int("sockets", loadtest.DefaultSockets, "idle sockets per B node")
		sources     = fs.String("sources", "", "comma-separated local source addresses to spread sockets over (default 127.0.0.1..127.0.0.N for IPv4 loopback targets, ~20k sockets each)")
		samples     = fs.Int("samples", loadtest.DefaultSamples, "revocations and updates to time")
		revokeGap   = fs.Duration("revoke-gap", 0, "pause between one timed revocation's close and the next revocation (revoke and keyrevoke; 0: back to back)")
		fanout      = fs.Int("fanout-sockets", loadtest.DefaultFanoutSockets, "sockets of the one user in the fan-out scenario, spread over all nodes")
		fanoutSess  = fs.Int("fanout-sessions", loadtest.DefaultFanoutSessions, "sessions of that user")
		duration    = fs.Duration("duration", loadtest.DefaultChurnDuration, fmt.Sprintf("churn duration (at most %s)", loadtest.MaxChurnDuration))
		churnRate   = fs.Int("churn-rate", loadtest.DefaultChurnRate, "churn connects per second")
		churnHold   = fs.Duration("churn-hold", loadtest.DefaultChurnHold, "how long each churn socket stays open")
		redisURL    = fs.String("redis-url", "", "the Redis the nodes share, for the usage scenario's INFO commandstats (loopback only unless --allow-remote)")
		usageSocks  = fs.Int("usage-sockets", loadtest.DefaultUsageSockets, "sockets of the usage scenario, spread over all nodes, each sending a ping per --usage-frame-interval")
		usageUsers  = fs.Int("usage-users", loadtest.DefaultUsageSubjects, "users the usage scenario's sockets belong to")
		usageFor    = fs.Duration("usage-duration", loadtest.DefaultUsageDuration, "length of the usage scenario's silent and active windows")
		usageEvery  = fs.Duration("usage-frame-interval", loadtest.DefaultUsageFrameInterval, "how often each socket of the usage scenario sends a frame")
		connectRate = fs.Int("connect-rate", 0, "limit on new sockets per second while connecting (0: no limit)")
		limKeys     = fs.Int("limit-keys", loadtest.DefaultLimitKeys, "limits: API keys sending frames at twice their key_frames_per_second")
		limSockets  = fs.Int("limit-sockets", loadtest.DefaultLimitSocketsPerNode, "limits: sockets of each of those keys on every node")
		limFrames   = fs.Int("limit-frames", loadtest.DefaultLimitFrames, "limits: their key_frames_per_second")
		limDuration = fs.Duration("limit-duration", loadtest.DefaultLimitDuration, fmt.Sprintf("limits: how long they send (at most %s)", loadtest.MaxLimitDuration))
		limConnects = fs.Int("limit-connects", loadtest.DefaultLimitConnects, "limits: connects_per_minute of the key making twice as many attempts")
		limSamples  = fs.Int("limit-samples", loadtest.DefaultLimitSamples, "limits: upgrades timed with connects_per_minute, and as many without")
		redisNodes  = fs.String("redis-nodes", "", "scaling: comma-separated host:port of every Redis server the nodes use, masters and replicas (loopback only unless --allow-remote)")
		scSockets   = fs.Int("scaling-sockets", loadtest.DefaultScalingSockets, "scaling: sockets spread over every node, one session and user each")
		scUpdates   = fs.Int("scaling-updates", loadtest.DefaultScalingUpdates, "scaling: session updates (admin PATCH)")
		scMessages  = fs.Int("scaling-messages", loadtest.DefaultScalingMessages, "scaling: messages to users (admin publish)")
		scTouches   = fs.Int("scaling-touches", loadtest.DefaultScalingTouches, "scaling: session touches (a frame once the touch interval has passed)")
		scRevokes   = fs.Int("scaling-revokes", loadtest.DefaultScalingRevokes, "scaling: revocations, timed one at a time")
		scTouchInt  = fs.Duration("scaling-touch-interval", 0, "scaling: the nodes' --touch-interval (default the nodes' default, 1m)")
		scSettle    = fs.Duration("scaling-settle-timeout", loadtest.DefaultScalingSettle, "scaling: bound on waiting for subscriptions to follow connects and disconnects")
		scIdle      = fs.Duration("scaling-idle", loadtest.DefaultScalingIdle, "scaling: idle window (sockets open, no events) that measures the background")
		scCalib     = fs.Int("scaling-calibration", loadtest.DefaultScalingCalibration, "scaling: sharded channels the tool subscribes itself on each master to measure one subscription (negative: none)")
		concurrency = fs.Int("concurrency", loadtest.DefaultConcurrency, "parallel admin calls and dials")
		scenarios   = fs.String("scenarios", strings.Join(loadtest.AllScenarios, ","), "scenarios to run (besides these: usage, which needs --redis-url, and scaling, which needs --redis-nodes)")
		jsonFile    = fs.String("json", "", "also write the report as JSON to this file")
		allowRemote = fs.Bool("allow-remote", false, "allow targets that are not loopback addresses")
		timeout     = fs.Duration("timeout", loadtest.DefaultTimeout, "bound on the whole run")
		opTimeout   = fs.Duration("op-timeout", loadtest.DefaultOpTimeout, "bound on each request, dial and wait for an event")
		sampleEvery = fs.Duration("sample-interval", loadtest.DefaultSampleInterval, "how often churn reads /metrics")
		settle      = fs.Duration("settle-timeout", loadtest.DefaultSettleTimeout, "bound on waiting for a node's garbage collection before reading memory")
		quiet       = fs.Bool("quiet", false, "no progress lines on stderr")
	)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sessionbridge-bench [flags]\n       sessionbridge-bench summarize REPORT.json...\n\nDrives running sessionbridge nodes over HTTP and WebSocket and measures them;\nsummarize prints the median, minimum and maximum of each figure over saved reports.\nScenarios: %s; and, when asked for, usage (needs --redis-url)\nand scaling (needs --redis-nodes).\n\nFlags:\n", strings.Join(loadtest.AllScenarios, ", "))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *duration > loadtest.MaxChurnDuration {
		return fmt.Errorf("--duration %s is above the bound of %s", *duration, loadtest.MaxChurnDuration)
	}
	if *limDuration > loadtest.MaxLimitDuration {
		return fmt.Errorf("--limit-duration %s is above the bound of %s", *limDuration, loadtest.MaxLimitDuration)
	}
	sc, err := loadtest.ParseScenarios(*scenarios)
	if err != nil {
		return err
	}
	srcAddrs, err := loadtest.ParseSources(*sources)
	if err != nil {
		return err
	}
	nodeList := splitList(*nodes)

	limit, err := loadtest.RaiseFileLimit()
	if err != nil {
		fmt.Fprintln(stderr, "warning:", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := loadtest.Config{
		Nodes: nodeList, AdminToken: *adminToken, Sockets: *sockets, Sources: srcAddrs,
		Samples: *samples, RevokeGap: *revokeGap, FanoutSockets: *fanout, FanoutSessions: *fanoutSess,
		ChurnDuration: *duration, ChurnRate: *churnRate, ChurnHold: *churnHold,
		ConnectRate: *connectRate, Concurrency: *concurrency, Scenarios: sc,
		Limits: loadtest.LimitsConfig{
			Keys: *limKeys, SocketsPerNode: *limSockets, FramesPerSecond: *limFrames,
			Duration: *limDuration, Connects: *limConnects, Samples: *limSamples,
		},
		AllowRemote: *allowRemote, Timeout: *timeout, OpTimeout: *opTimeout,
		SampleInterval: *sampleEvery, SettleTimeout: *settle, Logger: logger,
		RedisURL: *redisURL, UsageSockets: *usageSocks, UsageSubjects: *usageUsers,
		UsageDuration: *usageFor, UsageFrameInterval: *usageEvery,
		RedisNodes: splitList(*redisNodes),
		Scaling: loadtest.ScalingConfig{
			Sockets: *scSockets, Updates: *scUpdates, Messages: *scMessages, Touches: *scTouches, Revokes: *scRevokes,
			TouchInterval: *scTouchInt, SettleTimeout: *scSettle, IdleWindow: *scIdle, CalibrationChannels: *scCalib,
		},
	}
	if !*quiet {
		cfg.Progress = stderr
		fmt.Fprintf(stderr, "open files limit: %d (hard %d)\n", limit.Soft, limit.Hard)
	}
	start := time.Now()
	rep, err := loadtest.Run(ctx, cfg)
	if err != nil {
		return err
	}
	rep.FileLimit = limit
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	if *jsonFile != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonFile, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("writing report: %w", err)
		}
	}
	if !*quiet {
		fmt.Fprintf(stderr, "done in %s\n", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// summarize prints the median and spread of each figure over the reports in
// files.
func summarize(files []string, stdout io.Writer) error {
	if len(files) == 0 {
		return fmt.Errorf("summarize: no report files given")
	}
	var reps []*loadtest.Report
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("summarize: %w", err)
		}
		rep, err := loadtest.ReadReport(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("summarize: %s: %w", name, err)
		}
		reps = append(reps, rep)
	}
	return loadtest.WriteAggregates(stdout, loadtest.AggregateRuns(reps))
}
