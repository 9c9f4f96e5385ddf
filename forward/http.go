package forward

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sessionbridge/sessionbridge/internal/strictjson"
)

// Defaults and bounds of the HTTP forwarder.
const (
	// DefaultTimeout bounds one request to the application, from sending it
	// to reading the whole answer.
	DefaultTimeout = 5 * time.Second
	// DefaultMaxInFlight bounds the requests one node has waiting for the
	// application at once.
	DefaultMaxInFlight = 1024
	// MinSecretLen is the shortest shared secret New accepts (256 bits).
	MinSecretLen = 32
	// MaxAnswerBytes bounds the body of the application's answer.
	MaxAnswerBytes = 64 << 10
	// MaxMessageBytes bounds the message of an application's error answer.
	MaxMessageBytes = 1024
	// warnEvery is the least time between two warnings about failed
	// requests; failures in between are logged at debug level, so that an
	// application that is down does not flood the log.
	warnEvery = time.Second
)

// Config configures an HTTP forwarder. URL and Secret are required.
type Config struct {
	// URL is the application's endpoint: http or https, no user info, no
	// fragment. Every frame is POSTed to it.
	URL string
	// Secret is the shared secret of the signature: at least MinSecretLen
	// bytes.
	Secret []byte
	// Timeout bounds each request, answer included; default DefaultTimeout.
	Timeout time.Duration
	// MaxInFlight bounds the requests waiting for the application at once;
	// one more frame is answered with CodeUnavailable (ErrBusy) without being
	// sent. Default DefaultMaxInFlight.
	MaxInFlight int
	// Logger receives a warning per failed request (at most one a second;
	// the rest at debug level), never with the secret, the body or the
	// query of the URL.
	Logger *slog.Logger
	// Now is the clock of the signature's timestamp and of the log's
	// throttle; nil means time.Now.
	Now func() time.Time
}

// HTTP is the Forwarder that POSTs each frame to the application's HTTP
// endpoint (see docs/forwarding.md). Create it with New and Close it when
// done; it is safe for concurrent use.
type HTTP struct {
	url     string
	logURL  string // scheme, host and path: the query may hold a credential
	secret  []byte
	timeout time.Duration
	sem     chan struct{}
	tr      *http.Transport
	client  *http.Client
	log     *slog.Logger
	now     func() time.Time
	// lastWarn is when the last failure was logged at warning level, in
	// Unix nanoseconds.
	lastWarn atomic.Int64
}

var _ Forwarder = (*HTTP)(nil)

// New checks cfg and returns an HTTP forwarder. It refuses a URL that is not
// absolute http or https, has user info (credentials in a URL end up in
// logs; the signature authenticates the requests) or a fragment, and a
// secret shorter than MinSecretLen.
func New(cfg Config) (*HTTP, error) {
	u, err := url.Parse(cfg.URL)
	switch {
	case cfg.URL == "":
		return nil, errors.New("forward: the application URL is required")
	case err != nil:
		return nil, errors.New("forward: the application URL does not parse")
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "", u.Opaque != "":
		return nil, errors.New("forward: the application URL must be an absolute http:// or https:// URL")
	case u.User != nil:
		return nil, errors.New("forward: the application URL must not carry user info; the signature authenticates the requests")
	case u.Fragment != "" || u.RawFragment != "":
		return nil, errors.New("forward: the application URL must not have a fragment")
	}
	if len(cfg.Secret) < MinSecretLen {
		return nil, fmt.Errorf("forward: the shared secret must have at least %d bytes", MinSecretLen)
	}
	if cfg.Timeout < 0 || cfg.MaxInFlight < 0 {
		return nil, errors.New("forward: negative timeout or in-flight bound")
	}
	h := &HTTP{
		url: u.String(), logURL: (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String(),
		secret: bytes.Clone(cfg.Secret), timeout: cfg.Timeout, log: cfg.Logger, now: cfg.Now,
	}
	if h.timeout == 0 {
		h.timeout = DefaultTimeout
	}
	maxInFlight := cfg.MaxInFlight
	if maxInFlight == 0 {
		maxInFlight = DefaultMaxInFlight
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	h.sem = make(chan struct{}, maxInFlight)
	h.tr = &http.Transport{
		// The application is reached directly: a proxy from the environment
		// would see every signed frame.
		Proxy:                  nil,
		DialContext:            (&net.Dialer{Timeout: h.timeout, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    h.timeout,
		ResponseHeaderTimeout:  h.timeout,
		MaxIdleConns:           min(maxInFlight, 256),
		MaxIdleConnsPerHost:    min(maxInFlight, 256),
		MaxConnsPerHost:        maxInFlight,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 16 << 10,
		// Answers are small; decompressing them would only let a small body
		// expand.
		DisableCompression: true,
	}
	h.client = &http.Client{
		Transport: h.tr,
		// A redirect would send the signed frame elsewhere: a 3xx is an
		// answer like any other status.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return h, nil
}

// Endpoint returns the application's URL without its query (which may hold
// a credential), for logs.
func (h *HTTP) Endpoint() string { return h.logURL }

// Close closes the idle connections to the application. Requests in flight
// finish; the forwarder stays usable.
func (h *HTTP) Close() { h.tr.CloseIdleConnections() }

// wireRequest is the body POSTed to the application.
type wireRequest struct {
	// ForwardID is unique per request, so that the application can refuse
	// a replay within the signature's age limit.
	ForwardID string `json:"forward_id"`
	Request
}

// answer is the application's answer: a reply (type, data) or an error.
type answer struct {
	Type  string          `json:"type"`
	Data  json.RawMessage `json:"data"`
	Error *answerError    `json:"error"`
}

type answerError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Forward POSTs req to the application and returns its answer. See the
// package documentation and docs/forwarding.md for the formats; every failure
// is an *Error but the end of ctx, which is returned as ctx's error.
func (h *HTTP) Forward(ctx context.Context, req Request) (Reply, error) {
	select {
	case h.sem <- struct{}{}:
	default:
		return Reply{}, &Error{Code: CodeUnavailable, Message: "too many frames waiting for the application; try again later", Err: ErrBusy}
	}
	defer func() { <-h.sem }()

	if req.Principal.Scopes == nil {
		req.Principal.Scopes = []string{}
	}
	body, err := json.Marshal(wireRequest{ForwardID: rand.Text(), Request: req})
	if err != nil {
		return Reply{}, fmt.Errorf("forward: encoding the request: %w", err)
	}
	ts := strconv.FormatInt(h.now().Unix(), 10)
	rctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(rctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return Reply{}, fmt.Errorf("forward: building the request: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("User-Agent", "sessionbridge-forward/1")
	hr.Header.Set(HeaderTimestamp, ts)
	hr.Header.Set(HeaderSignature, Sign(h.secret, ts, body))

	start := time.Now()
	resp, err := h.client.Do(hr)
	if err != nil {
		return Reply{}, h.failed(ctx, req, start, 0, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswerBytes+1))
	if err != nil {
		return Reply{}, h.failed(ctx, req, start, resp.StatusCode, err)
	}
	switch {
	case resp.StatusCode >= 500:
		return Reply{}, h.fail(req, start, resp.StatusCode, &Error{
			Code: CodeUnavailable, Message: fmt.Sprintf("the application failed (HTTP %d)", resp.StatusCode),
			Err: fmt.Errorf("%w: HTTP %d", ErrUnavailable, resp.StatusCode),
		})
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return Reply{}, h.fail(req, start, resp.StatusCode, &Error{
			Code: CodeInternal, Message: fmt.Sprintf("the application answered HTTP %d", resp.StatusCode),
			Err: fmt.Errorf("%w: HTTP %d", ErrBadAnswer, resp.StatusCode),
		})
	case len(b) > MaxAnswerBytes:
		return Reply{}, h.fail(req, start, resp.StatusCode, badAnswer(fmt.Sprintf("the application's answer is larger than %d bytes", MaxAnswerBytes), nil))
	case resp.StatusCode == http.StatusNoContent || len(b) == 0:
		return Reply{Type: TypeAck}, nil
	}
	rep, fe := decodeAnswer(b, req.Type)
	switch {
	case fe == nil:
		return rep, nil
	case errors.Is(fe, ErrRefused):
		// The application said no: not a failure to log.
		return Reply{}, fe
	}
	return Reply{}, h.fail(req, start, resp.StatusCode, fe)
}

// decodeAnswer reads a 2xx answer with a body under the strict JSON rules.
func decodeAnswer(b []byte, reqType string) (Reply, *Error) {
	var a answer
	if err := strictjson.Decode(b, &a); err != nil {
		return Reply{}, badAnswer("the application's answer is not valid", err)
	}
	if len(a.Data) > 0 && string(a.Data) == "null" {
		a.Data = nil
	}
	if e := a.Error; e != nil {
		if a.Type != "" || a.Data != nil {
			return Reply{}, badAnswer("the application's answer is not valid", errors.New("error beside type or data"))
		}
		if len(e.Message) > MaxMessageBytes {
			return Reply{}, badAnswer("the application's answer is not valid", fmt.Errorf("error message longer than %d bytes", MaxMessageBytes))
		}
		code := e.Code
		if !validCode(code) {
			code = CodeInternal
		}
		msg := e.Message
		if msg == "" {
			msg = "refused by the application"
		}
		return Reply{}, &Error{Code: code, Message: msg, Err: fmt.Errorf("%w: %s", ErrRefused, code)}
	}
	switch {
	case a.Type == "":
		a.Type = reqType + ResultSuffix
	case !validType(a.Type):
		return Reply{}, badAnswer("the application's answer is not valid", errors.New("malformed reply type"))
	case Builtin(a.Type):
		return Reply{}, badAnswer("the application's answer is not valid", errors.New("reply of a built-in frame type"))
	}
	return Reply{Type: a.Type, Data: a.Data}, nil
}

func validCode(c string) bool {
	for _, k := range codes {
		if c == k {
			return true
		}
	}
	return false
}

func badAnswer(msg string, cause error) *Error {
	err := ErrBadAnswer
	if cause != nil {
		err = fmt.Errorf("%w: %w", ErrBadAnswer, cause)
	}
	return &Error{Code: CodeInternal, Message: msg, Err: err}
}

// failed turns an error of the HTTP exchange into an *Error, or into ctx's
// error when the caller gave up (the connection closed).
func (h *HTTP) failed(ctx context.Context, req Request, start time.Time, status int, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// A *url.Error quotes the whole URL, query included: keep its cause.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	fe := &Error{Code: CodeUnavailable, Message: "the application could not be reached", Err: fmt.Errorf("%w: %w", ErrUnavailable, err)}
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		fe.Message = fmt.Sprintf("the application did not answer within %s", h.timeout)
	} else if status != 0 {
		fe.Message = "the application's answer was cut off"
	}
	return h.fail(req, start, status, fe)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// fail logs a failed request and returns fe.
func (h *HTTP) fail(req Request, start time.Time, status int, fe *Error) error {
	level := slog.LevelDebug
	now := h.now().UnixNano()
	if last := h.lastWarn.Load(); now-last >= int64(warnEvery) && h.lastWarn.CompareAndSwap(last, now) {
		level = slog.LevelWarn
	}
	if h.log.Enabled(context.Background(), level) {
		h.log.Log(context.Background(), level, "forward: frame not relayed",
			"url", h.logURL, "type", truncate(req.Type, MaxTypeLen), "connection_id", req.ConnectionID,
			"user_id", req.Principal.UserID, "status", status, "code", fe.Code,
			"elapsed", time.Since(start).Round(time.Millisecond), "err", fe.Err)
	}
	return fe
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
