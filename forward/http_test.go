package forward_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/forward"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var secret = []byte("0123456789abcdef0123456789abcdef-test")

// received is what the fake application saw of one request.
type received struct {
	header http.Header
	body   []byte
	req    struct {
		ForwardID    string          `json:"forward_id"`
		Type         string          `json:"type"`
		ID           string          `json:"id"`
		Data         json.RawMessage `json:"data"`
		ConnectionID string          `json:"connection_id"`
		Principal    struct {
			Auth      string   `json:"auth"`
			UserID    string   `json:"user_id"`
			SessionID string   `json:"session_id"`
			KeyID     string   `json:"key_id"`
			Scopes    []string `json:"scopes"`
		} `json:"principal"`
	}
	sigErr error
}

// app is a fake application: it verifies every request's signature, records
// it, and answers with answer.
type app struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	got    []received
	answer http.HandlerFunc
}

func newApp(t *testing.T, answer http.HandlerFunc) *app {
	t.Helper()
	a := &app{t: t, answer: answer}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		rec := received{header: r.Header.Clone(), body: body}
		rec.sigErr = forward.Verify(secret, r.Header, body, time.Now(), time.Minute)
		if err := json.Unmarshal(body, &rec.req); err != nil {
			t.Errorf("app: body %q: %v", body, err)
		}
		a.mu.Lock()
		a.got = append(a.got, rec)
		a.mu.Unlock()
		a.answer(w, r)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *app) requests() []received {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]received(nil), a.got...)
}

func newForwarder(t *testing.T, cfg forward.Config) *forward.HTTP {
	t.Helper()
	if cfg.Secret == nil {
		cfg.Secret = secret
	}
	f, err := forward.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

func sampleRequest() forward.Request {
	return forward.Request{
		Type: "chat.send", ID: "c1", Data: json.RawMessage(`{"to":"bob","text":"hi"}`),
		ConnectionID: "conn-1",
		Principal: forward.Principal{
			Auth: sb.AuthAPIKey, UserID: "alice", KeyID: "k123", Scopes: []string{"ws:connect", "chat.**"},
		},
	}
}

func answerJSON(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// waitFor polls cond until it holds or 10 seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func asError(t *testing.T, err error) *forward.Error {
	t.Helper()
	var fe *forward.Error
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T), want *forward.Error", err, err)
	}
	return fe
}

func TestForwardSignsAndCarriesThePrincipal(t *testing.T) {
	a := newApp(t, answerJSON(200, `{"type":"chat.sent","data":{"ok":true,"n":[1,2]}}`))
	f := newForwarder(t, forward.Config{URL: a.srv.URL + "/frames?v=1"})
	rep, err := f.Forward(context.Background(), sampleRequest())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Type != "chat.sent" || string(rep.Data) != `{"ok":true,"n":[1,2]}` {
		t.Fatalf("reply %q %s", rep.Type, rep.Data)
	}
	got := a.requests()
	if len(got) != 1 {
		t.Fatalf("app got %d requests", len(got))
	}
	r := got[0]
	if r.sigErr != nil {
		t.Fatalf("signature: %v", r.sigErr)
	}
	if r.header.Get("Content-Type") != "application/json" || r.header.Get(forward.HeaderTimestamp) == "" ||
		!strings.HasPrefix(r.header.Get(forward.HeaderSignature), "v1=") {
		t.Fatalf("headers %v", r.header)
	}
	q := r.req
	if q.Type != "chat.send" || q.ID != "c1" || string(q.Data) != `{"to":"bob","text":"hi"}` || q.ConnectionID != "conn-1" {
		t.Fatalf("frame fields %+v", q)
	}
	p := q.Principal
	if p.Auth != "apikey" || p.UserID != "alice" || p.KeyID != "k123" || p.SessionID != "" ||
		strings.Join(p.Scopes, ",") != "ws:connect,chat.**" {
		t.Fatalf("principal %+v", p)
	}
	if len(q.ForwardID) < 20 {
		t.Fatalf("forward_id %q", q.ForwardID)
	}
	// A second request has another forward_id; the same body signed with
	// another secret or altered does not verify.
	if _, err := f.Forward(context.Background(), sampleRequest()); err != nil {
		t.Fatal(err)
	}
	got = a.requests()
	if got[1].req.ForwardID == q.ForwardID {
		t.Fatal("forward_id repeated")
	}
	if err := forward.Verify([]byte("another secret, 32 bytes or more!!"), r.header, r.body, time.Now(), time.Minute); !errors.Is(err, forward.ErrBadSignature) {
		t.Fatalf("wrong secret: %v", err)
	}
	altered := bytes.Replace(r.body, []byte(`"alice"`), []byte(`"admin"`), 1)
	if err := forward.Verify(secret, r.header, altered, time.Now(), time.Minute); !errors.Is(err, forward.ErrBadSignature) {
		t.Fatalf("altered body: %v", err)
	}
}

func TestForwardPrincipalWithoutScopesSendsEmptyList(t *testing.T) {
	a := newApp(t, answerJSON(200, `{}`))
	f := newForwarder(t, forward.Config{URL: a.srv.URL})
	req := sampleRequest()
	req.Principal = forward.Principal{Auth: sb.AuthSession, UserID: "bob", SessionID: "s1"}
	req.ID, req.Data = "", nil
	rep, err := f.Forward(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Type != "chat.send.result" || rep.Data != nil {
		t.Fatalf("reply to {}: %q %s", rep.Type, rep.Data)
	}
	body := string(a.requests()[0].body)
	if !strings.Contains(body, `"scopes":[]`) || !strings.Contains(body, `"session_id":"s1"`) ||
		strings.Contains(body, `"key_id"`) || strings.Contains(body, `"data"`) || strings.Contains(body, `"id"`) {
		t.Fatalf("body %s", body)
	}
}

func TestVerifyRefuses(t *testing.T) {
	body := []byte(`{"type":"x"}`)
	now := time.Unix(1_800_000_000, 0)
	ts := "1800000000"
	good := http.Header{forward.HeaderTimestamp: {ts}, forward.HeaderSignature: {forward.Sign(secret, ts, body)}}
	if err := forward.Verify(secret, good, body, now, time.Minute); err != nil {
		t.Fatalf("good request: %v", err)
	}
	cases := map[string]struct {
		h   http.Header
		now time.Time
	}{
		"no headers":        {http.Header{}, now},
		"too old":           {good, now.Add(61 * time.Second)},
		"from the future":   {good, now.Add(-61 * time.Second)},
		"plus sign":         {http.Header{forward.HeaderTimestamp: {"+" + ts}, forward.HeaderSignature: {forward.Sign(secret, "+"+ts, body)}}, now},
		"leading zero":      {http.Header{forward.HeaderTimestamp: {"0" + ts}, forward.HeaderSignature: {forward.Sign(secret, "0"+ts, body)}}, now},
		"no scheme":         {http.Header{forward.HeaderTimestamp: {ts}, forward.HeaderSignature: {strings.TrimPrefix(forward.Sign(secret, ts, body), "v1=")}}, now},
		"other timestamp":   {http.Header{forward.HeaderTimestamp: {"1800000001"}, forward.HeaderSignature: {forward.Sign(secret, ts, body)}}, now},
		"upper-case digest": {http.Header{forward.HeaderTimestamp: {ts}, forward.HeaderSignature: {"v1=" + strings.ToUpper(strings.TrimPrefix(forward.Sign(secret, ts, body), "v1="))}}, now},
	}
	for name, c := range cases {
		if err := forward.Verify(secret, c.h, body, c.now, time.Minute); !errors.Is(err, forward.ErrBadSignature) {
			t.Errorf("%s: %v, want ErrBadSignature", name, err)
		}
	}
}

func TestForwardAnswers(t *testing.T) {
	cases := []struct {
		name     string
		answer   http.HandlerFunc
		wantType string
		wantData string
	}{
		{"204", answerJSON(204, ""), "ack", ""},
		{"empty 200", answerJSON(200, ""), "ack", ""},
		{"data only", answerJSON(200, `{"data":[1,"two"]}`), "chat.send.result", `[1,"two"]`},
		{"null data", answerJSON(200, `{"type":"chat.ok","data":null}`), "chat.ok", ""},
		{"201", answerJSON(201, `{"type":"chat.created","data":{"id":7}}`), "chat.created", `{"id":7}`},
		{"no content type", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `{"data":1}`) }, "chat.send.result", "1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := newApp(t, c.answer)
			f := newForwarder(t, forward.Config{URL: a.srv.URL})
			rep, err := f.Forward(context.Background(), sampleRequest())
			if err != nil {
				t.Fatal(err)
			}
			if rep.Type != c.wantType || string(rep.Data) != c.wantData {
				t.Fatalf("reply %q %s, want %q %s", rep.Type, rep.Data, c.wantType, c.wantData)
			}
		})
	}
}

func TestForwardErrorAnswers(t *testing.T) {
	cases := []struct {
		body     string
		code     string
		message  string
		sentinel error
	}{
		{`{"error":{"code":"forbidden","message":"not in this room"}}`, "forbidden", "not in this room", forward.ErrRefused},
		{`{"error":{"code":"bad_request","message":"text is empty"}}`, "bad_request", "text is empty", forward.ErrRefused},
		{`{"error":{"code":"rate_limited","message":"slow down"}}`, "rate_limited", "slow down", forward.ErrRefused},
		{`{"error":{"code":"unknown_type","message":"no such action"}}`, "unknown_type", "no such action", forward.ErrRefused},
		{`{"error":{"code":"internal","message":"db down"}}`, "internal", "db down", forward.ErrRefused},
		{`{"error":{"code":"unavailable","message":"maintenance"}}`, "unavailable", "maintenance", forward.ErrRefused},
		// Codes outside the protocol's list become internal; the message stays.
		{`{"error":{"code":"teapot","message":"short and stout"}}`, "internal", "short and stout", forward.ErrRefused},
		{`{"error":{"code":"Forbidden"}}`, "internal", "refused by the application", forward.ErrRefused},
		{`{"error":{}}`, "internal", "refused by the application", forward.ErrRefused},
		// Malformed error answers.
		{`{"error":{"code":"forbidden","message":"` + strings.Repeat("x", forward.MaxMessageBytes+1) + `"}}`, "internal", "the application's answer is not valid", forward.ErrBadAnswer},
		{`{"error":{"code":"forbidden","detail":"SECRET-BODY"}}`, "internal", "the application's answer is not valid", forward.ErrBadAnswer},
		{`{"error":{"code":"forbidden"},"type":"x"}`, "internal", "the application's answer is not valid", forward.ErrBadAnswer},
		{`{"error":"forbidden"}`, "internal", "the application's answer is not valid", forward.ErrBadAnswer},
	}
	for _, c := range cases {
		a := newApp(t, answerJSON(200, c.body))
		f := newForwarder(t, forward.Config{URL: a.srv.URL})
		_, err := f.Forward(context.Background(), sampleRequest())
		fe := asError(t, err)
		if fe.Code != c.code || fe.Message != c.message || !errors.Is(err, c.sentinel) {
			t.Errorf("answer %.60s: %q %q (%v), want %q %q", c.body, fe.Code, fe.Message, fe.Err, c.code, c.message)
		}
	}
}

// TestForwardBadAnswers: whatever the application answers that cannot be
// relayed becomes internal, and its body never reaches the message.
func TestForwardBadAnswers(t *testing.T) {
	const marker = "SECRET-BODY"
	cases := []struct {
		name   string
		answer http.HandlerFunc
		code   string
		status string // part of the message
	}{
		{"malformed JSON", answerJSON(200, `{"data": SECRET-BODY`), "internal", ""},
		{"trailing data", answerJSON(200, `{"data":1} {"SECRET-BODY":1}`), "internal", ""},
		{"unknown member", answerJSON(200, `{"data":1,"extra":"SECRET-BODY"}`), "internal", ""},
		{"duplicate name", answerJSON(200, `{"data":1,"data":"SECRET-BODY"}`), "internal", ""},
		{"duplicate in data", answerJSON(200, `{"data":{"a":1,"a":"SECRET-BODY"}}`), "internal", ""},
		{"case variant", answerJSON(200, `{"Data":"SECRET-BODY"}`), "internal", ""},
		{"not an object", answerJSON(200, `["SECRET-BODY"]`), "internal", ""},
		{"built-in type", answerJSON(200, `{"type":"error","data":{"code":"SECRET-BODY"}}`), "internal", ""},
		{"session.updated type", answerJSON(200, `{"type":"session.updated","data":{}}`), "internal", ""},
		{"ack type", answerJSON(200, `{"type":"ack"}`), "internal", ""},
		{"malformed type", answerJSON(200, `{"type":"chat..SECRET-BODY"}`), "internal", ""},
		{"type with space", answerJSON(200, `{"type":"chat SECRET-BODY"}`), "internal", ""},
		{"long type", answerJSON(200, `{"type":"`+strings.Repeat("a", forward.MaxTypeLen+1)+`"}`), "internal", ""},
		{"invalid UTF-8", answerJSON(200, "{\"data\":\"SECRET-BODY\xff\"}"), "internal", ""},
		{"too large", answerJSON(200, `{"data":"SECRET-BODY`+strings.Repeat("x", forward.MaxAnswerBytes)+`"}`), "internal", "larger than"},
		{"404", answerJSON(404, `{"error":{"code":"forbidden","message":"SECRET-BODY"}}`), "internal", "HTTP 404"},
		{"400", answerJSON(400, `SECRET-BODY`), "internal", "HTTP 400"},
		{"302", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere?SECRET-BODY", http.StatusFound)
		}, "internal", "HTTP 302"},
		{"500", answerJSON(500, `SECRET-BODY`), "unavailable", "HTTP 500"},
		{"503", answerJSON(503, `{"data":"SECRET-BODY"}`), "unavailable", "HTTP 503"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := newApp(t, c.answer)
			f := newForwarder(t, forward.Config{URL: a.srv.URL})
			_, err := f.Forward(context.Background(), sampleRequest())
			fe := asError(t, err)
			if fe.Code != c.code || !strings.Contains(fe.Message, c.status) {
				t.Fatalf("%q %q, want %q with %q", fe.Code, fe.Message, c.code, c.status)
			}
			if strings.Contains(fe.Message, marker) || strings.Contains(err.Error(), marker) {
				t.Fatalf("the answer's body leaked: %v", err)
			}
			want := forward.ErrBadAnswer
			if c.code == "unavailable" {
				want = forward.ErrUnavailable
			}
			if !errors.Is(err, want) {
				t.Fatalf("%v does not wrap %v", err, want)
			}
			if n := len(a.requests()); n != 1 {
				t.Fatalf("the application got %d requests (a redirect is not followed)", n)
			}
		})
	}
}

func TestForwardAnswerAtTheSizeLimit(t *testing.T) {
	pad := forward.MaxAnswerBytes - len(`{"data":""}`)
	a := newApp(t, answerJSON(200, `{"data":"`+strings.Repeat("x", pad)+`"}`))
	f := newForwarder(t, forward.Config{URL: a.srv.URL})
	rep, err := f.Forward(context.Background(), sampleRequest())
	if err != nil {
		t.Fatalf("an answer of exactly %d bytes: %v", forward.MaxAnswerBytes, err)
	}
	if len(rep.Data) != pad+2 {
		t.Fatalf("data of %d bytes", len(rep.Data))
	}
}

func TestForwardTimeout(t *testing.T) {
	a := newApp(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	f := newForwarder(t, forward.Config{URL: a.srv.URL, Timeout: 50 * time.Millisecond})
	_, err := f.Forward(context.Background(), sampleRequest())
	fe := asError(t, err)
	if fe.Code != "unavailable" || !strings.Contains(fe.Message, "did not answer within 50ms") || !errors.Is(err, forward.ErrUnavailable) {
		t.Fatalf("timeout: %q %q %v", fe.Code, fe.Message, err)
	}
}

func TestForwardTimeoutWhileReadingTheBody(t *testing.T) {
	a := newApp(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"data":`)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	f := newForwarder(t, forward.Config{URL: a.srv.URL, Timeout: 50 * time.Millisecond})
	_, err := f.Forward(context.Background(), sampleRequest())
	fe := asError(t, err)
	if fe.Code != "unavailable" || !strings.Contains(fe.Message, "did not answer within") {
		t.Fatalf("slow body: %q %q %v", fe.Code, fe.Message, err)
	}
}

func TestForwardUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	f := newForwarder(t, forward.Config{URL: "http://" + addr + "/frames?token=QUERY-SECRET"})
	_, err = f.Forward(context.Background(), sampleRequest())
	fe := asError(t, err)
	if fe.Code != "unavailable" || fe.Message != "the application could not be reached" || !errors.Is(err, forward.ErrUnavailable) {
		t.Fatalf("connection refused: %q %q %v", fe.Code, fe.Message, err)
	}
	if strings.Contains(err.Error(), "QUERY-SECRET") {
		t.Fatalf("the URL's query leaked into the error: %v", err)
	}
}

// TestForwardLogsWithoutSecrets: a failure is logged with the endpoint but
// without its query, the secret, the signature or the frame.
func TestForwardLogsWithoutSecrets(t *testing.T) {
	a := newApp(t, answerJSON(502, `APP-BODY`))
	var logs syncBuffer
	start := time.Now()
	f := newForwarder(t, forward.Config{
		URL:    a.srv.URL + "/frames?token=QUERY-SECRET",
		Now:    func() time.Time { return start },
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	for range 3 {
		if _, err := f.Forward(context.Background(), sampleRequest()); err == nil {
			t.Fatal("502 relayed")
		}
	}
	out := logs.String()
	sig := a.requests()[0].header.Get(forward.HeaderSignature)
	for _, leak := range []string{"QUERY-SECRET", string(secret), sig, "APP-BODY", `"to":"bob"`, "hi"} {
		if strings.Contains(out, leak) {
			t.Fatalf("log holds %q:\n%s", leak, out)
		}
	}
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, a.srv.URL+"/frames") || !strings.Contains(out, "status=502") {
		t.Fatalf("log lacks the warning with the endpoint and status:\n%s", out)
	}
	// Three failures at one instant: one warning, the rest at debug level.
	if n := strings.Count(out, "level=WARN"); n != 1 {
		t.Fatalf("%d warnings for 3 failures within a second:\n%s", n, out)
	}
}

func TestForwardNodeBound(t *testing.T) {
	release := make(chan struct{})
	var started atomic.Int32
	a := newApp(t, func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(204)
	})
	f := newForwarder(t, forward.Config{URL: a.srv.URL, MaxInFlight: 2})
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := f.Forward(context.Background(), sampleRequest())
			errs <- err
		}()
	}
	waitFor(t, "two requests at the application", func() bool { return started.Load() == 2 })
	_, err := f.Forward(context.Background(), sampleRequest())
	fe := asError(t, err)
	if fe.Code != "unavailable" || !errors.Is(err, forward.ErrBusy) {
		t.Fatalf("third request over the bound: %q %v", fe.Code, err)
	}
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("request within the bound: %v", err)
		}
	}
	if n := len(a.requests()); n != 2 {
		t.Fatalf("the application got %d requests, want 2 (the refused one is never sent)", n)
	}
	// The slots are free again.
	if _, err := f.Forward(context.Background(), sampleRequest()); err != nil {
		t.Fatalf("after the bound freed: %v", err)
	}
}

// TestForwardCanceled: when the caller's context ends (the connection
// closed), the request to the application is canceled and Forward returns
// the context's error, not an *Error.
func TestForwardCanceled(t *testing.T) {
	canceled := make(chan struct{})
	var started atomic.Bool
	a := newApp(t, func(w http.ResponseWriter, r *http.Request) {
		started.Store(true)
		<-r.Context().Done()
		close(canceled)
	})
	f := newForwarder(t, forward.Config{URL: a.srv.URL, Timeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := f.Forward(ctx, sampleRequest())
		errc <- err
	}()
	waitFor(t, "the request at the application", started.Load)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Forward after cancel: %v", err)
	}
	select {
	case <-canceled:
	case <-time.After(10 * time.Second):
		t.Fatal("the application's request was not canceled")
	}
}

func TestNewRefuses(t *testing.T) {
	cases := map[string]forward.Config{
		"no URL":        {Secret: secret},
		"relative":      {URL: "/frames", Secret: secret},
		"ftp":           {URL: "ftp://app.internal/frames", Secret: secret},
		"no host":       {URL: "http:///frames", Secret: secret},
		"opaque":        {URL: "http:app.internal", Secret: secret},
		"user info":     {URL: "https://user:pass@app.internal/frames", Secret: secret},
		"fragment":      {URL: "https://app.internal/frames#x", Secret: secret},
		"no secret":     {URL: "https://app.internal/frames"},
		"short secret":  {URL: "https://app.internal/frames", Secret: []byte("0123456789abcdef0123456789abcde")},
		"negative time": {URL: "https://app.internal/frames", Secret: secret, Timeout: -time.Second},
		"negative max":  {URL: "https://app.internal/frames", Secret: secret, MaxInFlight: -1},
		"bad URL":       {URL: "http://app internal/\x7f", Secret: secret},
	}
	for name, cfg := range cases {
		if f, err := forward.New(cfg); err == nil {
			f.Close()
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "pass") || strings.Contains(err.Error(), string(secret)) {
			t.Errorf("%s: the error quotes a credential: %v", name, err)
		}
	}
	f, err := forward.New(forward.Config{URL: "https://app.internal:8443/frames?v=2", Secret: secret})
	if err != nil {
		t.Fatalf("valid config: %v", err)
	}
	f.Close()
}

func TestBuiltin(t *testing.T) {
	for _, typ := range []string{"ping", "pong", "welcome", "session", "session.get", "session.update", "session.updated", "session.expiring", "auth.refresh", "ack", "message", "error"} {
		if !forward.Builtin(typ) {
			t.Errorf("%q is a built-in type", typ)
		}
	}
	for _, typ := range []string{"chat.send", "session.other", "errors", "pingpong"} {
		if forward.Builtin(typ) {
			t.Errorf("%q is not a built-in type", typ)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
