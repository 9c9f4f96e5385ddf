package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestRunRefusesBadInvocations(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--nodes", "http://10.0.0.1:8080", "--admin-token", "t"}, "not a loopback address"},
		{[]string{"--duration", "11m", "--admin-token", "t"}, "above the bound"},
		{[]string{"--scenarios", "connect,nope", "--admin-token", "t"}, "unknown scenario"},
		{[]string{"--sources", "127.0.0.300", "--admin-token", "t"}, "source address"},
		{[]string{"--nodes", "127.0.0.1:8080", "--admin-token", "t"}, `node "127.0.0.1:8080"`},
		{[]string{"--admin-token", "t", "extra"}, "unexpected arguments"},
		{[]string{"--nodes", "http://127.0.0.1:1", "--admin-token", ""}, "no admin token"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tc.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
		if out.Len() != 0 {
			t.Errorf("run(%q) wrote a report: %q", tc.args, out.String())
		}
	}
}

func TestHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"--help"}, &out, &errOut)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, f := range []string{"--nodes", "--admin-token", "--sockets", "--sources", "--samples", "--duration", "--connect-rate", "--scenarios", "--json", "--allow-remote", "--timeout"} {
		if !strings.Contains(errOut.String(), strings.TrimLeft(f, "-")) {
			t.Errorf("usage lacks %s", f)
		}
	}
}
