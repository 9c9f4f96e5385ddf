package strictjson

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

type login struct {
	Username string          `json:"username"`
	Password string          `json:"password"`
	TTL      int64           `json:"ttl"`
	Data     json.RawMessage `json:"data,omitempty"`
	At       time.Time       `json:"at"`
}

func TestDecodeRefuses(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     error
		where    string // expected in the message
	}{
		{"case variant", `{"username":"bob","USERNAME":"alice","password":"x"}`, ErrUnknownName, `"/USERNAME"`},
		{"case variant only", `{"Username":"alice"}`, ErrUnknownName, `"/Username"`},
		{"duplicate", `{"username":"bob","username":"alice"}`, ErrDuplicateName, `"/username"`},
		{"duplicate nested", `{"data":{"a":1,"b":{"c":1,"c":2}}}`, ErrDuplicateName, `"/data/b/c"`},
		{"duplicate via escape", `{"username":"bob","\u0075sername":"alice"}`, ErrDuplicateName, `"/username"`},
		{"invalid utf-8", "{\"username\":\"\xffroot\"}", ErrInvalidUTF8, "byte 13"},
		{"invalid utf-8 in name", "{\"\xfe\":1}", ErrInvalidUTF8, "byte 2"},
		{"invalid utf-8 nested", "{\"data\":{\"a\":\"\xc3\"}}", ErrInvalidUTF8, "byte 14"},
		{"lone surrogate", `{"username":"\ud800root"}`, ErrInvalidUTF8, ""},
		{"trailing value", `{} {}`, ErrSyntax, "byte 3"},
		{"trailing brace", `{}}`, ErrSyntax, "byte 2"},
		{"empty", ``, ErrSyntax, ""},
		{"truncated", `{"username":`, ErrSyntax, ""},
		{"byte order mark", "\xef\xbb\xbf{}", ErrSyntax, "byte 0"},
		{"wrong type", `{"ttl":"5"}`, ErrType, `"/ttl" (want an integer)`},
		{"overflow", `{"ttl":1e400}`, ErrType, `(want an integer)`},
		{"not an object", `[]`, ErrType, "(want an object)"},
		{"bad time", `{"at":"yesterday"}`, ErrType, "(want an RFC 3339 time string)"},
		{"too deep", `{"data":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `}`, ErrTooDeep, "byte 135"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var v login
			err := Decode([]byte(c.in), &v)
			if !errors.Is(err, c.want) {
				t.Fatalf("Decode(%q) = %v, want %v", c.in, err, c.want)
			}
			if _, ok := errors.AsType[*Error](err); !ok {
				t.Fatalf("Decode(%q) error %T is not an *Error", c.in, err)
			}
			if !strings.Contains(err.Error(), c.where) || !strings.HasPrefix(err.Error(), c.want.Error()) {
				t.Errorf("Decode(%q) message %q: want %q then %q", c.in, err, c.want, c.where)
			}
		})
	}
}

func TestDecodeAccepts(t *testing.T) {
	in := ` {"username":"élodie","password":"p\u00e9","ttl":60,"data":{"x":[1,{"y":null}]},"at":"2026-01-02T03:04:05Z"} `
	var v login
	if err := Decode([]byte(in), &v); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if v.Username != "élodie" || v.Password != "pé" || v.TTL != 60 || string(v.Data) != `{"x":[1,{"y":null}]}` || !v.At.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Fatalf("decoded %+v", v)
	}
	// The deepest accepted nesting: MaxDepth levels in all.
	deep := `{"data":` + strings.Repeat("[", MaxDepth-1) + strings.Repeat("]", MaxDepth-1) + `}`
	if err := Decode([]byte(deep), &v); err != nil {
		t.Fatalf("Decode at MaxDepth: %v", err)
	}
}

func TestDecodeOpenSkipsUnknownOnly(t *testing.T) {
	var v login
	if err := DecodeOpen([]byte(`{"username":"bob","USERNAME":"alice","extra":{"k":1}}`), &v); err != nil {
		t.Fatalf("DecodeOpen: %v", err)
	}
	if v.Username != "bob" {
		t.Fatalf("username %q: a case variant must not match", v.Username)
	}
	for _, in := range []string{
		`{"username":"bob","username":"alice"}`,
		`{"extra":{"k":1,"k":2}}`,
		"{\"extra\":\"\xff\"}",
		`{"extra":1} x`,
	} {
		if err := DecodeOpen([]byte(in), &v); err == nil {
			t.Errorf("DecodeOpen(%q) accepted", in)
		}
	}
}

func TestValidate(t *testing.T) {
	for in, ok := range map[string]bool{
		`{"a":{"b":[1,2,"x"]}}`:         true,
		`"just a string"`:               true,
		`{"a":1,"a":1}`:                 false,
		"{\"a\":\"\xe2\x82\"}":          false,
		`{"a":1}{"a":1}`:                false,
		strings.Repeat("[", MaxDepth+1): false,
	} {
		if err := Validate([]byte(in)); (err == nil) != ok {
			t.Errorf("Validate(%.40q) = %v, want ok=%v", in, err, ok)
		}
	}
}

func TestDepth(t *testing.T) {
	for in, want := range map[string]int{
		`1`:                       0,
		`{}`:                      1,
		`{"a":[]}`:                2,
		`{"a":"[[[{{{"}`:          1,
		`{"a\"[":["\\",{"b":1}]}`: 3,
		`[[],[[]],[]]`:            3,
	} {
		if got := Depth([]byte(in)); got != want {
			t.Errorf("Depth(%q) = %d, want %d", in, got, want)
		}
	}
}

// FuzzDecode checks that no input panics the decoder, that every refusal is an
// *Error with a bounded message, and that whatever Decode accepts the standard
// library reads to the same value.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"username":"a","password":"b","ttl":1,"data":{"x":[1]},"at":"2026-01-01T00:00:00Z"}`,
		`{"username":"a","USERNAME":"b"}`, `{"a":1,"a":2}`, "{\"username\":\"\xff\"}",
		`{"username":"\ud800"}`, `[[[[[[`, `{} {}`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v login
		err := Decode(b, &v)
		if err != nil {
			e, ok := errors.AsType[*Error](err)
			if !ok || len(e.Error()) > 200 {
				t.Fatalf("refusal %T %q", err, err)
			}
			return
		}
		var std login
		if err := json.Unmarshal(b, &std); err != nil {
			t.Fatalf("accepted %q that encoding/json refuses: %v", b, err)
		}
		if std.Username != v.Username || std.Password != v.Password || std.TTL != v.TTL || !std.At.Equal(v.At) {
			t.Fatalf("%q decodes to %+v here and %+v in encoding/json", b, v, std)
		}
	})
}
