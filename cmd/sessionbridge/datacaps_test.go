package main

import (
	"io"
	"strings"
	"testing"
)

func TestDataCapFlags(t *testing.T) {
	t.Setenv("SESSIONBRIDGE_MAX_SESSION_DATA", "1000")
	t.Setenv("SESSIONBRIDGE_MAX_DATA_DEPTH", "8")
	fs, f := newServeFlags(io.Discard)
	if _, err := parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	if f.cfg.MaxSessionData != 1000 || f.cfg.MaxDataDepth != 8 {
		t.Fatalf("caps from the environment: %d, %d", f.cfg.MaxSessionData, f.cfg.MaxDataDepth)
	}
	for _, args := range [][]string{
		{"--max-session-data", "-1"},
		{"--max-data-depth", "-1"},
		{"--max-data-depth", "129"},
	} {
		code, _, errOut := cli(t, "", append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
		if code != exitUsage || !strings.Contains(errOut, args[0]) {
			t.Errorf("serve %v: exit %d, %q; want a usage error naming the flag", args, code, errOut)
		}
	}
}
