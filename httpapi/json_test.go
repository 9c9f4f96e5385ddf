package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestDecodeStrict(t *testing.T) {
	for _, c := range []struct {
		in string
		ok bool
	}{
		{`{"user_id":"a","ttl_seconds":5}`, true},
		{` {"user_id":"a"} `, true},
		{`{}`, true},
		{``, false},
		{`null x`, false},
		{`{"user_id":"a"}}`, false},
		{`{"user_id":"a"} {"user_id":"b"}`, false},
		{`{"user_id":"a","nope":true}`, false},
		{`{"ttl_seconds":"5"}`, false},
		{`{"ttl_seconds":1e400}`, false},
		{`[]`, false},
		// One reading only: no case folding, no duplicate, no U+FFFD.
		{`{"USER_ID":"a"}`, false},
		{`{"user_id":"a","User_Id":"b"}`, false},
		{`{"user_id":"a","user_id":"b"}`, false},
		{`{"user_id":"a","data":{"k":1,"k":2}}`, false},
		{"{\"user_id\":\"\xff\"}", false},
		{`{"user_id":"\udcff"}`, false},
		{`{"user_id":"a","data":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`, false},
	} {
		var v createRequest
		e := decodeStrict([]byte(c.in), &v)
		if (e == nil) != c.ok {
			t.Errorf("decodeStrict(%q) = %v, want ok=%v", c.in, e, c.ok)
		}
		if e != nil && (e.Status != http.StatusBadRequest || e.Code != CodeBadRequest || e.Message == "") {
			t.Errorf("decodeStrict(%q): error %+v", c.in, e)
		}
	}
}

// FuzzDecodeStrict checks that no input makes the decoder panic, that every
// refusal is a 400 with a bounded message, and that whatever it accepts is one
// JSON object that re-encodes and decodes to the same value.
func FuzzDecodeStrict(f *testing.F) {
	for _, s := range []string{
		`{"user_id":"a","data":{"x":[1,2,{"y":null}]},"ttl_seconds":60}`,
		`{"user_id":"a","device":{"user_agent":"ua","ip":"::1"}}`,
		`{"username":"alice","password":"pw"}`,
		`{"session_id":"s","data":"hi"}`,
		`{"user_id":"a"} {}`,
		`{"user_id":"\u0000\ud800"}`,
		`{"user_id":"a","USER_ID":"b"}`,
		`{"username":"a","username":"b"}`,
		"{\"user_id\":\"\xffroot\"}",
		`{"ttl_seconds":-9223372036854775809}`,
		`[[[[[[[[[[[[[[[[[[[[`,
		`{"a":`,
		"\xef\xbb\xbf{}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, target := range []func() any{
			func() any { return &createRequest{} },
			func() any { return &loginRequest{} },
			func() any { return &publishRequest{} },
		} {
			v := target()
			e := decodeStrict(b, v)
			if e != nil {
				if e.Status != http.StatusBadRequest || e.Code != CodeBadRequest || len(e.Message) > 200 {
					t.Fatalf("refusal %+v", e)
				}
				continue
			}
			out, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("accepted value does not re-encode: %v", err)
			}
			w := target()
			if e := decodeStrict(out, w); e != nil {
				t.Fatalf("re-encoded %s refused: %v", out, e)
			}
		}
	})
}
