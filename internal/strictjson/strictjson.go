// Package strictjson decodes JSON that comes from outside the process under
// one set of rules, so that every door of the server reads a document the
// same way, and the same way as any proxy or application that inspected it
// first:
//
//   - member names match exactly (no case folding: "USERNAME" is not
//     "username");
//   - a name given twice in one object is refused (no last-one-wins);
//   - the text must be valid UTF-8, and escapes must decode to valid Unicode
//     (no silent U+FFFD replacement, which would make distinct inputs equal);
//   - the text is exactly one JSON value: nothing may follow it;
//   - arrays and objects nest at most MaxDepth levels.
//
// Decode also refuses members the target struct does not have; DecodeOpen
// ignores them, for documents that a newer version of the server or another
// party may extend. Neither bounds the size of the input: each caller reads
// its input through its own limit before decoding it.
package strictjson

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// MaxDepth is the deepest nesting of arrays and objects Decode, DecodeOpen and
// Validate accept: {} is depth 1, {"a":[]} depth 2. It is far above what any
// request of the API needs and far below what would make decoding costly.
const MaxDepth = 128

// Sentinel errors, wrapped by *Error; callers branch on them with errors.Is.
// Their texts are fit to show to the client that sent the input.
var (
	// ErrSyntax means the input is not one well-formed JSON value.
	ErrSyntax = errors.New("malformed JSON")
	// ErrInvalidUTF8 means the input, or a string escape in it, is not valid
	// UTF-8.
	ErrInvalidUTF8 = errors.New("invalid UTF-8")
	// ErrDuplicateName means an object has the same member name twice.
	ErrDuplicateName = errors.New("duplicate member name")
	// ErrUnknownName means an object has a member its target does not know
	// (Decode only). A member name differing from a known one only in case is
	// unknown too.
	ErrUnknownName = errors.New("unknown member")
	// ErrTooDeep means arrays and objects nest deeper than MaxDepth.
	ErrTooDeep = errors.New("nested too deep")
	// ErrType means a value has the wrong JSON type for its target, or does
	// not fit it (a number too large, a malformed time).
	ErrType = errors.New("invalid value")
)

// Error is a refusal: which rule the input broke and where. Its message never
// quotes a value from the input, only where it is (a JSON pointer, whose
// member names come from the input, truncated) or the byte offset.
type Error struct {
	// Err is one of the sentinel errors of this package.
	Err error
	// Pointer locates the offending member or value as an RFC 6901 JSON
	// pointer ("/data/version"); empty when unknown or for the whole input.
	Pointer string
	// Offset is the byte offset at which the problem was found; negative when
	// unknown.
	Offset int64
	// Want says what JSON was expected ("an integer"), for ErrType.
	Want string
}

// maxPointerInMessage bounds the JSON pointer quoted in an error message.
const maxPointerInMessage = 64

// Error returns a short description such as `unknown member at "/USERNAME"`,
// `invalid value at "/ttl_seconds" (want an integer)` or
// `malformed JSON at byte 17`.
func (e *Error) Error() string {
	msg := e.Err.Error()
	switch {
	case e.Pointer != "":
		msg += " at " + strconv.Quote(truncate(e.Pointer, maxPointerInMessage))
	case e.Offset >= 0:
		msg += " at byte " + strconv.FormatInt(e.Offset, 10)
	}
	if e.Want != "" {
		msg += " (want " + e.Want + ")"
	}
	return msg
}

// Unwrap returns the sentinel error.
func (e *Error) Unwrap() error { return e.Err }

// Decode decodes data, exactly one JSON value, into v under the package rules,
// refusing members v does not have. A refusal is an *Error.
func Decode(data []byte, v any) error {
	return decode(data, v, json.RejectUnknownMembers(true))
}

// DecodeOpen is Decode, except that members v does not have are skipped
// (though still checked for duplicates and valid UTF-8).
func DecodeOpen(data []byte, v any) error {
	return decode(data, v, json.RejectUnknownMembers(false))
}

// Validate checks that data is exactly one JSON value under the package rules,
// without decoding it into anything. A refusal is an *Error.
func Validate(data []byte) error {
	if err := precheck(data); err != nil {
		return err
	}
	var raw jsontext.Value
	if err := json.Unmarshal(data, &raw); err != nil {
		return classify(err)
	}
	return nil
}

func decode(data []byte, v any, opts json.Options) error {
	if err := precheck(data); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v, opts); err != nil {
		return classify(err)
	}
	return nil
}

// precheck refuses invalid UTF-8 and excess depth before the decoder runs:
// both are cheap to find in one pass, and the decoder then never recurses
// deeper than MaxDepth.
func precheck(data []byte) error {
	if !utf8.Valid(data) {
		return &Error{Err: ErrInvalidUTF8, Offset: invalidUTF8At(data)}
	}
	if at := exceedsDepth(data, MaxDepth); at >= 0 {
		return &Error{Err: ErrTooDeep, Offset: int64(at)}
	}
	return nil
}

// classify turns a decoder error into an *Error.
func classify(err error) error {
	e := &Error{Err: ErrSyntax, Offset: -1}
	var se *json.SemanticError
	var xe *jsontext.SyntacticError
	switch {
	case errors.As(err, &se):
		e.Pointer, e.Offset = string(se.JSONPointer), se.ByteOffset
		switch {
		case errors.Is(err, json.ErrUnknownName):
			e.Err = ErrUnknownName
		case errors.Is(err, jsontext.ErrDuplicateName):
			e.Err = ErrDuplicateName
		case errors.As(err, &xe):
			// A syntax error met while decoding a member: report the
			// syntax, at the offset the syntax error gives.
			e.Pointer, e.Offset = "", xe.ByteOffset
		default:
			e.Err = ErrType
			if se.GoType != nil {
				e.Want = describeType(se.GoType)
			}
		}
	case errors.As(err, &xe):
		e.Offset = xe.ByteOffset
		if errors.Is(err, jsontext.ErrDuplicateName) {
			e.Err, e.Pointer = ErrDuplicateName, string(xe.JSONPointer)
		} else if isInvalidUTF8(xe) {
			e.Err = ErrInvalidUTF8
		}
	}
	if e.Err == ErrSyntax {
		e.Pointer = ""
	}
	return e
}

// isInvalidUTF8 recognises the decoder's refusal of an escape that decodes to
// no valid Unicode scalar value (a lone surrogate such as "\ud800"). The
// decoder does not export that error; its text is all there is, and a text
// that changes only turns the refusal into ErrSyntax.
func isInvalidUTF8(xe *jsontext.SyntacticError) bool {
	if xe.Err == nil {
		return false
	}
	s := xe.Err.Error()
	return strings.HasPrefix(s, "invalid UTF-8") || strings.HasPrefix(s, "invalid surrogate pair")
}

var timeType = reflect.TypeFor[time.Time]()

// describeType names what a Go type expects in JSON terms, so that messages
// speak the client's language rather than the server's type names.
func describeType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == timeType {
		return "an RFC 3339 time string"
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a string"
		}
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "another type"
}

// Depth returns the deepest nesting of arrays and objects in data, a JSON
// text: 0 for a scalar, 1 for {} or [], 2 for {"a":{}}. It does not validate
// data; on invalid JSON the result is meaningless.
func Depth(data []byte) int {
	d, deepest := 0, 0
	scan(data, func(delta, _ int) bool {
		d += delta
		deepest = max(deepest, d)
		return true
	})
	return deepest
}

// exceedsDepth returns the offset of the first bracket that opens level
// limit+1, or -1 if data never nests that deep.
func exceedsDepth(data []byte, limit int) int {
	d, at := 0, -1
	scan(data, func(delta, i int) bool {
		d += delta
		if d > limit {
			at = i
			return false
		}
		return true
	})
	return at
}

// scan calls f with +1 for every '[' or '{' and -1 for every ']' or '}' of
// data outside strings, with its offset, until f returns false.
func scan(data []byte, f func(delta, i int) bool) {
	inString := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inString {
			switch c {
			case '\\':
				i++ // the escaped byte cannot end the string
			case '"':
				inString = false
			}
			continue
		}
		delta := 0
		switch c {
		case '"':
			inString = true
		case '[', '{':
			delta = 1
		case ']', '}':
			delta = -1
		}
		if delta != 0 && !f(delta, i) {
			return
		}
	}
}

// invalidUTF8At returns the offset of the first byte of data that is not part
// of a valid UTF-8 sequence.
func invalidUTF8At(data []byte) int64 {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n <= 1 {
			return int64(i)
		}
		i += n
	}
	return -1
}

// truncate caps s at n bytes, on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
