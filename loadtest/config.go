package loadtest

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Scenario names, in the order a run executes them.
const (
	ScenarioConnect = "connect"
	ScenarioMemory  = "memory"
	ScenarioUpdate  = "update"
	ScenarioRevoke  = "revoke"
	// ScenarioKeyRevoke opens its own idle sockets, one API key each, and
	// times the revocation of keys as ScenarioRevoke times that of
	// sessions.
	ScenarioKeyRevoke = "keyrevoke"
	ScenarioFanout    = "fanout"
	ScenarioChurn     = "churn"
	// ScenarioLimits drives API keys at and above their rate limits across
	// every node (LimitsConfig).
	ScenarioLimits = "limits"
)

// AllScenarios lists every scenario in execution order.
var AllScenarios = []string{ScenarioConnect, ScenarioMemory, ScenarioUpdate, ScenarioRevoke, ScenarioKeyRevoke, ScenarioFanout, ScenarioChurn, ScenarioLimits}

// optInScenarios run only when asked for by name: they need to read Redis.
var optInScenarios = []string{ScenarioUsage, ScenarioScaling}

// Defaults and bounds of a Config.
const (
	DefaultSockets          = 1000
	DefaultSamples          = 1000
	DefaultFanoutSockets    = 1000
	DefaultFanoutSessions   = 10
	DefaultChurnDuration    = 60 * time.Second
	MaxChurnDuration        = 10 * time.Minute
	DefaultChurnRate        = 500
	DefaultChurnHold        = time.Second
	DefaultConcurrency      = 64
	DefaultTimeout          = 15 * time.Minute
	DefaultOpTimeout        = 10 * time.Second
	DefaultSampleInterval   = 5 * time.Second
	DefaultProgressInterval = 3 * time.Second
	DefaultSettleTimeout    = 15 * time.Second
	defaultPerSource        = 20000
	// MaxSockets bounds --sockets per node; the client holds every socket too.
	MaxSockets = 1_000_000
)

// Config says what a run does. Nodes and AdminToken are required; every other
// zero field takes its default.
type Config struct {
	// Nodes are base URLs (http://host:port). The first is node A, where admin
	// calls go; the rest are the B nodes that hold the sockets. With one node,
	// it is both A and B.
	Nodes      []string
	AdminToken string
	// Sockets is the number of idle sockets opened on each B node.
	Sockets int
	// Sources are local addresses to spread client sockets over; nil means
	// DefaultSources.
	Sources []netip.Addr
	// Samples is how many revocations and updates are timed (each, at most
	// Sockets times the number of B nodes).
	Samples int
	// RevokeGap is the pause between the end of one timed revocation (the
	// close seen by the client) and the start of the next, in the revoke
	// and keyrevoke scenarios; zero means back to back.
	RevokeGap time.Duration
	// FanoutSockets and FanoutSessions shape the fan-out scenario: one user
	// with FanoutSessions sessions, whose FanoutSockets sockets are spread
	// over every node.
	FanoutSockets  int
	FanoutSessions int
	// ChurnDuration (capped at MaxChurnDuration), ChurnRate (connects per
	// second) and ChurnHold (how long each churn socket stays open) shape the
	// churn scenario.
	ChurnDuration time.Duration
	ChurnRate     int
	ChurnHold     time.Duration
	// ConnectRate limits new sockets per second in the connect scenario; 0
	// means as fast as Concurrency allows.
	ConnectRate int
	// Limits shapes the limits scenario.
	Limits LimitsConfig
	// Concurrency bounds parallel admin calls and dials.
	Concurrency int
	// Scenarios to run; nil means all.
	Scenarios []string
	// AllowRemote permits targets that are not loopback addresses.
	AllowRemote bool
	// Resolver resolves node hosts for the loopback check; nil means the
	// system resolver.
	Resolver Resolver
	// Timeout bounds the whole run; OpTimeout bounds each request, dial and
	// wait for an event.
	Timeout   time.Duration
	OpTimeout time.Duration
	// SampleInterval is how often churn reads /metrics; SettleTimeout bounds
	// the wait for a node's heap to stop moving before memory is read.
	SampleInterval time.Duration
	SettleTimeout  time.Duration
	// Progress receives a progress line every ProgressInterval; nil means
	// no progress output.
	Progress         io.Writer
	ProgressInterval time.Duration
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// RedisURL is the Redis the nodes share, read (INFO commandstats) by the
	// usage scenario; loopback only unless AllowRemote.
	RedisURL string
	// UsageSockets, UsageSubjects, UsageDuration and UsageFrameInterval
	// shape the usage scenario: sockets of that many users spread over every
	// node, a silent window and an active one of UsageDuration each, a ping
	// per socket per UsageFrameInterval.
	UsageSockets       int
	UsageSubjects      int
	UsageDuration      time.Duration
	UsageFrameInterval time.Duration
	// RedisNodes are the addresses (host:port) of every Redis server the
	// nodes use, masters and replicas, read (INFO, CLUSTER INFO) by the
	// scaling scenario; loopback only unless AllowRemote.
	RedisNodes []string
	// Scaling shapes the scaling scenario.
	Scaling ScalingConfig
}

// ParseScenarios parses a comma-separated scenario list; "" or "all" means
// every scenario.
func ParseScenarios(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "all" {
		return slices.Clone(AllScenarios), nil
	}
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(AllScenarios, f) && !slices.Contains(optInScenarios, f) {
			return nil, fmt.Errorf("loadtest: unknown scenario %q (want %s)", f, strings.Join(AllScenarios, ","))
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("loadtest: no scenario given")
	}
	return out, nil
}

// withDefaults returns c with defaults filled in, or an error for values that
// make no sense.
func (c Config) withDefaults() (Config, error) {
	if len(c.Nodes) == 0 {
		return c, fmt.Errorf("loadtest: no nodes given")
	}
	if c.AdminToken == "" {
		return c, fmt.Errorf("loadtest: no admin token given")
	}
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defD := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.Sockets, DefaultSockets)
	def(&c.Samples, DefaultSamples)
	def(&c.FanoutSockets, DefaultFanoutSockets)
	def(&c.FanoutSessions, DefaultFanoutSessions)
	def(&c.ChurnRate, DefaultChurnRate)
	def(&c.Concurrency, DefaultConcurrency)
	def(&c.UsageSockets, DefaultUsageSockets)
	def(&c.UsageSubjects, DefaultUsageSubjects)
	defD(&c.UsageDuration, DefaultUsageDuration)
	defD(&c.UsageFrameInterval, DefaultUsageFrameInterval)
	defD(&c.ChurnDuration, DefaultChurnDuration)
	defD(&c.ChurnHold, DefaultChurnHold)
	defD(&c.Timeout, DefaultTimeout)
	defD(&c.OpTimeout, DefaultOpTimeout)
	defD(&c.SampleInterval, DefaultSampleInterval)
	defD(&c.SettleTimeout, DefaultSettleTimeout)
	defD(&c.ProgressInterval, DefaultProgressInterval)
	switch {
	case c.Sockets < 0 || c.Sockets > MaxSockets:
		return c, fmt.Errorf("loadtest: sockets must be between 1 and %d", MaxSockets)
	case c.Samples < 0 || c.FanoutSockets < 0 || c.FanoutSessions < 0 || c.ChurnRate < 0 ||
		c.Concurrency < 0 || c.ConnectRate < 0 || c.UsageSockets < 0 || c.UsageSubjects < 0:
		return c, fmt.Errorf("loadtest: counts and rates must not be negative")
	case c.ChurnDuration < 0 || c.ChurnHold < 0 || c.Timeout < 0 || c.OpTimeout < 0 || c.RevokeGap < 0 ||
		c.SampleInterval < 0 || c.SettleTimeout < 0 || c.ProgressInterval < 0 ||
		c.UsageDuration < 0 || c.UsageFrameInterval < 0:
		return c, fmt.Errorf("loadtest: durations must not be negative")
	}
	c.ChurnDuration = min(c.ChurnDuration, MaxChurnDuration)
	var err error
	if c.Limits, err = c.Limits.withDefaults(); err != nil {
		return c, err
	}
	if c.Scaling, err = c.Scaling.withDefaults(); err != nil {
		return c, err
	}
	c.FanoutSessions = min(c.FanoutSessions, c.FanoutSockets)
	c.UsageSubjects = min(c.UsageSubjects, c.UsageSockets)
	if c.Scenarios == nil {
		c.Scenarios = slices.Clone(AllScenarios)
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(AllScenarios, s) && !slices.Contains(optInScenarios, s) {
			return c, fmt.Errorf("loadtest: unknown scenario %q", s)
		}
	}
	return c, nil
}

func (c Config) has(s string) bool { return slices.Contains(c.Scenarios, s) }
