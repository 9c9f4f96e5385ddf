package sessionbridge_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/sessionbridge/sessionbridge"
)

func jsonEqual(t testing.TB, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("invalid JSON %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

// rfc7386Vectors are the examples of RFC 7386, Appendix A, whose target and
// patch are both objects (session data always is).
var rfc7386Vectors = []struct{ doc, patch, want string }{
	{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
	{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
	{`{"a":"b"}`, `{"a":null}`, `{}`},
	{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
	{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
	{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
	{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
	{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
	{`{"e":null}`, `{"a":1}`, `{"e":null,"a":1}`},
	{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
	// The RFC's section 3 example.
	{
		`{"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},"tags":["example","sample"],"content":"This will be unchanged"}`,
		`{"title":"Hello!","phoneNumber":"+01-123-456-7890","author":{"familyName":null},"tags":["example"]}`,
		`{"title":"Hello!","author":{"givenName":"John"},"tags":["example"],"content":"This will be unchanged","phoneNumber":"+01-123-456-7890"}`,
	},
}

func TestMergePatchRFC7386(t *testing.T) {
	for _, v := range rfc7386Vectors {
		got, err := sessionbridge.MergePatch(json.RawMessage(v.doc), json.RawMessage(v.patch))
		if err != nil {
			t.Errorf("MergePatch(%s, %s): %v", v.doc, v.patch, err)
			continue
		}
		if !jsonEqual(t, got, []byte(v.want)) {
			t.Errorf("MergePatch(%s, %s) = %s, want %s", v.doc, v.patch, got, v.want)
		}
	}
}

func TestMergePatchEmptyDocumentIsEmptyObject(t *testing.T) {
	for _, doc := range []string{"", "  \n"} {
		got, err := sessionbridge.MergePatch(json.RawMessage(doc), json.RawMessage(`{"a":1,"b":null}`))
		if err != nil || !jsonEqual(t, got, []byte(`{"a":1}`)) {
			t.Errorf("MergePatch(%q, ...) = %s, %v; want {\"a\":1}", doc, got, err)
		}
	}
}

func TestMergePatchKeepsNumbersExact(t *testing.T) {
	got, err := sessionbridge.MergePatch(json.RawMessage(`{"big":12345678901234567890123,"f":1.50}`), json.RawMessage(`{"x":9007199254740993}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, lit := range []string{"12345678901234567890123", "9007199254740993", "1.50"} {
		if !bytes.Contains(got, []byte(lit)) {
			t.Errorf("result %s lost the number %s", got, lit)
		}
	}
}

func TestMergePatchDoesNotChangeInputs(t *testing.T) {
	doc := json.RawMessage(`{"a":{"b":1}}`)
	patch := json.RawMessage(`{"a":{"b":null,"c":2}}`)
	docCopy, patchCopy := bytes.Clone(doc), bytes.Clone(patch)
	if _, err := sessionbridge.MergePatch(doc, patch); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(doc, docCopy) || !bytes.Equal(patch, patchCopy) {
		t.Fatal("MergePatch modified its inputs")
	}
}

func TestMergePatchRejects(t *testing.T) {
	// RFC 7386 lets a non-object patch replace the document whole; session data
	// must stay an object, so those are refused, as is anything that is not
	// exactly one JSON object.
	patches := []string{
		`["c"]`, `null`, `"bar"`, `1`, `true`, ``, `   `,
		`{`, `{"a":}`, `{"a":1`, `{"a":1}}`, `{"a":1}]`, `{"a":1} {"b":2}`, `{"a":1}x`, `{"a":1},`,
		`{'a':1}`, `{"a":1,}`, "{\"a\":\"\xff\"}x",
	}
	for _, p := range patches {
		if got, err := sessionbridge.MergePatch(json.RawMessage(`{"a":"b"}`), json.RawMessage(p)); !errors.Is(err, sessionbridge.ErrInvalidPatch) {
			t.Errorf("MergePatch with patch %q = %s, %v; want ErrInvalidPatch", p, got, err)
		}
		if sessionbridge.ValidObject(json.RawMessage(p)) {
			t.Errorf("ValidObject(%q) = true", p)
		}
	}
	for _, doc := range []string{`["a","b"]`, `null`, `"x"`, `{"a":1}]`, `{`} {
		if _, err := sessionbridge.MergePatch(json.RawMessage(doc), json.RawMessage(`{"a":"b"}`)); !errors.Is(err, sessionbridge.ErrInvalidPatch) {
			t.Errorf("MergePatch with document %q: %v; want ErrInvalidPatch", doc, err)
		}
	}
	for _, ok := range []string{`{}`, ` {"a":[1,{"b":null}]} `, "{\"a\":1}\n"} {
		if !sessionbridge.ValidObject(json.RawMessage(ok)) {
			t.Errorf("ValidObject(%q) = false", ok)
		}
	}
}

// A patch must decode one way only: a duplicate member name (whose value the
// decoder would pick, last or first?) or invalid UTF-8 (which decoders replace
// by U+FFFD, making distinct patches equal) would let what a proxy or audit
// saw differ from what is stored.
func TestMergePatchRefusesAmbiguousPatches(t *testing.T) {
	for _, c := range []struct{ patch, why string }{
		{`{"role":"user","role":"admin"}`, `duplicate member name at "/role"`},
		{`{"a":{"b":1,"c":2,"b":3}}`, `duplicate member name at "/a/b"`},
		{`{"role":"user","\u0072ole":"admin"}`, `duplicate member name at "/role"`},
		{"{\"name\":\"\xffroot\"}", "invalid UTF-8 at byte 9"},
		{"{\"\xfe\":1}", "invalid UTF-8 at byte 2"},
		{`{"name":"\udc00root"}`, "invalid UTF-8"},
		{strings.Repeat(`{"a":`, 129) + "1" + strings.Repeat("}", 129), "nested too deep"},
	} {
		_, err := sessionbridge.MergePatch(json.RawMessage(`{"role":"user"}`), json.RawMessage(c.patch))
		if !errors.Is(err, sessionbridge.ErrInvalidPatch) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("MergePatch with patch %.60q: %v; want ErrInvalidPatch saying %q", c.patch, err, c.why)
		}
		err = sessionbridge.CheckObject(json.RawMessage(c.patch))
		if !errors.Is(err, sessionbridge.ErrInvalidPatch) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("CheckObject(%.60q) = %v; want ErrInvalidPatch saying %q", c.patch, err, c.why)
		}
	}
}

// The stored document is the server's own data: read as it is, so that data
// stored before patches were checked strictly stays updatable.
func TestMergePatchReadsStoredDocumentAsItIs(t *testing.T) {
	got, err := sessionbridge.MergePatch(json.RawMessage("{\"a\":1,\"a\":2,\"s\":\"\xff\"}"), json.RawMessage(`{"b":3}`))
	if err != nil {
		t.Fatalf("MergePatch over a lax stored document: %v", err)
	}
	if !sessionbridge.ValidObject(got) {
		t.Fatalf("result %q does not pass CheckObject", got)
	}
}

func TestMergePatchDeepNestingFailsCleanly(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000)
	if _, err := sessionbridge.MergePatch(json.RawMessage(`{}`), json.RawMessage(deep)); !errors.Is(err, sessionbridge.ErrInvalidPatch) {
		t.Fatalf("MergePatch of a 20000-deep patch: %v, want ErrInvalidPatch", err)
	}
}

func FuzzMergePatch(f *testing.F) {
	for _, v := range rfc7386Vectors {
		f.Add(v.doc, v.patch)
	}
	f.Add(`{}`, `{}`)
	f.Add(``, `{"a":null}`)
	f.Add(`{"a":1}`, `{"a":1}]`)
	f.Add(`{"a":{"b":{"c":[1,2,{"d":null}]}}}`, `{"a":{"b":{"c":null,"e":{"f":null}}}}`)
	f.Add(`{"n":1e400}`, `{"m":-0.0}`)
	f.Add(`{"a":"\u00e9\ud83d\ude00"}`, `{"a":"\ud800"}`)
	f.Add(`[1,2]`, `{"a":"b","c":null}`)
	f.Fuzz(func(t *testing.T, doc, patch string) {
		got, err := sessionbridge.MergePatch(json.RawMessage(doc), json.RawMessage(patch))
		if err != nil {
			if !errors.Is(err, sessionbridge.ErrInvalidPatch) {
				t.Fatalf("MergePatch error %v does not wrap ErrInvalidPatch", err)
			}
			return
		}
		if !sessionbridge.ValidObject(got) {
			t.Fatalf("MergePatch(%q, %q) = %q, not a JSON object", doc, patch, got)
		}
		// A merge patch is idempotent.
		again, err := sessionbridge.MergePatch(got, json.RawMessage(patch))
		if err != nil {
			t.Fatalf("re-applying %q to %q: %v", patch, got, err)
		}
		if !bytes.Equal(again, got) {
			t.Fatalf("merge patch not idempotent: %q then %q", got, again)
		}
		// Top-level members: null removes, anything but an object replaces.
		var p map[string]json.RawMessage
		var r map[string]json.RawMessage
		if json.Unmarshal([]byte(patch), &p) != nil || json.Unmarshal(got, &r) != nil {
			return
		}
		for k, v := range p {
			switch {
			case string(v) == "null":
				if _, ok := r[k]; ok {
					t.Fatalf("key %q set to null in the patch survives in %q", k, got)
				}
			case len(v) > 0 && v[0] != '{':
				if _, ok := r[k]; !ok {
					t.Fatalf("key %q of the patch missing from %q", k, got)
				}
			}
		}
	})
}
