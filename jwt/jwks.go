package jwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionbridge/sessionbridge/internal/strictjson"
)

// maxJWKSBytes bounds a JWKS document, fetched or read from a file.
const maxJWKSBytes = 1 << 20

// maxFetchTime bounds one JWKS fetch even with an HTTP client that has no
// timeout of its own, so that a stuck server cannot block key refreshes.
const maxFetchTime = 30 * time.Second

// maxJWKSKeys bounds the keys kept from one JWKS document.
const maxJWKSKeys = 256

// jwk is the subset of RFC 7517/7518/8037 members we read.
type jwk struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid"`
	Use    string   `json:"use"`
	Alg    string   `json:"alg"`
	KeyOps []string `json:"key_ops"`
	Crv    string   `json:"crv"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
}

// parseJWKS returns the usable verification keys of a JWK Set. Keys it cannot
// use (encryption keys, symmetric keys, unknown types or curves, bad
// encodings, an alg their type cannot verify) are skipped, so that one odd key
// in a provider's set does not lock out the others; skipped says how many.
func parseJWKS(data []byte) (keys []*key, skipped int, err error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	// Members are matched exactly and the document must be unambiguous
	// (no duplicate names, valid UTF-8); members this verifier does not use
	// are skipped, since JWKs carry many (x5c, x5t, ...).
	if err := strictjson.DecodeOpen(data, &set); err != nil {
		return nil, 0, fmt.Errorf("JWKS is not valid JSON: %w", err)
	}
	if set.Keys == nil {
		return nil, 0, errors.New(`JWKS has no "keys" array`)
	}
	for _, raw := range set.Keys {
		if len(keys) == maxJWKSKeys {
			skipped++
			continue
		}
		var j jwk
		if strictjson.DecodeOpen(raw, &j) != nil {
			skipped++
			continue
		}
		k, err := j.key()
		if err != nil {
			skipped++
			continue
		}
		keys = append(keys, k)
	}
	return keys, skipped, nil
}

var b64url = base64.RawURLEncoding

// key converts a JWK into a verification key, honouring use, key_ops and alg.
func (j *jwk) key() (*key, error) {
	if j.Use != "" && j.Use != "sig" {
		return nil, errors.New("not a signature key")
	}
	if j.KeyOps != nil && !slices.Contains(j.KeyOps, "verify") {
		return nil, errors.New("key_ops lacks verify")
	}
	var pub any
	switch j.Kty {
	case "RSA":
		n, err := decodeB64(j.N)
		if err != nil || len(n) == 0 || n[0] == 0 {
			return nil, errors.New("bad RSA modulus")
		}
		e, err := decodeB64(j.E)
		if err != nil || len(e) == 0 || len(e) > 4 || e[0] == 0 {
			return nil, errors.New("bad RSA exponent")
		}
		var exp int
		for _, b := range e {
			exp = exp<<8 | int(b)
		}
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
	case "EC":
		var curve elliptic.Curve
		switch j.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, errors.New("unsupported EC curve")
		}
		size := (curve.Params().BitSize + 7) / 8
		x, errX := decodeB64(j.X)
		y, errY := decodeB64(j.Y)
		if errX != nil || errY != nil || len(x) != size || len(y) != size {
			return nil, errors.New("bad EC point encoding")
		}
		point := make([]byte, 0, 1+2*size)
		point = append(append(append(point, 4), x...), y...)
		k, err := ecdsa.ParseUncompressedPublicKey(curve, point)
		if err != nil {
			return nil, fmt.Errorf("bad EC point: %w", err)
		}
		pub = k
	case "OKP":
		if j.Crv != "Ed25519" {
			return nil, errors.New("unsupported OKP curve")
		}
		x, err := decodeB64(j.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("bad Ed25519 key")
		}
		pub = ed25519.PublicKey(x)
	default:
		return nil, errors.New("unsupported key type")
	}
	k, err := newKey(j.Kid, pub)
	if err != nil {
		return nil, err
	}
	if j.Alg != "" {
		a, ok := parseAlg(j.Alg)
		if !ok || !k.algs.has(a) {
			return nil, errors.New("alg does not fit the key")
		}
		k.algs = 1 << a
	}
	return k, nil
}

func decodeB64(s string) ([]byte, error) {
	return b64url.Strict().DecodeString(s)
}

// remote keeps the key set fetched from a JWKS URL and refreshes it: on a
// timer, and on demand when a token names a kid we do not know, at most once
// per minRefresh however many tokens ask.
type remote struct {
	url        string
	insecure   bool   // plain http to a host other than loopback
	logURL     string // scheme, host and path only: a query may carry a secret
	client     *http.Client
	refresh    time.Duration
	minRefresh time.Duration
	now        func() time.Time
	log        *slog.Logger

	keys atomic.Pointer[keySet]

	mu          sync.Mutex
	closed      bool
	inflight    *fetchCall
	attempted   bool
	lastAttempt time.Time
	lastErr     error

	ctx    context.Context // cancelled by close; parents every fetch
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// fetchCall is one fetch that any number of verifications wait for.
type fetchCall struct {
	done chan struct{}
	err  error
}

// errClosed is what a fetch reports once the verifier is closed.
var errClosed = errors.New("verifier closed")

func newRemote(rawURL string, client *http.Client, refresh, minRefresh time.Duration, now func() time.Time, log *slog.Logger) (*remote, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errors.New("JWKS URL does not parse")
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("JWKS URL must be an absolute http or https URL")
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &remote{
		url:        rawURL,
		insecure:   u.Scheme == "http" && !isLoopback(u.Hostname()),
		logURL:     (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String(),
		client:     client,
		refresh:    refresh,
		minRefresh: minRefresh,
		now:        now,
		log:        log,
		ctx:        ctx,
		cancel:     cancel,
	}, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// startLocked starts a fetch, or returns the one in flight. r.mu is held.
func (r *remote) startLocked() *fetchCall {
	if r.inflight != nil {
		return r.inflight
	}
	c := &fetchCall{done: make(chan struct{})}
	if r.closed {
		c.err = errClosed
		close(c.done)
		return c
	}
	r.inflight = c
	r.attempted = true
	r.lastAttempt = r.now()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(r.ctx, maxFetchTime)
		err := r.fetch(ctx)
		cancel()
		r.mu.Lock()
		r.inflight = nil
		r.lastErr = err
		r.mu.Unlock()
		c.err = err
		close(c.done)
	}()
	return c
}

// wait waits for c or for ctx, whichever ends first.
func wait(ctx context.Context, c *fetchCall) error {
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refreshNow fetches the key set and waits for the result: the fetch New does
// before it returns.
func (r *remote) refreshNow(ctx context.Context) error {
	r.mu.Lock()
	c := r.startLocked()
	r.mu.Unlock()
	return wait(ctx, c)
}

// refreshForUnknown is called when a token needs a key we do not have. It
// joins a fetch in flight, or starts one unless one started less than
// minRefresh ago, in which case it reports how that one ended: a flood of
// tokens with made-up kids costs the JWKS server one request per window.
func (r *remote) refreshForUnknown(ctx context.Context) error {
	r.mu.Lock()
	if r.inflight == nil && r.attempted && r.now().Sub(r.lastAttempt) < r.minRefresh {
		err := r.lastErr
		r.mu.Unlock()
		return err
	}
	c := r.startLocked()
	r.mu.Unlock()
	return wait(ctx, c)
}

// run refreshes the key set every r.refresh until close.
func (r *remote) run() {
	defer r.wg.Done()
	t := time.NewTicker(r.refresh)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
			r.mu.Lock()
			c := r.startLocked()
			r.mu.Unlock()
			if wait(r.ctx, c) != nil && r.ctx.Err() != nil {
				return
			}
		}
	}
}

// start launches the background refresher.
func (r *remote) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.wg.Add(1)
	go r.run()
}

// close stops the refresher and waits for every fetch to end.
func (r *remote) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
}

// fetch downloads and installs the key set. On any failure the keys already
// held stay in use: an outage of the identity provider must not log everybody
// out.
func (r *remote) fetch(ctx context.Context) error {
	keys, skipped, err := r.download(ctx)
	if err != nil {
		if r.ctx.Err() == nil { // not worth a warning when we are shutting down
			r.log.Warn("jwt: JWKS refresh failed; keeping the keys already held",
				"url", r.logURL, "err", err)
		}
		return err
	}
	r.keys.Store(newKeySet(keys))
	if skipped > 0 {
		r.log.Info("jwt: JWKS refreshed; some keys are unusable and ignored",
			"url", r.logURL, "keys", len(keys), "skipped", skipped)
	} else {
		r.log.Debug("jwt: JWKS refreshed", "url", r.logURL, "keys", len(keys))
	}
	return nil
}

func (r *remote) download(ctx context.Context) ([]*key, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return nil, 0, errors.New("building JWKS request failed")
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		// A *url.Error repeats the URL, query and all; keep only the cause.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, 0, fmt.Errorf("fetching JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Drain a little so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, 0, fmt.Errorf("fetching JWKS: HTTP status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("reading JWKS: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, 0, fmt.Errorf("JWKS larger than %d bytes", maxJWKSBytes)
	}
	keys, skipped, err := parseJWKS(body)
	if err != nil {
		return nil, 0, err
	}
	if len(keys) == 0 {
		// An empty set is far more likely a broken deployment than a wish to
		// reject every token; keep the previous keys.
		return nil, skipped, fmt.Errorf("JWKS has no usable signature keys (%d skipped)", skipped)
	}
	return keys, skipped, nil
}
