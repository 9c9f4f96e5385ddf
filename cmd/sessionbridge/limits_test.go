package main

import (
	"io"
	"slices"
	"strings"
	"testing"
)

func TestLimitFlags(t *testing.T) {
	fs, f := newServeFlags(io.Discard)
	if _, err := parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	// The documented defaults.
	if l := f.cfg.Limits; l.FramesPerSecond != 100 || l.BytesPerSecond != 1<<20 || l.ConnectsPerMinute != 0 || l.MaxConnections != 0 ||
		f.cfg.LoginPerMinute != 60 || f.cfg.AdminPerMinute != 0 {
		t.Fatalf("defaults %+v, login %d, admin %d", l, f.cfg.LoginPerMinute, f.cfg.AdminPerMinute)
	}
	t.Setenv("SESSIONBRIDGE_LIMIT_CONNECTS_PER_MINUTE", "30")
	t.Setenv("SESSIONBRIDGE_LIMIT_MAX_CONNECTIONS", "5")
	t.Setenv("SESSIONBRIDGE_LIMIT_USER_FRAMES_PER_SECOND", "50")
	t.Setenv("SESSIONBRIDGE_LIMIT_DRY_RUN", "max_connections, connects_per_minute")
	fs, f = newServeFlags(io.Discard)
	if _, err := parse(fs, []string{"--limit-key-frames-per-second", "70"}); err != nil {
		t.Fatal(err)
	}
	if l := f.cfg.Limits; l.ConnectsPerMinute != 30 || l.MaxConnections != 5 || l.UserFramesPerSecond != 50 || l.KeyFramesPerSecond != 70 {
		t.Fatalf("limits from flags and environment: %+v", l)
	}
	if got := splitList(f.limitDryRun); !slices.Equal(got, []string{"max_connections", "connects_per_minute"}) {
		t.Fatalf("dry run %v", got)
	}
}

func TestInvalidLimitsRefuseToStart(t *testing.T) {
	for _, args := range [][]string{
		{"--limit-frames-per-second", "-1"},
		{"--limit-max-connections", "-3"},
		{"--limit-dry-run", "frames_per_minute"},
		{"--limit-dry-run", "max_connections,max_connections"},
		{"--limit-login-per-minute", "-1"},
	} {
		code, _, errOut := cli(t, "", append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
		if code != exitUsage || !strings.Contains(errOut, "limit") {
			t.Errorf("serve %v: exit %d, %q; want a usage error about the limits", args, code, errOut)
		}
	}
}
