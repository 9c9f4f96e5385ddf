package sessionbridge_test

import (
	"errors"
	"slices"
	"testing"

	sb "github.com/sessionbridge/sessionbridge"
)

func TestLimitsValidate(t *testing.T) {
	good := []sb.Limits{
		{},
		{ConnectsPerMinute: 60, MaxConnections: 5, FramesPerSecond: 10, BytesPerSecond: 1 << 16, KeyFramesPerSecond: 100, UserFramesPerSecond: 100},
		{DryRun: []string{sb.RuleMaxConnections, sb.RuleUserFramesPerSecond}},
	}
	for _, l := range good {
		if err := l.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", l, err)
		}
	}
	bad := []sb.Limits{
		{ConnectsPerMinute: -1},
		{BytesPerSecond: -5},
		{UserFramesPerSecond: -1},
		{DryRun: []string{"frames_per_minute"}},
		{DryRun: []string{""}},
		{DryRun: []string{sb.RuleMaxConnections, sb.RuleMaxConnections}},
	}
	for _, l := range bad {
		if err := l.Validate(); !errors.Is(err, sb.ErrInvalidLimits) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalidLimits", l, err)
		}
	}
}

func TestLimitsOver(t *testing.T) {
	defaults := sb.Limits{ConnectsPerMinute: 60, MaxConnections: 10, FramesPerSecond: 20, DryRun: []string{sb.RuleFramesPerSecond}}
	got := sb.Limits{MaxConnections: 3, BytesPerSecond: 100}.Over(defaults)
	want := sb.Limits{ConnectsPerMinute: 60, MaxConnections: 3, FramesPerSecond: 20, BytesPerSecond: 100, DryRun: []string{sb.RuleFramesPerSecond}}
	if got.ConnectsPerMinute != want.ConnectsPerMinute || got.MaxConnections != want.MaxConnections ||
		got.FramesPerSecond != want.FramesPerSecond || got.BytesPerSecond != want.BytesPerSecond ||
		!slices.Equal(got.DryRun, want.DryRun) {
		t.Fatalf("Over = %+v, want %+v", got, want)
	}
	own := sb.Limits{DryRun: []string{sb.RuleMaxConnections}}.Over(defaults)
	if !slices.Equal(own.DryRun, []string{sb.RuleMaxConnections}) {
		t.Fatalf("a key's own dry_run list was replaced: %v", own.DryRun)
	}
}
