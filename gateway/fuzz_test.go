package gateway

import (
	"encoding/json"
	"strings"
	"testing"
)

func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"ping","id":"1"}`,
		`{"type":"session.update","id":"u","data":{"data":{"a":1}}}`,
		`{"type":"auth.refresh","data":{"token":"a.b.c"}}`,
		`{"type":""}`, `{}`, `[]`, `null`, `{"type":1}`, `{"type":"x","data":null}`,
		`{"type":"x","id":"` + strings.Repeat("i", 200) + `"}`, "\xff\xfe", `{"type":"a","type":"b"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeFrame(b)
		if err != nil {
			if len(fr.ID) > maxFrameIDLen {
				t.Fatalf("error frame echoes a %d-byte id", len(fr.ID))
			}
			return
		}
		if fr.Type == "" || len(fr.ID) > maxFrameIDLen {
			t.Fatalf("accepted %+v", fr)
		}
		if len(fr.Data) > 0 && !json.Valid(fr.Data) {
			t.Fatalf("invalid data %q", fr.Data)
		}
		out, err := encodeFrame(fr.Type, fr.ID, fr.Data)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, err := decodeFrame(out)
		if err != nil || again.Type != fr.Type || again.ID != fr.ID {
			t.Fatalf("round trip %q -> %+v, %v", out, again, err)
		}
	})
}
