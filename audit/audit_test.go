package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/sessionbridge/sessionbridge"
)

// newJSON returns a Logger writing JSON records into a buffer.
func newJSON(t *testing.T, level slog.Level) (*Logger, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	return New(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level}))), &buf
}

// records decodes every JSON line in buf.
func records(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimRight(buf.String(), "\n"), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("record %q is not JSON: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestLogFields(t *testing.T) {
	l, buf := newJSON(t, slog.LevelDebug)
	l.Log(context.Background(), SessionCreated, Fields{
		SessionID: "a1AAAAAAAAAAAAAAAA", UserID: "alice", ConnectionID: "c-1", IP: "192.0.2.1",
		UserAgent: "Mozilla/5.0", Method: "password", Source: "http", Reason: "login", Detail: "first login",
	})
	recs := records(t, buf)
	if len(recs) != 1 {
		t.Fatalf("got %d records, want 1", len(recs))
	}
	want := map[string]any{
		"level": "INFO", "msg": "audit", "audit": true, "event": "session_created",
		"session_id": "a1AAAAAAAAAAAAAAAA", "user_id": "alice", "connection_id": "c-1", "ip": "192.0.2.1",
		"user_agent": "Mozilla/5.0", "method": "password", "source": "http", "reason": "login", "detail": "first login",
	}
	got := recs[0]
	delete(got, "time")
	if len(got) != len(want) {
		t.Errorf("record has keys %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestLogOmitsEmptyFields(t *testing.T) {
	l, buf := newJSON(t, slog.LevelDebug)
	l.Log(context.Background(), WSDisconnected, Fields{ConnectionID: "c-9"})
	got := records(t, buf)[0]
	for _, k := range []string{"session_id", "user_id", "ip", "user_agent", "method", "source", "reason", "detail"} {
		if _, ok := got[k]; ok {
			t.Errorf("empty field %s present: %v", k, got)
		}
	}
	if got["connection_id"] != "c-9" || got["event"] != WSDisconnected {
		t.Errorf("record = %v", got)
	}
}

func TestLevels(t *testing.T) {
	l, buf := newJSON(t, slog.LevelDebug)
	events := map[string]string{
		SessionCreated: "INFO", SessionRenewed: "INFO", SessionExpired: "INFO", SessionLogout: "INFO",
		SessionRevoked: "INFO", SessionUpdated: "INFO", AuthnLoginSuccess: "INFO", AuthnTokenRefreshed: "INFO",
		WSConnected: "INFO", WSDisconnected: "INFO",
		AuthnLoginFail: "WARN", AuthnFailed: "WARN", AuthzFail: "WARN",
	}
	for ev := range events {
		l.Log(context.Background(), ev, Fields{})
	}
	recs := records(t, buf)
	if len(recs) != len(events) {
		t.Fatalf("got %d records, want %d", len(recs), len(events))
	}
	for _, r := range recs {
		ev := r["event"].(string)
		if r["level"] != events[ev] {
			t.Errorf("%s logged at %v, want %s", ev, r["level"], events[ev])
		}
	}
}

func TestLevelFiltering(t *testing.T) {
	l, buf := newJSON(t, slog.LevelWarn)
	l.Log(context.Background(), SessionCreated, Fields{UserID: "alice"})
	l.Log(context.Background(), AuthnFailed, Fields{Reason: "bad_token"})
	recs := records(t, buf)
	if len(recs) != 1 || recs[0]["event"] != AuthnFailed {
		t.Errorf("with a WARN handler got %v, want only the authn_failed record", recs)
	}
}

func TestNilLoggerDiscards(t *testing.T) {
	var l *Logger
	l.Log(context.Background(), SessionCreated, Fields{UserID: "alice"})
	New(nil).Log(context.Background(), SessionCreated, Fields{UserID: "alice"})
	(&Logger{}).Log(context.Background(), SessionCreated, Fields{UserID: "alice"})
	var noCtx context.Context // a nil context must not crash an audit call
	New(slog.New(slog.DiscardHandler)).Log(noCtx, AuthnFailed, Fields{})
}

func TestTextHandlerLineInjection(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)))
	forged := "Mozilla\nlevel=INFO msg=audit audit=true event=authn_login_success user_id=admin\r\x1b[2J\u2028\u202e"
	l.Log(context.Background(), AuthnLoginFail, Fields{UserID: "bob\ninjected=1", UserAgent: forged, Detail: "tab\there"})
	out := buf.String()
	if n := strings.Count(out, "\n"); n != 1 {
		t.Fatalf("one record wrote %d lines: %q", n, out)
	}
	for _, bad := range []string{"\r", "\x1b", "\u2028", "\u202e", "\t"} {
		if strings.Contains(out, bad) {
			t.Errorf("output contains %q: %q", bad, out)
		}
	}
	if !strings.Contains(out, `Mozilla\\nlevel=INFO`) {
		t.Errorf("newline not escaped as \\n: %q", out)
	}
}

func TestCleanEscapes(t *testing.T) {
	cases := []struct{ in, want string }{
		{"plain value", "plain value"},
		{"a\nb", `a\nb`},
		{"a\r\nb", `a\r\nb`},
		{"tab\t", `tab\t`},
		{"nul\x00esc\x1bdel\x7f", `nul\x00esc\x1bdel\x7f`},
		{"nel\u0085", `nel\u0085`},
		{"ls\u2028ps\u2029", `ls\u2028ps\u2029`},
		{"rlo\u202egnp.exe", `rlo\u202egnp.exe`},
		{"bad\xffutf8", "bad\uFFFDutf8"},
		{"héllo wörld ✓", "héllo wörld ✓"},
		{"", ""},
	}
	for _, c := range cases {
		if got := Clean(c.in); got != c.want {
			t.Errorf("Clean(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestCleanCapsLength(t *testing.T) {
	for _, in := range []string{
		strings.Repeat("a", 10<<10),
		strings.Repeat("\n", 10<<10),
		strings.Repeat("é", 10<<10),
		strings.Repeat("x", MaxValueLen+1),
	} {
		got := Clean(in)
		if len(got) > MaxValueLen+len("…") || !strings.HasSuffix(got, "…") {
			t.Errorf("Clean(%.10q... len %d) = %.20q... len %d", in, len(in), got, len(got))
		}
		if strings.ContainsRune(strings.TrimSuffix(got, "…"), '\uFFFD') {
			t.Errorf("cut split a character: %q", got)
		}
	}
	if got := Clean(strings.Repeat("a", MaxValueLen)); len(got) != MaxValueLen {
		t.Errorf("a value of exactly MaxValueLen bytes was changed: len %d", len(got))
	}
}

func TestCleanRedacts(t *testing.T) {
	id, err := sessionbridge.NewSessionID("alice")
	if err != nil {
		t.Fatal(err)
	}
	secret, _, err := sessionbridge.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	token := sessionbridge.FormatToken(id, secret)
	const jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"
	const unsignedJWT = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."
	cases := []struct{ in, want string }{
		{token, Redacted},
		{secret, Redacted},
		{jwt, Redacted},
		{unsignedJWT, Redacted},
		{"token=" + token + "; path=/", "token=" + Redacted + "; path=/"},
		{"Authorization: Bearer sbk_live_0123456789abcdef", "Authorization: Bearer " + Redacted},
		{"bearer opaque-0123456789, jwt " + jwt, "bearer " + Redacted + ", jwt " + Redacted},
		{"missing bearer token", "missing bearer token"},
		// Public identifiers and ordinary dotted words stay.
		{id, id},
		{"v1.2.3", "v1.2.3"},
		{"api.example.org", "api.example.org"},
		{"192.0.2.1", "192.0.2.1"},
		{"Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0.0.0", "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0.0.0"},
	}
	for _, c := range cases {
		if got := Clean(c.in); got != c.want {
			t.Errorf("Clean(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestLogRedactsEveryField(t *testing.T) {
	id, _ := sessionbridge.NewSessionID("alice")
	secret, _, _ := sessionbridge.NewSecret()
	token := sessionbridge.FormatToken(id, secret)
	l, buf := newJSON(t, slog.LevelDebug)
	l.Log(context.Background(), AuthnFailed, Fields{
		SessionID: token, UserID: token, ConnectionID: token, IP: token, UserAgent: token,
		Method: token, Source: token, Reason: token, Detail: "presented " + token,
	})
	if strings.Contains(buf.String(), secret) {
		t.Fatalf("secret leaked into the log: %s", buf.String())
	}
	if got := strings.Count(buf.String(), Redacted); got != 9 {
		t.Errorf("%d redactions, want 9: %s", got, buf.String())
	}
}

func FuzzClean(f *testing.F) {
	for _, s := range []string{"plain", "a\nb", "\x00\xff", "Bearer x", "eyJhbGciOiJub25lIn0.eyJ9.", "\u2028\u202e", strings.Repeat("é", 600)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := Clean(in)
		if len(got) > MaxValueLen+len("…") {
			t.Fatalf("Clean result is %d bytes", len(got))
		}
		for i, r := range got {
			if r < 0x20 || r == 0x7f || (0x80 <= r && r <= 0x9f) || r == 0x2028 || r == 0x2029 {
				t.Fatalf("Clean(%q) = %q keeps control character at %d", in, got, i)
			}
		}
		if !strings.Contains(in, "\n") && strings.Contains(got, "\n") {
			t.Fatal("newline appeared")
		}
	})
}

func BenchmarkLog(b *testing.B) {
	l := New(slog.New(slog.NewJSONHandler(discard{}, nil)))
	f := Fields{SessionID: "a1AAAAAAAAAAAAAAAA", UserID: "alice", IP: "192.0.2.1", UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0.0.0", Source: "websocket"}
	b.ReportAllocs()
	for b.Loop() {
		l.Log(context.Background(), WSConnected, f)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestLogWritesKeyIDOnce: a record names its API key once, not twice.
func TestLogWritesKeyIDOnce(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)))
	l.Log(context.Background(), WSConnected, Fields{UserID: "alice", KeyID: "k1", ConnectionID: "c1"})
	if n := strings.Count(buf.String(), "key_id="); n != 1 {
		t.Fatalf("record %q names key_id %d times, want once", buf.String(), n)
	}
}

// connectFields are the facts of a WebSocket connect record as the gateway
// writes them.
var connectFields = Fields{
	SessionID: "s7Qx2mK9pL4vN8rT1wZ3", UserID: "user-4711", ConnectionID: "c9f2a7d41b3e8c05",
	IP: "192.0.2.17", UserAgent: "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0",
	Method: "session", Source: "header",
}

// BenchmarkLogConnectText is a ws_connected and a ws_disconnected record
// written as the server writes them by default: the text handler at info.
func BenchmarkLogConnectText(b *testing.B) {
	l := New(slog.New(slog.NewTextHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelInfo})))
	closed := connectFields
	closed.Source, closed.Reason, closed.Detail = "", "normal", "close code 1000"
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l.Log(ctx, WSConnected, connectFields)
		l.Log(ctx, WSDisconnected, closed)
	}
}

// BenchmarkLogConnectJSON is BenchmarkLogConnectText with the JSON handler.
func BenchmarkLogConnectJSON(b *testing.B) {
	l := New(slog.New(slog.NewJSONHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelInfo})))
	closed := connectFields
	closed.Source, closed.Reason, closed.Detail = "", "normal", "close code 1000"
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l.Log(ctx, WSConnected, connectFields)
		l.Log(ctx, WSDisconnected, closed)
	}
}
