package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
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
		{[]string{"--limit-duration", "11m", "--admin-token", "t"}, "above the bound"},
		{[]string{"--limit-frames", "-1", "--admin-token", "t"}, "must not be negative"},
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
	for _, f := range []string{"--nodes", "--admin-token", "--sockets", "--sources", "--samples", "--duration", "--connect-rate", "--scenarios", "--json", "--allow-remote", "--timeout",
		"--limit-keys", "--limit-sockets", "--limit-frames", "--limit-duration", "--limit-connects", "--limit-samples"} {
		if !strings.Contains(errOut.String(), strings.TrimLeft(f, "-")) {
			t.Errorf("usage lacks %s", f)
		}
	}
}

func TestSummarize(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for i, p99 := range []float64{900, 700, 2000} {
		name := filepath.Join(dir, fmt.Sprintf("run%d.json", i))
		body := fmt.Sprintf(`{"revoke":{"samples":5,"ok":5,"latency":{"count":5,"min_us":100,"p50_us":400,"p99_us":%v,"max_us":%v},"http":{"count":5}}}`, p99, p99)
		if err := os.WriteFile(name, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, name)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), append([]string{"summarize"}, files...), &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "revoke A→B p99") || !strings.Contains(out.String(), "900.0µs") || !strings.Contains(out.String(), "2.00ms") {
		t.Fatalf("summary:\n%s", out.String())
	}
	if err := run(context.Background(), []string{"summarize"}, &out, &errOut); err == nil {
		t.Fatal("summarize without files succeeded")
	}
	if err := run(context.Background(), []string{"summarize", filepath.Join(dir, "missing.json")}, &out, &errOut); err == nil {
		t.Fatal("summarize of a missing file succeeded")
	}
}
