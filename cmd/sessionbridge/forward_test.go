package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestForwardFlags(t *testing.T) {
	t.Setenv("SESSIONBRIDGE_FORWARD_URL", "https://app.internal/frames")
	t.Setenv("SESSIONBRIDGE_FORWARD_SECRET", "from-the-environment-32-bytes-long")
	t.Setenv("SESSIONBRIDGE_FORWARD_TYPES", "chat.**, game.*")
	fs, f := newServeFlags(io.Discard)
	if _, err := parse(fs, []string{"--forward-timeout", "2s", "--forward-in-flight", "4", "--forward-max-in-flight", "100"}); err != nil {
		t.Fatal(err)
	}
	fc := f.cfg.Forward
	if fc.URL != "https://app.internal/frames" || fc.Secret != "from-the-environment-32-bytes-long" || f.forwardTypes != "chat.**, game.*" ||
		fc.Timeout != 2*time.Second || fc.InFlight != 4 || fc.MaxInFlight != 100 {
		t.Fatalf("parsed %+v, types %q", fc, f.forwardTypes)
	}
	if got := strings.Join(splitList(f.forwardTypes), "|"); got != "chat.**|game.*" {
		t.Fatalf("types %q", got)
	}
}

// TestServeRefusesBadForwarding: serve does not start with a forward URL but
// no secret, a short one, or a URL that is not http(s); the message never
// quotes the secret.
func TestServeRefusesBadForwarding(t *testing.T) {
	const short = "too-short-a-secret"
	for _, args := range [][]string{
		{"--forward-url", "http://127.0.0.1:9/frames", "--forward-types", "chat.*"},
		{"--forward-url", "http://127.0.0.1:9/frames", "--forward-types", "chat.*", "--forward-secret", short},
		{"--forward-url", "file:///etc/passwd", "--forward-types", "chat.*", "--forward-secret", strings.Repeat("s", 32)},
		{"--forward-types", "chat.*", "--forward-secret", strings.Repeat("s", 32)},
	} {
		code, _, errOut := cli(t, "", append([]string{"serve", "--addr", "127.0.0.1:0", "--demo=false", "--users", t.TempDir() + "/users.json"}, args...)...)
		if code != exitError || !strings.Contains(errOut, "forward") || strings.Contains(errOut, short) {
			t.Errorf("serve %v: exit %d, %q; want a refusal naming forwarding", args, code, errOut)
		}
	}
}
