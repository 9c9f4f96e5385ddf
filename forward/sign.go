package forward

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The headers of a forwarded request that authenticate it.
const (
	// HeaderTimestamp carries the Unix time, in seconds, at which the request
	// was signed.
	HeaderTimestamp = "Sessionbridge-Timestamp"
	// HeaderSignature carries "v1=" and the lower-case hex HMAC-SHA256, under
	// the shared secret, of the timestamp, ".", and the request body.
	HeaderSignature = "Sessionbridge-Signature"
)

// signaturePrefix names the signature scheme, so that another one can be
// added beside it later.
const signaturePrefix = "v1="

// ErrBadSignature is returned by Verify for a request that was not signed
// with the secret, or not recently enough.
var ErrBadSignature = errors.New("forward: bad signature")

// Sign returns the value of HeaderSignature for a request body sent at
// timestamp (the value of HeaderTimestamp).
func Sign(secret []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return signaturePrefix + hex.EncodeToString(m.Sum(nil))
}

// Verify checks that a request with header h and body was signed with secret
// within maxAge of now (either way, for clock skew), in constant time. An
// application in Go calls it before it trusts anything in the body; on error
// (wrapping ErrBadSignature) it answers 401. To refuse replays within maxAge
// as well, it also remembers the forward_id of the bodies it accepted for
// maxAge.
func Verify(secret []byte, h http.Header, body []byte, now time.Time, maxAge time.Duration) error {
	ts := h.Get(HeaderTimestamp)
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || ts != strconv.FormatInt(sec, 10) {
		return fmt.Errorf("%w: missing or malformed %s", ErrBadSignature, HeaderTimestamp)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > maxAge || d < -maxAge {
		return fmt.Errorf("%w: timestamp too far from now", ErrBadSignature)
	}
	got := h.Get(HeaderSignature)
	if !strings.HasPrefix(got, signaturePrefix) || !hmac.Equal([]byte(got), []byte(Sign(secret, ts, body))) {
		return fmt.Errorf("%w: signature does not match", ErrBadSignature)
	}
	return nil
}
