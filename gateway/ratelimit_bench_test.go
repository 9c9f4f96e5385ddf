package gateway

import (
	"context"
	"testing"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/limit"
)

// frameLimitConn is a connection with the frame rules of l, outside any
// socket: what the read loop runs per frame.
func frameLimitConn(tb testing.TB, l sb.Limits, leased bool) *Conn {
	g := &Gateway{clock: realClock{}}
	lim := connLimits{
		framePace: limit.NewPace(l.FramesPerSecond, time.Second, 2*l.FramesPerSecond),
		bytePace:  limit.NewPace(l.BytesPerSecond, time.Second, 2*l.BytesPerSecond),
	}
	if leased {
		ls := &limit.Leaser{Shared: &limit.Memory{}}
		var err error
		if lim.key, err = ls.Bucket(limit.Charge{Rule: sb.RuleKeyFramesPerSecond, Subject: "key:k", Rate: frameRate(l.KeyFramesPerSecond)}); err != nil {
			tb.Fatal(err)
		}
		if lim.user, err = ls.Bucket(limit.Charge{Rule: sb.RuleUserFramesPerSecond, Subject: "user:u", Rate: frameRate(l.UserFramesPerSecond)}); err != nil {
			tb.Fatal(err)
		}
	}
	return &Conn{g: g, lim: lim}
}

// Rates high enough that nothing refuses while the benchmark runs.
var benchLimits = sb.Limits{FramesPerSecond: 1e9, BytesPerSecond: 1e9, KeyFramesPerSecond: 1e8, UserFramesPerSecond: 1e8}

// A frame decision allocates nothing, leased rules included (a lease is
// taken once per hundredth of the rate, not per frame).
func TestFrameDecisionAllocatesNothing(t *testing.T) {
	for _, leased := range []bool{false, true} {
		c := frameLimitConn(t, benchLimits, leased)
		ctx := context.Background()
		c.limitFrame(ctx, 100)
		if n := testing.AllocsPerRun(1000, func() {
			if rule, _ := c.limitFrame(ctx, 100); rule != "" {
				t.Fatalf("refused by %s", rule)
			}
		}); n != 0 {
			t.Fatalf("leased=%v: %v allocations per frame", leased, n)
		}
	}
}

func BenchmarkFrameDecisionLocal(b *testing.B) { benchFrameDecision(b, false) }

func BenchmarkFrameDecisionLeased(b *testing.B) { benchFrameDecision(b, true) }

func benchFrameDecision(b *testing.B, leased bool) {
	c := frameLimitConn(b, benchLimits, leased)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c.limitFrame(ctx, 100)
	}
}
