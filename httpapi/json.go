package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"

	"github.com/sessionbridge/sessionbridge/internal/strictjson"
)

// MaxBodyBytes is the largest request body the API reads; larger bodies are
// refused with 413.
const MaxBodyBytes = 64 << 10

// Error codes of JSON error bodies. docs/http-api.md lists them with their
// statuses.
const (
	CodeBadRequest           = "bad_request"
	CodeInvalidPatch         = "invalid_patch"
	CodeUnauthenticated      = "unauthenticated"
	CodeInvalidCredentials   = "invalid_credentials"
	CodeInvalidToken         = "invalid_token"
	CodeConflictingTokens    = "conflicting_credentials"
	CodeForbidden            = "forbidden"
	CodeSessionRequired      = "session_required"
	CodeCrossOrigin          = "cross_origin_request"
	CodeNotFound             = "not_found"
	CodeMethodNotAllowed     = "method_not_allowed"
	CodeVersionConflict      = "version_conflict"
	CodeBodyTooLarge         = "body_too_large"
	CodeDataTooLarge         = "data_too_large"
	CodeDataTooDeep          = "data_too_deep"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeRateLimited          = "rate_limited"
	CodeUnavailable          = "unavailable"
	CodeNotReady             = "not_ready"
	CodeInternal             = "internal"
)

// apiError is an error answer: an HTTP status, a stable code and a message
// safe to show to the client.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// errorBody is the JSON form of every error answer.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// writeJSON writes v as a JSON answer with status. Answers may carry session
// data or tickets, so no cache may keep them.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{Error: CodeInternal, Message: "internal error"})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeError writes e as a JSON error answer.
func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.Status, errorBody{Error: e.Code, Message: e.Message})
}

// decodeJSON reads the request body into v strictly: at most MaxBodyBytes
// (413 beyond), a JSON media type (415 otherwise), then decodeStrict's rules
// (400 for any breach). It returns an *apiError ready to be written.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) *apiError {
	if e := checkJSONType(r, false); e != nil {
		return e
	}
	body, e := readBody(w, r)
	if e != nil {
		return e
	}
	return decodeStrict(body, v)
}

// readBody reads the whole request body, up to MaxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	if r.ContentLength > MaxBodyBytes {
		return nil, errorf(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "request body larger than %d bytes", MaxBodyBytes)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, errorf(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "request body larger than %d bytes", MaxBodyBytes)
		}
		return nil, errorf(http.StatusBadRequest, CodeBadRequest, "could not read request body")
	}
	return body, nil
}

// decodeStrict decodes body, a single JSON value, into v under the rules of
// strictjson: exact member names, no duplicate names, valid UTF-8, bounded
// nesting, no unknown members, nothing after the value. It is the part of
// decodeJSON that sees raw client bytes, and the target of FuzzDecodeStrict.
func decodeStrict(body []byte, v any) *apiError {
	if len(bytes.TrimSpace(body)) == 0 {
		return errorf(http.StatusBadRequest, CodeBadRequest, "request body is empty: a JSON object is required")
	}
	if err := strictjson.Decode(body, v); err != nil {
		// strictjson's messages name the rule and where, never a value.
		return errorf(http.StatusBadRequest, CodeBadRequest, "invalid JSON body: %v", err)
	}
	return nil
}

// checkJSONType refuses bodies that do not declare a JSON media type:
// application/json, and also application/merge-patch+json when mergePatch is
// set. Requiring it keeps plain HTML forms, which cannot send JSON without a
// CORS preflight, away from the API.
func checkJSONType(r *http.Request, mergePatch bool) *apiError {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err == nil && (mt == "application/json" || (mergePatch && mt == "application/merge-patch+json")) {
		return nil
	}
	if mergePatch {
		return errorf(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "Content-Type must be application/merge-patch+json or application/json")
	}
	return errorf(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "Content-Type must be application/json")
}

// truncate caps s at n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// logAttrErr is a slog attribute for an error.
func logAttrErr(err error) slog.Attr { return slog.String("err", err.Error()) }
